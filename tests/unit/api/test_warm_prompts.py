"""Manifest warm prompts become chat requests through the chat route's own decoding and mapping."""

from __future__ import annotations

import pytest

from handler.api.warm_prompts import WarmPromptError, warm_prompt_request
from handler.app import create_app
from handler.settings import Settings
from handler.store.manifest import ManifestError
from tests.support.fake_engine import fake_loader

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def test_a_warm_prompt_keeps_what_shapes_the_prompt_and_samples_one_greedy_token():
    request = warm_prompt_request("m", {"messages": [{"role": "system", "content": "You look things up."}],
                                        "tools": TOOLS, "max_tokens": 500, "temperature": 1.5, "stream": True})
    assert request.chat.messages == [{"role": "system", "content": "You look things up."}]
    assert [tool["function"]["name"] for tool in request.chat.tools.tools] == ["lookup"]
    assert request.params.max_tokens == 1 and request.params.temperature == 0


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "wizard", "content": "x"}]},
    {"messages": [{"role": "system", "content": "x"}], "tool_choice": {"type": "function", "function": {"name": "nope"}},
     "tools": TOOLS},
])
def test_a_warm_prompt_no_chat_request_could_be_is_refused(body):
    with pytest.raises(WarmPromptError):
        warm_prompt_request("m", body)


def test_the_app_refuses_to_start_with_a_bad_warm_prompt(tmp_path):
    (tmp_path / "bad.json").write_text('{"messages": [{"role": "wizard", "content": "x"}]}')
    manifest = tmp_path / "manifest.toml"
    manifest.write_text("[[models]]\nname = 'a'\nsource = 'a.gguf'\nwarm = true\nwarm_prompts = [{ file = 'bad.json' }]\n")
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path), "MODELS_MANIFEST": str(manifest), "N_THREADS": "1"})
    with pytest.raises(ManifestError, match="a: warm prompt 1 is not a valid chat request"):
        create_app(settings, loader=fake_loader)
