"""The playground at `/` in real Chromium against the real server and the demo model.

Waits are on page states (selectors, attributes the page sets when a reply ends) and server states
(the in-flight gauge), never on fixed sleeps.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import pytest

from tests.support.browser import WatchedPage, browser  # noqa: F401  (fixture)
from tests.support.demo import end_of_turn_bias
from tests.support.waiting import wait_for

REPLY_DONE = ".message.assistant[data-finish]:not([data-finish=''])"
STATE_TIMEOUT_MS = 120_000


@pytest.fixture
def watched(browser, server):  # noqa: F811
    page = WatchedPage(browser, server.base_url)
    yield page
    page.close()


# Predicates are functions, not expressions: Playwright evaluates a bare expression with eval(), which the
# page's Content-Security-Policy refuses.
def _ready(page):
    page.wait_for_function("() => document.getElementById('chat-model').options.length > 0", timeout=STATE_TIMEOUT_MS)


def _force_long_replies(page):
    """The page sends what the user set; the test adds a logit_bias so the reply cannot end on its own."""
    def extend(route):
        body = json.loads(route.request.post_data)
        route.continue_(post_data=json.dumps({**body, "logit_bias": end_of_turn_bias()}))
    page.route("**/v1/chat/completions", extend)


def _in_flight(base_url):
    metrics = httpx.get(f"{base_url}/metrics", timeout=10).text
    return float(re.search(r"^gguf_requests_in_flight (\S+)$", metrics, re.MULTILINE).group(1))


def test_the_page_loads_with_models_and_stays_on_its_origin(watched):
    page = watched.open()
    _ready(page)
    page.click("#tab-models")
    page.wait_for_selector("#models tr[data-model='smollm2-135m-embed']")
    rows = page.locator("#models tbody tr").all_inner_texts()
    assert any("smollm2-135m\tchat" in row for row in rows), rows
    assert any("embedding" in row for row in rows), rows
    watched.screenshot("models")
    assert watched.console_errors == []
    assert watched.outside_requests == []


def test_a_message_gets_a_streamed_reply_that_grows(watched):
    page = watched.open()
    _ready(page)
    # Every change of the reply's text is recorded, so the test sees the stream arrive in steps.
    page.evaluate("""() => {
        window.replyLengths = [];
        new MutationObserver(() => {
            const reply = document.querySelector('.message.assistant .content');
            if (reply) window.replyLengths.push(reply.textContent.length);
        }).observe(document.getElementById('transcript'), {subtree: true, childList: true, characterData: true});
    }""")
    page.fill("#max-tokens", "40")
    page.fill("#message", "Tell me about the sea.")
    page.press("#message", "Enter")
    page.wait_for_selector(REPLY_DONE, timeout=STATE_TIMEOUT_MS)
    lengths = page.evaluate("window.replyLengths")
    assert len(set(lengths)) >= 3, lengths
    assert page.inner_text(".message.user .text") == "Tell me about the sea."
    assert page.inner_text(".message.assistant .content").strip()
    stats = page.inner_text("#stats")
    assert "completion tokens" in stats and "tokens/s" in stats, stats
    watched.screenshot("chat")
    assert watched.console_errors == []
    assert watched.outside_requests == []


def test_shift_enter_makes_a_new_line_and_does_not_send(watched):
    page = watched.open()
    _ready(page)
    page.fill("#message", "first line")
    page.press("#message", "Shift+Enter")
    page.keyboard.type("second line")
    assert page.input_value("#message") == "first line\nsecond line"
    assert page.locator(".message").count() == 0


def test_stop_ends_a_long_reply_and_the_server_lets_go_of_it(watched, server):
    page = watched.open()
    _force_long_replies(page)
    _ready(page)
    page.fill("#max-tokens", "4000")
    page.fill("#message", "Count from one to a thousand.")
    page.click("#send")
    page.wait_for_function("() => (document.querySelector('.message.assistant .content')?.textContent.length ?? 0) > 20",
                           timeout=STATE_TIMEOUT_MS)
    assert _in_flight(server.base_url) == 1
    page.click("#stop")
    page.wait_for_selector(".message.assistant[data-finish='stopped']", timeout=STATE_TIMEOUT_MS)
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    assert wait_for(lambda: _in_flight(server.base_url) == 0), "the generation was not cancelled"
    assert watched.console_errors == []


def test_a_forced_tool_call_renders_and_its_result_continues_the_loop(watched):
    page = watched.open()
    _ready(page)
    page.click("#tools-editor summary")
    page.click("#example-tool")
    page.select_option("#tool-choice", "function:get_weather")
    page.fill("#max-tokens", "48")
    page.fill("#message", "What is the weather in Paris?")
    page.press("#message", "Enter")
    page.wait_for_selector(REPLY_DONE, timeout=STATE_TIMEOUT_MS)
    assert page.inner_text(".tool-call .tool-name") == "tool call: get_weather"
    arguments = json.loads(page.inner_text(".tool-call pre"))
    assert isinstance(arguments.get("city"), str)
    stats = page.inner_text("#stats")
    assert "finish: tool_calls" in stats and "tokens/s" not in stats, stats  # the call came whole: no rate to show
    watched.screenshot("tool-call")
    page.select_option("#tool-choice", "none")
    page.fill(".tool-result textarea", '{"temperature_c": 21, "sky": "clear"}')
    page.click(".tool-result button")
    page.wait_for_function(f"() => document.querySelectorAll(\"{REPLY_DONE}\").length === 2", timeout=STATE_TIMEOUT_MS)
    assert page.inner_text(".message.tool .text") == '{"temperature_c": 21, "sky": "clear"}'
    assert page.locator(".message.assistant").nth(1).inner_text().strip()
    assert watched.console_errors == []


def test_the_embeddings_tab_shows_a_similarity_table(watched):
    page = watched.open()
    _ready(page)
    page.click("#tab-embeddings")
    assert page.is_hidden("#chat-panel") and page.is_visible("#embeddings-panel")
    page.click("#embed")
    page.wait_for_selector("#similarity:not([hidden]) td", timeout=STATE_TIMEOUT_MS)
    cells = page.locator("#similarity td").all_inner_texts()
    assert len(cells) == 9
    assert [cells[0], cells[4], cells[8]] == ["1.000", "1.000", "1.000"]
    assert all(-1 <= float(cell) <= 1 for cell in cells)
    assert "3 texts" in page.inner_text("#embed-stats")
    watched.screenshot("embeddings")
    assert watched.console_errors == []


def test_copy_as_python_gives_a_program_that_runs(watched, server, tmp_path):
    page = watched.open()
    _ready(page)
    page.fill("#max-tokens", "8")
    page.fill("#message", "Say hi.")
    page.click("#copy-python")
    program = page.inner_text("#snippet")
    assert "from openai import OpenAI" in program and "chat.completions.create" in program
    (tmp_path / "snippet.py").write_text(program)
    ran = subprocess.run([sys.executable, str(tmp_path / "snippet.py")], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip()
    page.click("#copy-curl")
    command = page.inner_text("#snippet")
    assert command.startswith(f"curl '{server.base_url}/v1/chat/completions'")
    ran = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and "data: [DONE]" in ran.stdout, ran.stdout + ran.stderr


def test_an_unknown_model_is_a_readable_error(watched):
    page = watched.open()
    _ready(page)
    page.evaluate("""() => {
        const picker = document.getElementById('chat-model');
        picker.append(new Option('no-such-model', 'no-such-model'));
        picker.value = 'no-such-model';
    }""")
    page.fill("#message", "hello")
    page.press("#message", "Enter")
    page.wait_for_selector("#error:not([hidden])", timeout=STATE_TIMEOUT_MS)
    error = page.inner_text("#error")
    assert error.startswith("Not found (404)") and "no-such-model" in error, error
    assert page.is_enabled("#send")


def test_with_an_api_key_the_page_asks_for_it_and_refuses_a_wrong_one(browser, launch):  # noqa: F811
    server = launch({"API_KEY": "right-key"})
    watched = WatchedPage(browser, server.base_url)
    try:
        page = watched.open()
        page.wait_for_selector("#key-panel:not([hidden])", timeout=STATE_TIMEOUT_MS)
        assert "needs an API key (401)" in page.inner_text("#error")
        page.fill("#api-key", "wrong-key")
        page.click("#save-key")
        page.wait_for_function("() => document.getElementById('error').textContent.includes('refused')",
                               timeout=STATE_TIMEOUT_MS)
        assert page.is_visible("#key-panel")
        page.fill("#api-key", "right-key")
        page.click("#save-key")
        _ready(page)
        assert page.is_hidden("#error")
        page.fill("#max-tokens", "8")
        page.fill("#message", "hi")
        page.press("#message", "Enter")
        page.wait_for_selector(REPLY_DONE, timeout=STATE_TIMEOUT_MS)
        assert page.get_attribute(".message.assistant", "data-finish") in ("stop", "length")
        assert page.evaluate("sessionStorage.getItem('serverless-gguf-api-key')") == "right-key"
        watched.screenshot("api-key")
        assert watched.outside_requests == []
    finally:
        watched.close()


@pytest.mark.parametrize(("status", "expected"), [
    (429, "The server is busy: its queue is full (429). Retry in 2 s."),
    (503, "The server cannot take this now (503). Retry in 7 s."),
])
def test_busy_and_unavailable_answers_say_when_to_retry(watched, status, expected):
    """The server's own 429 and 503 are tested in test_http_errors; here the page's reading of them, with the
    answer served by the browser's router (a full queue or a drain cannot be held still for a browser)."""
    page = watched.open()
    _ready(page)
    retry_after = "2" if status == 429 else "7"
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=status, headers={"Retry-After": retry_after}, content_type="application/json",
        body=json.dumps({"error": {"message": "try later", "type": "server_error", "param": None, "code": None}})))
    page.fill("#message", "hello")
    page.press("#message", "Enter")
    page.wait_for_selector("#error:not([hidden])", timeout=STATE_TIMEOUT_MS)
    assert page.inner_text("#error") == f"{expected} try later"
