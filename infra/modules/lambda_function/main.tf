# The function: the CPU image on AWS Lambda behind a streaming function URL. The image carries the
# Lambda Web Adapter, which waits for /health/ready and streams responses. Models sync from the
# bucket into /tmp (ephemeral storage) on first use; a warm execution environment keeps them.

locals {
  bucket_name = element(split(":::", var.model_bucket_arn), 1)
}

data "aws_region" "current" {}

module "key" {
  source             = "../kms_key"
  description        = "Encrypts the environment and logs of ${var.function_name}"
  service_principals = ["logs.${data.aws_region.current.name}.amazonaws.com"]
  tags               = var.tags
}

resource "aws_cloudwatch_log_group" "function" {
  name              = "/aws/lambda/${var.function_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = module.key.arn
  tags              = var.tags
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  name               = "${var.function_name}-role"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

# Least privilege: read the models under the prefix, decrypt them, write this function's logs.
data "aws_iam_policy_document" "function" {
  statement {
    sid       = "ReadModels"
    actions   = ["s3:GetObject"]
    resources = ["${var.model_bucket_arn}/${var.models_prefix}*"]
  }
  statement {
    sid       = "ListModels"
    actions   = ["s3:ListBucket"]
    resources = [var.model_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.models_prefix}*"]
    }
  }
  statement {
    sid       = "DecryptModels"
    actions   = ["kms:Decrypt"]
    resources = [var.model_kms_key_arn]
  }
  # Only with kv_cache_prefix: read and write the shared prompt prefixes there, list that prefix, and
  # encrypt what it uploads with the bucket's key.
  dynamic "statement" {
    for_each = var.kv_cache_prefix == "" ? [] : [var.kv_cache_prefix]
    content {
      sid       = "SharePromptPrefixes"
      actions   = ["s3:GetObject", "s3:PutObject"]
      resources = ["${var.model_bucket_arn}/${statement.value}*"]
    }
  }
  dynamic "statement" {
    for_each = var.kv_cache_prefix == "" ? [] : [var.kv_cache_prefix]
    content {
      sid       = "ListPromptPrefixes"
      actions   = ["s3:ListBucket"]
      resources = [var.model_bucket_arn]
      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${statement.value}*"]
      }
    }
  }
  dynamic "statement" {
    for_each = var.kv_cache_prefix == "" ? [] : [var.kv_cache_prefix]
    content {
      sid       = "EncryptPromptPrefixes"
      actions   = ["kms:GenerateDataKey"]
      resources = [var.model_kms_key_arn]
    }
  }
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function.arn}:*"]
  }
}

resource "aws_iam_role_policy" "function" {
  name   = "${var.function_name}-least-privilege"
  role   = aws_iam_role.function.id
  policy = data.aws_iam_policy_document.function.json
}

resource "aws_lambda_function" "server" {
  #checkov:skip=CKV_AWS_116:Invoked synchronously through its URL; a dead-letter queue only serves async invocations.
  #checkov:skip=CKV_AWS_117:It reads S3 over TLS with IAM; a VPC would add NAT or endpoint costs without protecting more.
  #checkov:skip=CKV_AWS_272:Code signing applies to zip packages; this is a container image from an immutable, scanned ECR repository.
  function_name                  = var.function_name
  role                           = aws_iam_role.function.arn
  package_type                   = "Image"
  image_uri                      = var.image_uri
  architectures                  = ["x86_64"]
  memory_size                    = var.memory_mb
  timeout                        = var.timeout_s
  reserved_concurrent_executions = var.reserved_concurrency
  kms_key_arn                    = module.key.arn
  ephemeral_storage {
    size = var.ephemeral_storage_mb
  }
  tracing_config {
    mode = "Active"
  }
  environment {
    variables = merge({
      MODEL_DIR                    = "/tmp/models"
      PORT                         = "8000"
      AWS_LWA_PORT                 = "8000"
      AWS_LWA_READINESS_CHECK_PATH = "/health/ready"
      AWS_LWA_INVOKE_MODE          = "response_stream"
      AWS_LWA_ENABLE_COMPRESSION   = "false" # a compressor holds small SSE events back until its buffer fills
      DISK_HEADROOM_MB             = "64"
      }, var.kv_cache_prefix == "" ? {} : {
      KV_CACHE_S3  = "s3://${element(split(":::", var.model_bucket_arn), 1)}/${var.kv_cache_prefix}"
      KV_CACHE_KEY = var.kv_cache_key
    }, var.environment)
  }
  lifecycle {
    precondition {
      condition     = var.kv_cache_prefix == "" || length(var.kv_cache_key) >= 32
      error_message = "kv_cache_prefix needs kv_cache_key: the secret every instance signs and checks the shared prompt prefixes with."
    }
  }
  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function.name
  }
  tags       = var.tags
  depends_on = [aws_iam_role_policy.function]
}

resource "aws_lambda_function_url" "server" {
  function_name      = aws_lambda_function.server.function_name
  authorization_type = var.url_authorization
  invoke_mode        = "RESPONSE_STREAM"
}
