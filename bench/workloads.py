"""What the benchmark measures: streaming decode through HTTP, the same decode in-process with raw
llama-cpp-python, embeddings, cold starts. Every reply is forced to exactly `tokens` tokens (the
end-of-turn token is banned) so all sides decode the same amount."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import httpx

PROMPT = "Write a long story about a lighthouse keeper and the sea."
END_OF_TURN = 2  # <|im_end|> in SmolLM2's vocabulary


@attrs.frozen
class Stream:
    ttft: float  # seconds from request to first text
    decode_seconds: float  # first text to last
    tokens: int
    completed: bool

    @property
    def decode_rate(self) -> float:
        return (self.tokens - 1) / self.decode_seconds if self.decode_seconds > 0 else 0.0


_runs = iter(range(1_000_000))
# One client for the whole run: building an httpx client (its TLS context) costs ~15 ms, which would
# otherwise be counted in every time to first token.
CLIENT = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=32, max_keepalive_connections=32))


def fresh_prompt() -> str:
    """The prompt, made unique at its start so no server can reuse a cached prefix between runs."""
    return f"[run {next(_runs)}] {PROMPT}"


def stream_once(base_url: str, model: str, tokens: int, messages: list | None = None) -> Stream:
    body = {"model": model, "messages": messages or [{"role": "user", "content": fresh_prompt()}], "max_tokens": tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
            "logit_bias": {str(END_OF_TURN): -100}}
    started, first, usage, chunks, completed = time.perf_counter(), None, 0, 0, False
    try:
        with CLIENT.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    completed = True
                    break
                chunk = json.loads(line.removeprefix("data: "))
                if chunk.get("usage"):
                    usage = chunk["usage"]["completion_tokens"]
                choices = chunk.get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    chunks += 1  # one token per chunk, for servers that send no usage
                    first = first or time.perf_counter()
    except httpx.HTTPError:
        completed = False
    end = time.perf_counter()
    first = first or end
    count = usage or chunks
    return Stream(ttft=first - started, decode_seconds=end - first, tokens=count,
                  completed=completed and count >= tokens)


def concurrent_streams(base_url: str, model: str, tokens: int, streams: int) -> tuple[float, int]:
    """(aggregate tok/s over the wall time, counting only tokens received, and how many streams
    completed in full)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda _: stream_once(base_url, model, tokens), range(streams)))
    wall = time.perf_counter() - started
    return sum(result.tokens for result in results) / wall, sum(result.completed for result in results)


def raw_stream(llama, tokens: int) -> Stream:
    """The same generation in-process with `llama_cpp.Llama`: render, tokenize, decode `tokens`."""
    prompt = f"<|im_start|>user\n{fresh_prompt()}<|im_end|>\n<|im_start|>assistant\n"
    started = time.perf_counter()
    prompt_tokens = llama.tokenize(prompt.encode(), special=True)
    first, produced = None, 0
    ban = {END_OF_TURN: -100.0}

    def no_end(_ids, scores):
        for token, bias in ban.items():
            scores[token] += bias
        return scores

    import llama_cpp

    for _token in llama.generate(prompt_tokens, temp=0, logits_processor=llama_cpp.LogitsProcessorList([no_end])):
        produced += 1
        if first is None:
            first = time.perf_counter()
        if produced >= tokens:
            break
    end = time.perf_counter()
    llama.reset()
    return Stream(ttft=first - started, decode_seconds=end - first, tokens=produced, completed=True)


def embed_http(base_url: str, model: str, texts: list[str]) -> float:
    started = time.perf_counter()
    response = CLIENT.post(f"{base_url}/v1/embeddings", json={"model": model, "input": texts})
    response.raise_for_status()
    return len(texts) / (time.perf_counter() - started)


def embed_raw(llama, texts: list[str]) -> float:
    started = time.perf_counter()
    llama.embed(texts, normalize=True)
    return len(texts) / (time.perf_counter() - started)


# A cold start's request, the same on every side: raw llama-cpp-python reads the prompt the model's own
# template renders for it (SmolLM2's adds its default system prompt), which is what our chat route reads.
COLD_MESSAGES = [{"role": "user", "content": "Hi"}]
RAW_COLD_START = """
import sys, time
started = float(sys.argv[2])
import llama_cpp
llama = llama_cpp.Llama(sys.argv[1], n_ctx=2048, n_threads=int(sys.argv[3]), n_gpu_layers=int(sys.argv[5]),
                        flash_attn=True, verbose=False)
tokens = llama.tokenize(sys.argv[4].encode(), special=True)
next(llama.generate(tokens, temp=0))
print(time.time() - started)
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) / 1024)
"""


@functools.cache
def cold_prompt(model_path: Path) -> str:
    """The cold-start request as `model_path`'s own chat template renders it."""
    import llama_cpp  # only the cold starts read a vocabulary here

    from handler.formats.gguf_template import render_gguf_template

    vocab = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    return render_gguf_template(vocab.metadata["tokenizer.chat_template"], COLD_MESSAGES)


def raw_cold_start(model_path: Path, threads: int, gpu_layers: int = 0) -> tuple[float, float]:
    """(seconds from process start to first token, peak RSS MB) for raw llama-cpp-python."""
    command = [sys.executable, "-c", RAW_COLD_START, str(model_path), str(time.time()), str(threads),
               cold_prompt(model_path), str(gpu_layers)]
    output = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True).stdout.split()
    return float(output[0]), float(output[1])


def first_token_since(base_url: str, model: str, started: float, on_health=None, timeout_s: float = 120) -> float:
    """Seconds from `started` (perf_counter) to the first token of a request sent as soon as the server
    answers (polling every 5 ms, bounded); `on_health` is told when /health first answers."""
    deadline, healthy = time.monotonic() + timeout_s, False
    while time.monotonic() < deadline:
        try:
            if on_health is not None and not healthy:
                httpx.get(f"{base_url}/health", timeout=5).raise_for_status()
                healthy = True
                on_health(time.perf_counter() - started)
            result = stream_once(base_url, model, 1, COLD_MESSAGES)
            if result.completed:
                return time.perf_counter() - started - result.decode_seconds
        except httpx.HTTPError:
            pass
        time.sleep(0.005)
    raise RuntimeError("the server did not answer")


def long_prompt() -> str:
    """About 1,400 tokens of prompt, unique per call (no prefix reuse)."""
    return f"[run {next(_runs)}] Summarise this list. " + " ".join(
        f"Item {index} is a small blue stone from the northern shore." for index in range(120))


def _stream_arrivals(base_url: str, model: str, tokens: int, prompt: str, arrivals: list[float]) -> bool:
    """Record when each token of a stream arrives; False if the server cut the stream (llama_cpp.server
    interrupts a running request when another arrives)."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "temperature": 0, "stream": True, "logit_bias": {str(END_OF_TURN): -100}}
    try:
        with CLIENT.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data: {") and '"content":"' in line.replace(" ", "") and '"content":""' not in line:
                    arrivals.append(time.perf_counter())
                if line == "data: [DONE]":
                    return True
    except httpx.HTTPError:
        pass
    return False


@attrs.frozen
class JoinResult:
    running_max_gap: float  # seconds, the running stream's longest wait between tokens while the prompt joined
    running_p99_gap: float
    join_ttft: float  # seconds, the joining request's time to first token
    alone_ttft: float  # the same prompt with nothing else running
    running_completed: bool  # False: the server cut the running stream to serve the newcomer


def long_prompt_joins(base_url: str, model: str) -> JoinResult:
    """A stream is decoding when a request with a ~1,400-token prompt arrives: how long does the stream
    stall, and how long does the newcomer wait for its first token (vs alone)?"""
    alone = stream_once(base_url, model, 4, [{"role": "user", "content": long_prompt()}]).ttft
    arrivals: list[float] = []
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_stream_arrivals, base_url, model, 400, fresh_prompt(), arrivals)
        deadline = time.monotonic() + 120
        while len(arrivals) < 20 and time.monotonic() < deadline and not running.done():
            time.sleep(0.005)
        joined_at = time.perf_counter()
        join = stream_once(base_url, model, 4, [{"role": "user", "content": long_prompt()}])
        first_token_at = joined_at + join.ttft
        completed = running.result()
    window = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)
              if later >= joined_at and earlier <= first_token_at + 0.5]
    window.sort()
    p99 = window[min(len(window) - 1, int(len(window) * 0.99))] if window else 0.0
    return JoinResult(running_max_gap=max(window, default=0.0), running_p99_gap=p99, join_ttft=join.ttft,
                      alone_ttft=alone, running_completed=completed)


def n_choices_vs_separate(base_url: str, model: str, n: int = 4, tokens: int = 32) -> tuple[float, float]:
    """(seconds for one request with `n` choices, seconds for `n` concurrent separate requests), same
    ~700-token prompt, fresh each time (no prefix reuse): `n` reads the prompt once."""
    def prompt() -> list[dict]:
        return [{"role": "user", "content": f"[run {next(_runs)}] " + " ".join(
            f"Item {index} is a small blue stone." for index in range(90)) + " Summarise."}]

    body = {"model": model, "max_tokens": tokens, "temperature": 0.8, "seed": 1}
    with httpx.Client(timeout=300) as client:
        started = time.perf_counter()
        client.post(f"{base_url}/v1/chat/completions", json={**body, "messages": prompt(), "n": n}).raise_for_status()
        together = time.perf_counter() - started
        messages = prompt()
        with ThreadPoolExecutor(n) as pool:
            started = time.perf_counter()
            futures = [pool.submit(client.post, f"{base_url}/v1/chat/completions",
                                   json={**body, "messages": messages}) for _ in range(n)]
            for future in futures:
                future.result().raise_for_status()
            separate = time.perf_counter() - started
    return together, separate


SYSTEM_1400 = "You answer questions about this inventory. " + " ".join(
    f"Shelf {n} holds {n * 3} red boxes, {n + 7} blue jars and {n % 5} green tins." for n in range(70))


def greedy_reply(base_url: str, model: str, messages: list, tokens: int = 24) -> tuple[float, str, int]:
    """(seconds to the first text, the whole text at temperature 0, prompt tokens), streamed."""
    body = {"model": model, "messages": messages, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    started, first, text, prompt = time.perf_counter(), None, "", 0
    with CLIENT.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            prompt = (chunk.get("usage") or {}).get("prompt_tokens", prompt)
            content = ((chunk.get("choices") or [{}])[0].get("delta") or {}).get("content")
            if content:
                first = first or time.perf_counter()
                text += content
    return (first or time.perf_counter()) - started, text, prompt
