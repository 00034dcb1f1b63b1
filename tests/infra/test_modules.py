"""The security properties the deployment promises, read from the Terraform itself."""

from __future__ import annotations

import pytest

from tests.infra.conftest import INFRA, Module, blocks, parse, value

LAMBDA_ACTIONS = {"s3:GetObject", "s3:ListBucket", "kms:Decrypt", "logs:CreateLogStream", "logs:PutLogEvents"}


def test_every_module_has_variables_outputs_and_a_readme(modules):
    assert set(modules) == {"model_bucket", "image_repository", "lambda_function", "gpu_service", "kms_key"}
    for name, module in modules.items():
        assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= set(module.files), name
        assert (INFRA / "modules" / name / "README.md").is_file()
        assert module.outputs()


def test_model_bucket_is_encrypted_versioned_private_and_tls_only(modules):
    bucket = modules["model_bucket"]
    rule = blocks(bucket.resource("aws_s3_bucket_server_side_encryption_configuration", "models"), "rule")[0]
    default = blocks(rule, "apply_server_side_encryption_by_default")[0]
    assert value(default, "sse_algorithm") == "aws:kms"
    assert value(default, "kms_master_key_id") == "${module.key.arn}"
    versioning = blocks(bucket.resource("aws_s3_bucket_versioning", "models"), "versioning_configuration")[0]
    assert value(versioning, "status") == "Enabled"
    block = bucket.resource("aws_s3_bucket_public_access_block", "models")
    for setting in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert value(block, setting) is True, setting
    (deny,) = blocks(bucket.data("aws_iam_policy_document", "tls_only"), "statement")
    condition = blocks(deny, "condition")[0]
    assert value(deny, "effect") == "Deny"
    assert (value(condition, "variable"), value(condition, "values")) == ("aws:SecureTransport", ["false"])
    lifecycle = blocks(bucket.resource("aws_s3_bucket_lifecycle_configuration", "models"), "rule")[0]
    assert blocks(lifecycle, "noncurrent_version_expiration")


def test_keys_rotate_and_every_encrypting_module_uses_one(modules):
    assert value(modules["kms_key"].resource("aws_kms_key", "this"), "enable_key_rotation") is True
    for name in ("model_bucket", "image_repository", "lambda_function"):
        assert "../kms_key" in str(modules[name].files["main.tf"].get("module")), name


def test_image_repository_is_immutable_scanned_and_pruned(modules):
    repository = modules["image_repository"].resource("aws_ecr_repository", "images")
    assert value(repository, "image_tag_mutability") == "IMMUTABLE"
    assert value(blocks(repository, "image_scanning_configuration")[0], "scan_on_push") is True
    assert value(blocks(repository, "encryption_configuration")[0], "encryption_type") == "KMS"
    assert modules["image_repository"].resource("aws_ecr_lifecycle_policy", "images")


def test_lambda_is_an_image_behind_a_signed_streaming_url(modules):
    function = modules["lambda_function"]
    server = function.resource("aws_lambda_function", "server")
    assert value(server, "package_type") == "Image"
    assert "var.ephemeral_storage_mb" in value(blocks(server, "ephemeral_storage")[0], "size")
    assert value(server, "reserved_concurrent_executions")
    environment = value(blocks(server, "environment")[0], "variables")
    assert '"/tmp/models"' in environment or "/tmp/models" in str(environment)
    url = function.resource("aws_lambda_function_url", "server")
    assert value(url, "invoke_mode") == "RESPONSE_STREAM"
    assert value(url, "authorization_type") == "${var.url_authorization}"
    assert value(function.variable("url_authorization"), "default") == "AWS_IAM"
    log_group = function.resource("aws_cloudwatch_log_group", "function")
    assert value(log_group, "retention_in_days") and value(log_group, "kms_key_id")


def test_lambda_role_is_least_privilege(modules):
    statements = blocks(modules["lambda_function"].data("aws_iam_policy_document", "function"), "statement")
    actions = {action for statement in statements for action in value(statement, "actions")}
    assert actions == LAMBDA_ACTIONS
    for statement in statements:
        for resource in value(statement, "resources"):
            assert resource != "*"
            if "s3:GetObject" in value(statement, "actions"):
                assert resource.endswith("/${var.models_prefix}*")
    (listing,) = [s for s in statements if value(s, "actions") == ["s3:ListBucket"]]
    assert value(blocks(listing, "condition")[0], "variable") == "s3:prefix"


def _allow_principals(module: Module):
    for document in module.policy_documents():
        for statement in blocks(document, "statement"):
            if value(statement, "effect", "Allow") == "Allow":
                for principal in blocks(statement, "principals"):
                    yield value(principal, "type"), value(principal, "identifiers")


@pytest.mark.parametrize("name", ["model_bucket", "image_repository", "lambda_function", "kms_key"])
def test_no_wildcard_principal_is_ever_allowed(modules, name):
    for kind, identifiers in _allow_principals(modules[name]):
        assert kind != "*" and "*" not in identifiers


def test_gpu_service_scales_to_zero_on_an_l4_and_probes_readiness(modules):
    gpu = modules["gpu_service"]
    template = blocks(gpu.resource("google_cloud_run_v2_service", "server"), "template")[0]
    assert value(blocks(template, "scaling")[0], "min_instance_count") == 0
    assert value(blocks(template, "node_selector")[0], "accelerator") == "${var.gpu_type}"
    assert value(gpu.variable("gpu_type"), "default") == "nvidia-l4"
    container = blocks(template, "containers")[0]
    limits = value(blocks(container, "resources")[0], "limits")
    assert limits["nvidia.com/gpu"] == "1"
    startup = blocks(blocks(container, "startup_probe")[0], "http_get")[0]
    assert value(startup, "path") == "/health/ready"
    secrets = [value(env, "name") for env in blocks(container, "env") if blocks(env, "value_source")]
    assert secrets == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert "AWS_ENDPOINT_URL_S3" in str(gpu.files["main.tf"])
    assert value(gpu.variable("invoker_members"), "default") == []


def test_examples_wire_the_modules_and_print_a_curl_command():
    for example in ("aws_lambda", "cloud_run_gpu"):
        parsed = parse(INFRA / "examples" / example / "main.tf")
        assert parsed["module"] and any("curl_command" in output for output in parsed["output"])


def _evaluate(expression: str, module: Module, variables: dict[str, float]) -> float:
    """One of the module's numeric locals, evaluated here (no terraform binary can run): `var.X` from
    `variables` or the variable's default, `local.X` recursively, `ceil` and `max` as Terraform's."""
    import math
    import re

    locals_ = {name: value(block, name) for parsed in module.files.values() for block in parsed.get("locals", [])
               for name in block}

    def substitute(match: re.Match[str]) -> str:
        kind, name = match.groups()
        if kind == "var":
            return repr(variables.get(name, value(module.variable(name), "default")))
        inner = locals_[name]
        return repr(_evaluate(inner if isinstance(inner, str) else repr(inner), module, variables))

    text = re.sub(r"\b(var|local)\.(\w+)", substitute, str(expression).removeprefix("${").removesuffix("}"))
    return eval(text, {"__builtins__": {}}, {"ceil": math.ceil, "max": max})  # noqa: S307 (our own Terraform)


@pytest.mark.parametrize(("warm_bytes", "expected_seconds"), [(0, 45), (98_362_432, 50), (5_027_783_488, 130)])
def test_the_startup_probe_budget_covers_the_warm_sets_sync_and_load(modules, warm_bytes, expected_seconds):
    gpu = modules["gpu_service"]
    container = blocks(blocks(gpu.resource("google_cloud_run_v2_service", "server"), "template")[0], "containers")[0]
    probe = blocks(container, "startup_probe")[0]
    assert value(probe, "failure_threshold") == "${local.startup_failure_threshold}"
    assert value(probe, "period_seconds") == "${local.startup_period_seconds}"
    variables = {"warm_model_bytes": warm_bytes}
    budget = _evaluate("local.startup_failure_threshold * local.startup_period_seconds", gpu, variables)
    assert budget == expected_seconds
    # Never less than the sync and load at the assumed throughputs (100 MB/s, 1 GB/s) plus 30 s overhead.
    assert budget >= 30 + warm_bytes / 100e6 + warm_bytes / 1e9


def test_a_warm_set_no_startup_probe_can_wait_for_fails_the_plan(modules):
    gpu = modules["gpu_service"]
    (check,) = blocks(blocks(gpu.resource("google_cloud_run_v2_service", "server"), "lifecycle")[0], "precondition")
    condition = value(check, "condition")
    assert _evaluate(condition, gpu, {"warm_model_bytes": 50_000_000_000}) is True
    assert _evaluate(condition, gpu, {"warm_model_bytes": 200_000_000_000}) is False  # ~2,000 s of download
    assert "warm fewer or smaller models" in value(check, "error_message")


def test_the_web_adapter_streams_every_event_as_it_is_produced(modules):
    """Response streaming on, compression off (a gzip layer holds small SSE events back until its buffer
    fills), readiness on /health/ready: in the Terraform and in the image alike."""
    environment = value(blocks(modules["lambda_function"].resource("aws_lambda_function", "server"), "environment")[0],
                        "variables")
    settings = str(environment)
    containerfile = (INFRA.parent / "Containerfile").read_text()
    for name, expected in (("AWS_LWA_INVOKE_MODE", "response_stream"), ("AWS_LWA_ENABLE_COMPRESSION", "false"),
                           ("AWS_LWA_READINESS_CHECK_PATH", "/health/ready")):
        assert f"'{name}': '{expected}'" in settings or f'"{name}": "{expected}"' in settings, (name, settings)
        assert f"{name}={expected}" in containerfile, name


def test_sharing_prompt_prefixes_grants_only_that_prefix_and_only_when_asked(modules):
    function = modules["lambda_function"]
    assert value(function.variable("kv_cache_prefix"), "default") == ""
    dynamic = [entry["statement"] for entry in function.data("aws_iam_policy_document", "function")["dynamic"]]
    for statement in dynamic:
        assert value(statement, "for_each").startswith('${var.kv_cache_prefix == "" ? [] :')  # off by default
    granted = {value(content, "sid"): content for statement in dynamic for content in blocks(statement, "content")}
    assert value(granted["SharePromptPrefixes"], "actions") == ["s3:GetObject", "s3:PutObject"]
    assert value(granted["SharePromptPrefixes"], "resources") == ["${var.model_bucket_arn}/${statement.value}*"]
    listing = blocks(granted["ListPromptPrefixes"], "condition")[0]
    assert value(listing, "variable") == "s3:prefix" and value(listing, "values") == ["${statement.value}*"]
    assert value(granted["EncryptPromptPrefixes"], "actions") == ["kms:GenerateDataKey"]
    assert value(granted["EncryptPromptPrefixes"], "resources") == ["${var.model_kms_key_arn}"]
    environment = str(value(blocks(function.resource("aws_lambda_function", "server"), "environment")[0], "variables"))
    assert "KV_CACHE_S3" in environment and "var.kv_cache_prefix" in environment


def test_shared_prompt_prefixes_are_signed_and_expire(modules):
    """KV_CACHE_S3 goes with its signing key (the server refuses to start without it, so the plan does
    too), and the bucket expires the shared prefixes instead of keeping them forever."""
    function = modules["lambda_function"]
    assert value(function.variable("kv_cache_key"), "sensitive") is True
    server = function.resource("aws_lambda_function", "server")
    environment = str(value(blocks(server, "environment")[0], "variables"))
    assert "KV_CACHE_KEY" in environment and "var.kv_cache_key" in environment
    (check,) = blocks(blocks(server, "lifecycle")[0], "precondition")
    assert "var.kv_cache_key" in value(check, "condition") and "kv_cache_prefix" in value(check, "condition")
    bucket = modules["model_bucket"]
    lifecycle = bucket.resource("aws_s3_bucket_lifecycle_configuration", "models")
    (expiring,) = [entry["rule"] for entry in lifecycle["dynamic"]]
    assert value(expiring, "for_each").startswith('${var.kv_cache_prefix == "" ? [] :')
    (content,) = blocks(expiring, "content")
    assert value(blocks(content, "expiration")[0], "days") == "${var.kv_cache_days}"
    assert value(blocks(content, "filter")[0], "prefix") == "${rule.value}"
