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
