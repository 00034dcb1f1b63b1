# The GPU path: the GPU image on Cloud Run with an NVIDIA L4, pulling models from an S3-compatible
# bucket with credentials kept in Secret Manager.
#   terraform init && terraform apply -var project_id=my-project -var image=REGION-docker.pkg.dev/...

terraform {
  required_version = ">= 1.6"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.10, < 8.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

variable "project_id" {
  description = "Google Cloud project."
  type        = string
}

variable "region" {
  description = "Region with Cloud Run GPUs."
  type        = string
  default     = "us-central1"
}

variable "image" {
  description = "The GPU image."
  type        = string
}

variable "s3_endpoint_url" {
  description = "Endpoint of an S3-compatible store; empty for AWS S3."
  type        = string
  default     = ""
}

variable "invoker_members" {
  description = "Who may call the service."
  type        = list(string)
  default     = []
}

variable "warm_models" {
  description = "The warm set: manifest model names and their sizes in bytes (the manifest's `size`), e.g. { \"qwen3-8b\" = 5027783488 }. The startup probe's budget is computed from their total."
  type        = map(number)
  default     = {}
}

module "gpu" {
  source               = "../../modules/gpu_service"
  project_id           = var.project_id
  region               = var.region
  image                = var.image
  s3_access_key_secret = "gguf-s3-access-key-id"
  s3_secret_key_secret = "gguf-s3-secret-access-key"
  s3_endpoint_url      = var.s3_endpoint_url
  invoker_members      = var.invoker_members
  warm_model_bytes     = sum(concat([0], values(var.warm_models)))
  environment = {
    WARM_MODELS = join(",", keys(var.warm_models))
  }
}

output "service_url" {
  description = "The service URL."
  value       = module.gpu.service_url
}

output "curl_command" {
  description = "List the models."
  value       = module.gpu.curl_command
}

output "startup_budget_seconds" {
  description = "How long a new instance may take to sync and load the warm set before Cloud Run gives up on it."
  value       = module.gpu.startup_budget_seconds
}
