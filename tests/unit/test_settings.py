from pathlib import Path

import pytest

from handler.settings import LAMBDA_MAX_BODY_BYTES, Settings, SettingsError, physical_cores


def test_defaults_from_an_empty_environment():
    settings = Settings.from_env({}, default_threads=3)
    assert settings.model_dir == Path("models")
    assert settings.manifest_path == Path("models_manifest/default.toml")
    assert (settings.port, settings.n_ctx, settings.n_gpu_layers, settings.n_threads) == (8000, 2048, None, 3)
    assert (settings.temperature, settings.max_tokens, settings.verbose) == (0.7, 512, False)
    assert settings.cors_allow_origins == ("*",)


def test_values_are_parsed():
    settings = Settings.from_env({
        "MODEL_DIR": "/models", "PORT": "9000", "N_CTX": "4096", "N_GPU_LAYERS": "-1", "N_THREADS": "8",
        "N_BATCH": "256", "TEMPERATURE": "0", "MAX_TOKENS": "64", "VERBOSE": "true",
        "CORS_ALLOW_ORIGINS": "https://a.example, https://b.example", "HOST": "0.0.0.0",
    })
    assert settings.model_dir == Path("/models")
    assert (settings.port, settings.n_ctx, settings.n_gpu_layers, settings.n_threads, settings.n_batch) == (
        9000, 4096, -1, 8, 256)
    assert (settings.temperature, settings.max_tokens, settings.verbose, settings.host) == (0.0, 64, True, "0.0.0.0")
    assert settings.cors_allow_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize(("name", "value"), [
    ("PORT", "eighty"), ("PORT", "70000"), ("N_CTX", "0"), ("N_CTX", "-5"), ("N_GPU_LAYERS", "-2"),
    ("TEMPERATURE", "nan"), ("TEMPERATURE", "3"), ("VERBOSE", "maybe"), ("MAX_TOKENS", "1.5"),
    ("MODEL_STAGING", "tmpfs"), ("SNAPSHOT_READY", "maybe"), ("MAX_GPU_MEMORY_MB", "-1"), ("MAX_GPU_MEMORY_MB", "8G"),
])
def test_invalid_values_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_physical_cores_counts_unique_cores(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(f"processor\t: {i}\nphysical id\t: 0\ncore id\t\t: {i // 2}\n\n" for i in range(4)))
    assert physical_cores(cpuinfo) == 2
    assert physical_cores(tmp_path / "missing") >= 1


def test_a_batch_smaller_than_the_parallel_sequences_is_refused():
    with pytest.raises(SettingsError, match=r"N_BATCH=2 must be at least N_PARALLEL=4"):
        Settings.from_env({"N_BATCH": "2", "N_PARALLEL": "4"})
    assert Settings.from_env({"N_BATCH": "4", "N_PARALLEL": "4"}).n_batch == 4


def test_on_lambda_bodies_default_below_its_payload_limit():
    assert Settings.from_env({}).max_body_bytes == 10 * 1024 * 1024
    on_lambda = Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "llm"})
    assert on_lambda.max_body_bytes == LAMBDA_MAX_BODY_BYTES < 6 * 1000 * 1000
    assert Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "llm", "MAX_BODY_BYTES": "1000"}).max_body_bytes == 1000


def test_max_request_s():
    assert Settings.from_env({}).max_request_s == 0
    assert Settings.from_env({"MAX_REQUEST_S": "30"}).max_request_s == 30
    with pytest.raises(SettingsError, match="MAX_REQUEST_S"):
        Settings.from_env({"MAX_REQUEST_S": "-1"})


@pytest.mark.parametrize(("url", "bucket", "prefix"), [
    ("s3://kv-cache/shared/", "kv-cache", "shared/"), ("s3://kv-cache/a/b", "kv-cache", "a/b/"), ("s3://kv-cache", "kv-cache", ""),
])
def test_kv_cache_s3_is_a_bucket_and_prefix(url, bucket, prefix):
    from handler.store.prefix_mirror import S3PrefixMirror
    from handler.store.s3 import S3Tuning

    settings = Settings.from_env({"KV_CACHE_S3": url, "KV_CACHE_KEY": "k" * 32})
    mirror = S3PrefixMirror(settings.kv_cache_s3, S3Tuning())
    assert (mirror.bucket, mirror.prefix) == (bucket, prefix)


@pytest.mark.parametrize("url", ["kv-cache/shared", "s3://", "s3://UPPER/x", "https://bucket/x"])
def test_kv_cache_s3_must_be_an_s3_url(url):
    with pytest.raises(SettingsError, match="KV_CACHE_S3"):
        Settings.from_env({"KV_CACHE_S3": url})


def test_shared_prefixes_need_a_signing_key():
    with pytest.raises(SettingsError, match="KV_CACHE_S3 needs KV_CACHE_KEY"):
        Settings.from_env({"KV_CACHE_S3": "s3://kv/prefixes/"})
    with pytest.raises(SettingsError, match="KV_CACHE_KEY"):
        Settings.from_env({"KV_CACHE_S3": "s3://kv/prefixes/", "KV_CACHE_KEY": "too-short"})
    key = "x" * 32
    settings = Settings.from_env({"KV_CACHE_S3": "s3://kv/prefixes/", "KV_CACHE_KEY": key})
    assert settings.kv_cache_key == key and key not in repr(settings)
    assert Settings.from_env({"KV_CACHE_S3": "s3://kv/prefixes/", "KV_CACHE_MB": "0"}).kv_cache_s3  # off anyway


def test_gpu_layers_are_auto_unless_set():
    assert Settings.from_env({}).n_gpu_layers is None
    assert Settings.from_env({"N_GPU_LAYERS": "auto"}).n_gpu_layers is None
    assert Settings.from_env({"N_GPU_LAYERS": "0"}).n_gpu_layers == 0
    with pytest.raises(SettingsError, match="N_GPU_LAYERS"):
        Settings.from_env({"N_GPU_LAYERS": "most"})


def test_model_staging_is_the_volume_unless_memory_is_asked_for():
    assert Settings.from_env({}).model_staging == "volume"
    assert Settings.from_env({"MODEL_STAGING": "memory"}).model_staging == "memory"


def test_snapshot_ready_loads_weights_into_the_process():
    from handler.wiring import llama_defaults

    assert llama_defaults(Settings.from_env({})).use_mmap is True
    assert llama_defaults(Settings.from_env({"SNAPSHOT_READY": "true"})).use_mmap is False


def test_platform_ports_and_routes():
    vertex = Settings.from_env({"PORT": "8000", "AIP_HTTP_PORT": "8080", "AIP_HEALTH_ROUTE": "/v/health",
                                "AIP_PREDICT_ROUTE": "/v/predict", "PORT_HEALTH": "9001"})
    assert (vertex.port, vertex.vertex_health_route, vertex.vertex_predict_route, vertex.health_port) == (
        8080, "/v/health", "/v/predict", 9001)
    assert Settings.from_env({}).health_port is None
    for name, value in [("AIP_PREDICT_ROUTE", "predict"), ("AIP_HEALTH_ROUTE", "/a b"), ("PORT_HEALTH", "0")]:
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: value})
