variable "description" {
  description = "What the key encrypts."
  type        = string
}

variable "alias" {
  description = "Alias name without the alias/ prefix; null for none."
  type        = string
  default     = null
}

variable "service_principals" {
  description = "AWS service principals (e.g. logs.us-east-1.amazonaws.com) allowed to use the key for encryption."
  type        = list(string)
  default     = []
}

variable "deletion_window_days" {
  description = "Waiting period before the key is deleted."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags for the key."
  type        = map(string)
  default     = {}
}
