# The whole AWS path: a model bucket, an image repository and the function behind a streaming URL.
#   terraform init && terraform apply -var bucket_name=my-gguf-models -var image_tag=v1
# Build and push the CPU image to the repository first (see the repository README, "Deploy").

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "bucket_name" {
  description = "Name for the model bucket."
  type        = string
}

variable "image_tag" {
  description = "Tag of the CPU image pushed to the repository."
  type        = string
}

variable "warm_models" {
  description = "Models to sync and load when an execution environment starts."
  type        = string
  default     = ""
}

variable "kv_cache_prefix" {
  description = "Share saved prompt prefixes between instances under this key prefix (e.g. \"kv-cache/\"); empty: off."
  type        = string
  default     = ""
}

variable "kv_cache_key" {
  description = "With kv_cache_prefix: the secret (at least 32 characters) the instances sign the shared prefixes with."
  type        = string
  default     = ""
  sensitive   = true
}

module "models" {
  source          = "../../modules/model_bucket"
  bucket_name     = var.bucket_name
  kv_cache_prefix = var.kv_cache_prefix
}

module "images" {
  source = "../../modules/image_repository"
}

module "function" {
  source            = "../../modules/lambda_function"
  image_uri         = "${module.images.repository_url}:${var.image_tag}"
  model_bucket_arn  = module.models.bucket_arn
  models_prefix     = module.models.models_prefix
  model_kms_key_arn = module.models.kms_key_arn
  kv_cache_prefix   = var.kv_cache_prefix
  kv_cache_key      = var.kv_cache_key
  environment = {
    MODELS_MANIFEST = "/srv/models_manifest/default.toml"
    WARM_MODELS     = var.warm_models
  }
}

output "repository_url" {
  description = "Push the CPU image here."
  value       = module.images.repository_url
}

output "model_bucket" {
  description = "Upload GGUF files under s3://<bucket>/models/."
  value       = module.models.bucket_name
}

output "function_url" {
  description = "The function URL."
  value       = module.function.function_url
}

output "curl_command" {
  description = "List the models (SigV4-signed)."
  value       = module.function.curl_command
}
