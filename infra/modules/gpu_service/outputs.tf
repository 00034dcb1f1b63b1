output "service_url" {
  description = "The service URL (OpenAI base URL: <service_url>/v1)."
  value       = google_cloud_run_v2_service.server.uri
}

output "service_account" {
  description = "The runtime service account."
  value       = google_service_account.service.email
}

output "curl_command" {
  description = "A ready request, authenticated with your gcloud identity."
  value       = "curl -H \"Authorization: Bearer $(gcloud auth print-identity-token)\" ${google_cloud_run_v2_service.server.uri}/v1/models"
}

output "startup_budget_seconds" {
  description = "How long the startup probe waits for /health/ready, from the warm set's size and the assumed throughputs."
  value       = local.startup_failure_threshold * local.startup_period_seconds
}
