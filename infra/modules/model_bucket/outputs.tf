output "bucket_name" {
  description = "Name of the model bucket."
  value       = aws_s3_bucket.models.id
}

output "bucket_arn" {
  description = "ARN of the model bucket."
  value       = aws_s3_bucket.models.arn
}

output "models_prefix" {
  description = "Key prefix of the models."
  value       = var.models_prefix
}

output "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the models (readers need kms:Decrypt on it)."
  value       = module.key.arn
}
