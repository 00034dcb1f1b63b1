# The model store: an S3 bucket holding GGUF files, encrypted with its own KMS key, versioned,
# closed to the public, reachable over TLS only, with old versions expiring.

module "key" {
  source               = "../kms_key"
  description          = "Encrypts the GGUF models in ${var.bucket_name}"
  alias                = var.bucket_name
  deletion_window_days = var.kms_deletion_window_days
  tags                 = var.tags
}

resource "aws_s3_bucket" "models" {
  #checkov:skip=CKV_AWS_144:Models are re-creatable artifacts; cross-region replication is the deployer's choice.
  #checkov:skip=CKV2_AWS_62:No consumer needs event notifications; the function pulls lazily.
  #checkov:skip=CKV_AWS_18:Access logging is enabled by aws_s3_bucket_logging when var.access_log_bucket is set.
  bucket = var.bucket_name
  tags   = var.tags
}

resource "aws_s3_bucket_ownership_controls" "models" {
  bucket = aws_s3_bucket.models.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "models" {
  bucket                  = aws_s3_bucket.models.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "models" {
  bucket = aws_s3_bucket.models.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "models" {
  bucket = aws_s3_bucket.models.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = module.key.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "models" {
  bucket = aws_s3_bucket.models.id
  rule {
    id     = "expire-replaced-models"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
  # Saved prompt prefixes are a cache: they expire (current and replaced versions alike) instead of
  # growing without bound.
  dynamic "rule" {
    for_each = var.kv_cache_prefix == "" ? [] : [var.kv_cache_prefix]
    content {
      id     = "expire-shared-prompt-prefixes"
      status = "Enabled"
      filter {
        prefix = rule.value
      }
      expiration {
        days = var.kv_cache_days
      }
      noncurrent_version_expiration {
        noncurrent_days = 1
      }
    }
  }
  depends_on = [aws_s3_bucket_versioning.models]
}

resource "aws_s3_bucket_logging" "models" {
  count         = var.access_log_bucket == null ? 0 : 1
  bucket        = aws_s3_bucket.models.id
  target_bucket = var.access_log_bucket
  target_prefix = "s3-access/${var.bucket_name}/"
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.models.arn, "${aws_s3_bucket.models.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"] # a Deny for everyone: nothing is granted here
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "models" {
  bucket     = aws_s3_bucket.models.id
  policy     = data.aws_iam_policy_document.tls_only.json
  depends_on = [aws_s3_bucket_public_access_block.models]
}
