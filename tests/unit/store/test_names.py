import pytest

from handler.store.names import is_valid_model_name


@pytest.mark.parametrize("name", ["smollm2-135m", "Qwen3-0.6B", "model:q4_k_m", "a", "x" * 128, "org@v1+cpu"])
def test_valid_names(name):
    assert is_valid_model_name(name)


@pytest.mark.parametrize("name", [
    "", "../etc/passwd", "a/b", "/abs", "..", "a..b", "nul\x00byte", "x" * 129, "x" * 10_000, ".hidden",
    "%2e%2e", "back\\slash", "white space", "chat", "embeddings", "-dash",
])
def test_invalid_names(name):
    assert not is_valid_model_name(name)
