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
