output "function_name" {
  description = "Name of the function."
  value       = aws_lambda_function.server.function_name
}

output "function_url" {
  description = "The function URL (OpenAI base URL: <function_url>v1)."
  value       = aws_lambda_function_url.server.function_url
}

output "role_arn" {
  description = "The function's execution role."
  value       = aws_iam_role.function.arn
}

output "curl_command" {
  description = "A ready request against the function URL."
  value = (var.url_authorization == "AWS_IAM"
    ? "awscurl --service lambda --region ${data.aws_region.current.name} ${aws_lambda_function_url.server.function_url}v1/models"
  : "curl -H \"Authorization: Bearer $API_KEY\" ${aws_lambda_function_url.server.function_url}v1/models")
}
