variable "name" {
  description = "Repository name."
  type        = string
  default     = "serverless-gguf"
}

variable "keep_tagged_images" {
  description = "How many tagged images to keep; older ones expire."
  type        = number
  default     = 20
}

variable "untagged_expiry_days" {
  description = "Days after which untagged images expire."
  type        = number
  default     = 7
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
