variable "project_id" {
  description = "Google Cloud project."
  type        = string
}

variable "region" {
  description = "Region with Cloud Run GPUs (e.g. us-central1, europe-west4)."
  type        = string
  default     = "us-central1"
}

variable "service_name" {
  description = "Cloud Run service name."
  type        = string
  default     = "serverless-gguf"
}

variable "image" {
  description = "The GPU image (default build), in a registry Cloud Run can pull from."
  type        = string
}

variable "gpu_type" {
  description = "Accelerator: nvidia-l4 (24 GB)."
  type        = string
  default     = "nvidia-l4"
}

variable "cpu" {
  description = "vCPUs (GPU services need at least 4)."
  type        = string
  default     = "4"
}

variable "memory" {
  description = "Memory (GPU services need at least 16Gi)."
  type        = string
  default     = "16Gi"
}

variable "model_volume_size" {
  description = "Size of the in-memory volume that is MODEL_DIR (counts against memory)."
  type        = string
  default     = "8Gi"
}

variable "max_instances" {
  description = "Most instances at once."
  type        = number
  default     = 1
}

variable "s3_access_key_secret" {
  description = "Secret Manager secret id holding the S3 access key id."
  type        = string
}

variable "s3_secret_key_secret" {
  description = "Secret Manager secret id holding the S3 secret access key."
  type        = string
}

variable "s3_endpoint_url" {
  description = "AWS_ENDPOINT_URL_S3 for an S3-compatible store (R2, MinIO, GCS interop); empty for AWS S3."
  type        = string
  default     = ""
}

variable "s3_region" {
  description = "AWS_DEFAULT_REGION for the model bucket."
  type        = string
  default     = "us-east-1"
}

variable "invoker_members" {
  description = "Principals allowed to invoke (e.g. serviceAccount:x@p.iam.gserviceaccount.com). No public access by default."
  type        = list(string)
  default     = []
  validation {
    condition     = !contains(var.invoker_members, "allUsers") && !contains(var.invoker_members, "allAuthenticatedUsers")
    error_message = "Public invokers are refused here; use an API key behind your own gateway instead."
  }
}

variable "environment" {
  description = "Extra server settings (MODELS_MANIFEST, WARM_MODELS, N_CTX, …)."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels for every resource."
  type        = map(string)
  default     = {}
}

variable "warm_model_bytes" {
  description = "Total size in bytes of the warm set's GGUF files (the manifest's `size` of each warm model): sizes the startup probe."
  type        = number
  default     = 0
  validation {
    condition     = var.warm_model_bytes >= 0
    error_message = "warm_model_bytes is a size in bytes."
  }
}

variable "sync_bytes_per_second" {
  description = "Assumed download throughput from the bucket to the in-memory model volume (measure yours: `just bench-sync`)."
  type        = number
  default     = 100000000
  validation {
    condition     = var.sync_bytes_per_second > 0
    error_message = "sync_bytes_per_second must be positive."
  }
}

variable "load_bytes_per_second" {
  description = "Assumed model load throughput from the volume into GPU memory."
  type        = number
  default     = 1000000000
  validation {
    condition     = var.load_bytes_per_second > 0
    error_message = "load_bytes_per_second must be positive."
  }
}

variable "startup_overhead_seconds" {
  description = "Container start, CUDA initialisation and imports before the warm set starts syncing."
  type        = number
  default     = 30
}

variable "startup_probe_ceiling_seconds" {
  description = "The longest a Cloud Run startup probe may run (failure threshold x period): 1800 s with a GPU."
  type        = number
  default     = 1800
}
