variable "function_name" {
  description = "Name of the Lambda function."
  type        = string
  default     = "serverless-gguf"
}

variable "image_uri" {
  description = "The CPU image (built with --build-arg VARIANT=cpu), e.g. REPOSITORY_URL:TAG."
  type        = string
}

variable "model_bucket_arn" {
  description = "ARN of the model bucket."
  type        = string
}

variable "models_prefix" {
  description = "Key prefix the function may read (and nothing else)."
  type        = string
  default     = "models/"
}

variable "kv_cache_prefix" {
  description = "Key prefix (e.g. \"kv-cache/\") where instances share saved prompt prefixes (KV_CACHE_S3); empty: off. The function may read and write only there."
  type        = string
  default     = ""
  validation {
    condition     = var.kv_cache_prefix == "" || (endswith(var.kv_cache_prefix, "/") && !startswith(var.kv_cache_prefix, "/"))
    error_message = "kv_cache_prefix is empty or a key prefix ending in '/', like \"kv-cache/\"."
  }
}

variable "kv_cache_key" {
  description = "Secret (at least 32 characters) every instance signs and checks the shared prompt prefixes with (KV_CACHE_KEY); required with kv_cache_prefix. A file without its signature is never loaded."
  type        = string
  default     = ""
  sensitive   = true
  validation {
    condition     = var.kv_cache_key == "" || length(var.kv_cache_key) >= 32
    error_message = "kv_cache_key must be at least 32 characters long."
  }
}

variable "model_kms_key_arn" {
  description = "KMS key that encrypts the models (the function gets kms:Decrypt on it)."
  type        = string
}

variable "memory_mb" {
  description = "Memory (MB); CPU scales with it. A model needs its file size plus context."
  type        = number
  default     = 4096
}

variable "timeout_s" {
  description = "Longest request (seconds), cold start included."
  type        = number
  default     = 300
}

variable "ephemeral_storage_mb" {
  description = "Size of /tmp, where models are synced (MODEL_DIR): the sum of the model files served, plus headroom."
  type        = number
  default     = 4096
  validation {
    condition     = var.ephemeral_storage_mb >= 512 && var.ephemeral_storage_mb <= 10240
    error_message = "Lambda ephemeral storage is 512 to 10240 MB."
  }
}

variable "reserved_concurrency" {
  description = "Concurrent executions reserved (and capped) for the function."
  type        = number
  default     = 5
}

variable "log_retention_days" {
  description = "Days the function's logs are kept."
  type        = number
  default     = 365
}

variable "url_authorization" {
  description = "AWS_IAM (callers sign with SigV4) or NONE (public; then set API_KEY in environment)."
  type        = string
  default     = "AWS_IAM"
  validation {
    condition     = contains(["AWS_IAM", "NONE"], var.url_authorization)
    error_message = "url_authorization must be AWS_IAM or NONE."
  }
}

variable "environment" {
  description = "Extra environment for the server (MODELS_MANIFEST, WARM_MODELS, API_KEY, N_CTX, …)."
  type        = map(string)
  default     = {}
  sensitive   = true
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
