output "repository_url" {
  description = "Push images here: REPOSITORY_URL:TAG."
  value       = aws_ecr_repository.images.repository_url
}

output "repository_arn" {
  description = "ARN of the repository."
  value       = aws_ecr_repository.images.arn
}
