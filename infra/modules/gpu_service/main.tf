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
        period_seconds        = 5
        timeout_seconds       = 3
        failure_threshold     = 120 # up to ten minutes for a first model download and load
      }
      liveness_probe {
        http_get {
          path = "/health"
        }
        period_seconds = 30
      }
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
