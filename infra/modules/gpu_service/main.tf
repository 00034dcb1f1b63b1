# The GPU image as a Cloud Run service with an NVIDIA L4: scales to zero, starts an instance on the
# first request, and only sends it traffic once /health/ready says the warm models are loaded.
# Models come from S3 (or any S3-compatible store) with credentials from Secret Manager.

resource "google_service_account" "service" {
  project      = var.project_id
  account_id   = substr(var.service_name, 0, 30)
  display_name = "${var.service_name} runtime"
}

resource "google_secret_manager_secret_iam_member" "s3_credentials" {
  for_each  = toset([var.s3_access_key_secret, var.s3_secret_key_secret])
  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.service.email}"
}

locals {
  # The startup probe's budget covers the warm set's sync and load: overhead (container start, CUDA
  # init, imports) + download at the assumed bucket throughput + load at the assumed load throughput,
  # with 50% headroom, checked every `startup_period_seconds`.
  startup_period_seconds    = 5
  startup_transfer_seconds  = var.warm_model_bytes / var.sync_bytes_per_second + var.warm_model_bytes / var.load_bytes_per_second
  startup_unpadded_seconds  = var.startup_overhead_seconds + local.startup_transfer_seconds
  startup_budget_seconds    = ceil(local.startup_unpadded_seconds * 1.5)
  startup_failure_threshold = max(1, ceil(local.startup_budget_seconds / local.startup_period_seconds))

  environment = merge({
    MODEL_DIR          = "/models"
    AWS_DEFAULT_REGION = var.s3_region
    N_GPU_LAYERS       = "-1"
    }, var.s3_endpoint_url == "" ? {} : { AWS_ENDPOINT_URL_S3 = var.s3_endpoint_url },
  var.environment)
}

resource "google_cloud_run_v2_service" "server" {
  project             = var.project_id
  name                = var.service_name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = false
  labels              = var.labels

  template {
    service_account                  = google_service_account.service.email
    gpu_zonal_redundancy_disabled    = true
    max_instance_request_concurrency = 8
    timeout                          = "600s"
    scaling {
      min_instance_count = 0
      max_instance_count = var.max_instances
    }
    node_selector {
      accelerator = var.gpu_type
    }
    volumes {
      name = "models"
      empty_dir {
        medium     = "MEMORY"
        size_limit = var.model_volume_size
      }
    }
    containers {
      image = var.image
      ports {
        container_port = 8000
      }
      resources {
        limits = {
          cpu              = var.cpu
          memory           = var.memory
          "nvidia.com/gpu" = "1"
        }
        startup_cpu_boost = true
      }
      volume_mounts {
        name       = "models"
        mount_path = "/models"
      }
      dynamic "env" {
        for_each = local.environment
        content {
          name  = env.key
          value = env.value
        }
      }
      env {
        name = "AWS_ACCESS_KEY_ID"
        value_source {
          secret_key_ref {
            secret  = var.s3_access_key_secret
            version = "latest"
          }
        }
      }
      env {
        name = "AWS_SECRET_ACCESS_KEY"
        value_source {
          secret_key_ref {
            secret  = var.s3_secret_key_secret
            version = "latest"
          }
        }
      }
      startup_probe {
        http_get {
          path = "/health/ready"
        }
        initial_delay_seconds = 2
        period_seconds        = local.startup_period_seconds
        timeout_seconds       = 3
        failure_threshold     = local.startup_failure_threshold # the warm set's sync and load, see locals
      }
      liveness_probe {
        http_get {
          path = "/health"
        }
        period_seconds = 30
      }
    }
  }

  lifecycle {
    precondition {
      condition     = local.startup_failure_threshold * local.startup_period_seconds <= var.startup_probe_ceiling_seconds
      error_message = "The warm set needs about ${local.startup_budget_seconds} s to sync and load, more than a startup probe may wait (${var.startup_probe_ceiling_seconds} s): warm fewer or smaller models, or raise the assumed throughputs if measured."
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.s3_credentials]
}

resource "google_cloud_run_v2_service_iam_member" "invokers" {
  for_each = toset(var.invoker_members)
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.server.name
  role     = "roles/run.invoker"
  member   = each.value
}
