variable "bucket_name" {
  description = "Globally unique name of the bucket that holds the GGUF models."
  type        = string
}

variable "models_prefix" {
  description = "Key prefix under which models live (the function may read only below it)."
  type        = string
  default     = "models/"
  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]+/$", var.models_prefix))
    error_message = "models_prefix must end with a slash, like \"models/\"."
  }
}

variable "kv_cache_prefix" {
  description = "Key prefix where instances share saved prompt prefixes (the function's kv_cache_prefix); empty: none. Objects there expire after kv_cache_days."
  type        = string
  default     = ""
  validation {
    condition     = var.kv_cache_prefix == "" || can(regex("^[A-Za-z0-9._/-]+/$", var.kv_cache_prefix))
    error_message = "kv_cache_prefix is empty or a key prefix ending in '/', like \"kv-cache/\"."
  }
}

variable "kv_cache_days" {
  description = "Days a shared prompt prefix is kept: it is a cache, rebuilt by the next request that reads its prompt."
  type        = number
  default     = 7
}

variable "noncurrent_version_days" {
  description = "Days a replaced or deleted model version is kept before it expires."
  type        = number
  default     = 30
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the bucket's KMS key is deleted."
  type        = number
  default     = 30
}

variable "access_log_bucket" {
  description = "Bucket that receives S3 server access logs; null disables access logging."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
