"""Prometheus metrics at GET /metrics.

Requests by route and status, and their latency, come from Litestar's Prometheus middleware. This
module adds what only the server knows: time to first token, tokens, cold starts, load and sync
durations (recorded as requests pass), and gauges read at scrape time from the app's own state
(models loaded, queue depth, requests in flight, sync progress).
With several granian workers each process keeps its own numbers unless PROMETHEUS_MULTIPROC_DIR is set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from handler.engine.batching import BatchingChatModel
from handler.engine.cache import ColdStart, ModelCache
from handler.engine.step_budget import StepRecord
from handler.lifecycle import Lifecycle
from handler.store.model_store import ModelStore
from handler.store.prefixes import PrefixStore
from handler.warmup import WarmUp

FAST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TIME_TO_FIRST_TOKEN = Histogram("gguf_time_to_first_token_seconds", "Request start to first generated text",
                                ["model"], buckets=FAST_BUCKETS)
TOKENS = Counter("gguf_tokens_total", "Tokens processed", ["model", "kind"])
MODEL_REQUESTS = Counter("gguf_model_requests_total", "Requests that reached a model, by outcome",
                         ["model", "endpoint", "finish_reason"])
PREFIXES_RESTORED = Counter("gguf_prefixes_restored_total",
                            "Requests whose prompt prefix's KV state was restored, by where it came from "
                            "(ram, volume, s3)", ["model", "source"])
COLD_STARTS = Counter("gguf_cold_starts_total", "Requests that waited for a model sync and load", ["model"])
LOAD_SECONDS = Histogram("gguf_model_load_seconds", "Model load durations", ["model"], buckets=FAST_BUCKETS)
SYNC_SECONDS = Histogram("gguf_model_sync_seconds", "Model file sync (check or download) durations", ["model"],
                         buckets=FAST_BUCKETS)


STEP_SECONDS = Histogram("gguf_step_seconds", "Duration of each decode step of a chat model", ["model"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5))
STEP_HOST_SECONDS = Histogram("gguf_step_host_seconds", "Part of each decode step spent on the host, outside "
                              "llama_decode (building the batch, sampling, text): flat as streams grow when "
                              "per-token work stays in C", ["model"],
                              buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
TOKEN_GAP_SECONDS = Histogram("gguf_inter_token_gap_seconds", "Time between consecutive tokens of a stream", ["model"],
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5))


def step_recorder(model: str) -> Callable[[StepRecord], None]:
    """What records `model`'s decode steps, on its thread after each step; its series are looked up once
    (a lookup per step and per token was a few µs each, on the step's host time)."""
    seconds, host, gaps = (STEP_SECONDS.labels(model), STEP_HOST_SECONDS.labels(model),
                           TOKEN_GAP_SECONDS.labels(model))

    def record(step: StepRecord) -> None:
        seconds.observe(step.seconds)
        host.observe(step.host_seconds)
        for gap in step.token_gaps:
            gaps.observe(gap)

    return record


def record_cold_start(cold: ColdStart | None, model: str) -> None:
    if cold is not None:
        COLD_STARTS.labels(model).inc()
        LOAD_SECONDS.labels(model).observe(cold.load_seconds)
        SYNC_SECONDS.labels(model).observe(cold.sync_seconds)


def record_outcome(model: str, endpoint: str, reason: str, prompt_tokens: int, completion_tokens: int) -> None:
    TOKENS.labels(model, "prompt").inc(prompt_tokens)
    if completion_tokens:
        TOKENS.labels(model, "completion").inc(completion_tokens)
    MODEL_REQUESTS.labels(model, endpoint, reason).inc()


class StateCollector(Collector):
    """Gauges computed from the live objects at each scrape."""

    def __init__(self, cache: ModelCache, store: ModelStore, lifecycle: Lifecycle, warmup: WarmUp,
                 prefixes: PrefixStore | None = None) -> None:
        self.cache, self.store, self.lifecycle, self.warmup = cache, store, lifecycle, warmup
        self.prefixes = prefixes

    def collect(self) -> Iterator[Metric]:
        entries = self.cache.entries()
        yield GaugeMetricFamily("gguf_models_loaded", "Models loaded in this process", value=len(entries))
        queue = GaugeMetricFamily("gguf_queue_depth", "Sequences waiting for a slot (a request's every "
                                  "choice and prompt is one)", labels=["model"])
        busy = GaugeMetricFamily("gguf_model_leases", "Requests using a model now", labels=["model"])
        slots = GaugeMetricFamily("gguf_slots_busy", "Sequences generating now", labels=["model"])
        finished = CounterMetricFamily("gguf_generations", "Generations of the loaded models, by finish reason "
                                       "(cancelled: the client left or the server stopped it)",
                                       labels=["model", "finish_reason"])
        # The three gauges inference gateways and autoscalers read (the Gateway API Inference Extension's
        # model server protocol: queued requests, running requests, KV cache utilization; KEDA).
        waiting = GaugeMetricFamily("gguf_requests_waiting", "Requests waiting for their first slot, per model",
                                    labels=["model"])
        running = GaugeMetricFamily("gguf_requests_running", "Requests generating (or embedding) now, per model",
                                    labels=["model"])
        kv_used = GaugeMetricFamily("gguf_kv_cache_utilization", "Share (0-1) of a chat model's KV cells held by "
                                    "running requests", labels=["model"])
        for entry in entries:
            name, model = entry.spec.name, entry.model
            queue.add_metric([name], model.waiting)
            busy.add_metric([name], entry.in_use)
            if isinstance(model, BatchingChatModel):
                slots.add_metric([name], model.busy_slots)
                waiting.add_metric([name], model.requests_waiting)
                running.add_metric([name], model.requests_running)
                kv_used.add_metric([name], model.kv_utilization)
                for reason, count in model.finished.items():
                    finished.add_metric([name, reason], count)
            else:
                waiting.add_metric([name], model.waiting)
                running.add_metric([name], max(0, model.in_flight - model.waiting))
        yield from (queue, busy, slots, finished, waiting, running, kv_used)
        memory = GaugeMetricFamily("gguf_model_memory_bytes", "Memory of each loaded model, in host memory and on "
                                   "GPUs: measured (what llama.cpp allocated) and estimated before it loaded (with a "
                                   "memory budget)", labels=["model", "source", "memory"])
        for entry in entries:
            for source, footprint in (("measured", entry.memory), ("estimate", entry.estimate)):
                if footprint is not None:
                    memory.add_metric([entry.spec.name, source, "host"], footprint.host)
                    memory.add_metric([entry.spec.name, source, "gpu"], footprint.device)
        yield memory
        budget = GaugeMetricFamily("gguf_model_memory_budget_bytes", "MAX_MODEL_MEMORY_MB (host) and "
                                   "MAX_GPU_MEMORY_MB (gpu) in bytes (0: no budget)", labels=["memory"])
        budget.add_metric(["host"], self.cache.limits.memory_budget.host)
        budget.add_metric(["gpu"], self.cache.limits.memory_budget.device)
        yield budget
        yield GaugeMetricFamily("gguf_requests_in_flight", "Model requests in flight", value=self.lifecycle.in_flight)
        yield GaugeMetricFamily("gguf_ready", "1 when the warm set is loaded", value=int(self.warmup.ready))
        synced = GaugeMetricFamily("gguf_sync_bytes", "Bytes fetched by the latest sync of each file", labels=["file"])
        for name, progress in self.store.progress.items():
            synced.add_metric([name], progress.bytes_done)
        yield synced
        if self.prefixes is not None:
            rejected = CounterMetricFamily("gguf_prefix_files_rejected", "Saved prompt prefix files never loaded: "
                                           "unsigned, forged, foreign, out of bounds or damaged (volume, s3), or "
                                           "refused by llama.cpp (refused)", labels=["source"])
            for source in ("volume", "s3", "refused"):
                rejected.add_metric([source], self.prefixes.rejected[source])
            yield rejected


def register_state_collector(collector: StateCollector) -> None:
    REGISTRY.register(collector)


def unregister_state_collector(collector: StateCollector) -> None:
    REGISTRY.unregister(collector)
