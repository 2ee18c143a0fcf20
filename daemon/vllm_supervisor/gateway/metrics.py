"""`GET /metrics` on the gateway's port: one scrape target for the host.

The gateway's own series come from prometheus_client (requests by model and code, in-flight
and queued requests, activations and swaps with their durations, upstream latency); each
instance's `/v1/metrics` (state, restarts, GPU memory, the engine's key load metrics) is read
over its admin socket, parsed by prometheus_client's parser and merged family by family, so
every family appears once whatever the number of instances.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from vllm_supervisor.gateway.router import Router
from vllm_supervisor.protocol.states import State

LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LOAD = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200)


class TextSource(Protocol):
    async def text(self, model: str, path: str, timeout: float) -> str | None: ...


class RouterCollector:
    """Gauges and counters read from the router's snapshot at scrape time."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def collect(self) -> Iterable[Metric]:
        snap = self.router.snapshot()
        rows = (
            ("vllm_gateway_in_flight", "requests being answered", "in_flight"),
            ("vllm_gateway_queued", "requests waiting for their model", "queued"),
        )
        for name, help_, key in rows:
            family = GaugeMetricFamily(name, help_, labels=["model"])
            for model, row in snap.items():
                family.add_metric([model], float(row[key]))
            yield family
        ready = GaugeMetricFamily(
            "vllm_gateway_model_ready", "1 when the gateway sees the model ready", labels=["model"]
        )
        for model, row in snap.items():
            ready.add_metric([model], 1.0 if row["state"] == State.READY else 0.0)
        yield ready


class GatewayMetrics:
    def __init__(self, router: Router, instances: TextSource, models: list[str]) -> None:
        self.instances, self.models = instances, models
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "vllm_gateway_requests",
            "requests answered, by model and HTTP status",
            ["model", "code"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "vllm_gateway_request_duration_seconds",
            "arrival to the end of the answer, waiting included",
            ["model"],
            buckets=LATENCY,
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "vllm_gateway_upstream_first_byte_seconds",
            "forward to the engine's response headers",
            ["model"],
            buckets=LATENCY,
            registry=self.registry,
        )
        self.activations = Counter(
            "vllm_gateway_activations",
            "activations the gateway asked for, by outcome and whether they swapped",
            ["model", "swap", "outcome"],
            registry=self.registry,
        )
        self.activation_seconds = Histogram(
            "vllm_gateway_activation_duration_seconds",
            "an activation (a swap included) until ready or failed",
            ["model", "swap"],
            buckets=LOAD,
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "vllm_gateway_chat_fallbacks",
            "chat requests answered through /v1/completions (chat_fallback), by reason",
            ["model", "reason"],
            registry=self.registry,
        )
        self.tools_removed = Counter(
            "vllm_gateway_tools_removed",
            "requests whose tools were removed for a model that calls none (unsupported_tools)",
            ["model"],
            registry=self.registry,
        )
        self._codes: dict[tuple[str, int], Counter] = {}
        self._durations: dict[str, Histogram] = {}
        self._first_bytes: dict[str, Histogram] = {}
        self.registry.register(RouterCollector(router))
        router.on_activation = self.activated

    def activated(self, model: str, swap: bool, seconds: float, state: str) -> None:
        outcome = State.READY if state == State.READY else State.FAILED
        self.activations.labels(model, str(swap).lower(), outcome).inc()
        self.activation_seconds.labels(model, str(swap).lower()).observe(seconds)

    # Per request, one child per model (and code) kept here: `labels()` hashes its label
    # values and takes a lock each time, 1-2% of a request (issue 23).
    def answered(self, model: str, code: int, seconds: float) -> None:
        counter = self._codes.get((model, code))
        if counter is None:
            counter = self._codes[model, code] = self.requests.labels(model, str(code))
        counter.inc()
        self._child(self._durations, self.request_seconds, model).observe(seconds)

    def first_byte(self, model: str, seconds: float) -> None:
        self._child(self._first_bytes, self.upstream_seconds, model).observe(seconds)

    @staticmethod
    def _child(kept: dict[str, Histogram], family: Histogram, model: str) -> Histogram:
        child = kept.get(model)
        if child is None:
            child = kept[model] = family.labels(model)
        return child

    async def text(self) -> str:
        texts = await asyncio.gather(
            *(self.instances.text(m, "/v1/metrics", 5.0) for m in self.models)
        )
        merged = Merged([t for t in texts if t])
        return generate_latest(self.registry).decode() + generate_latest(merged).decode()


class Merged:
    """The instances' families, one family per name, their samples together."""

    def __init__(self, texts: list[str]) -> None:
        self.families: dict[str, Metric] = {}
        for text in texts:
            try:
                parsed = list(text_string_to_metric_families(text))
            except ValueError:
                continue  # one unreadable instance does not hide the others
            for f in parsed:
                into = self.families.setdefault(f.name, Metric(f.name, f.documentation, f.type))
                into.samples.extend(f.samples)

    def collect(self) -> Iterable[Metric]:
        return list(self.families.values())

    def describe(self) -> list[Any]:
        return []
