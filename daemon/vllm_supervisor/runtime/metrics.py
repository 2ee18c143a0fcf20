"""Prometheus text for `GET /v1/metrics`: the supervisor's own gauges and counters, plus the
engine's key load metrics passed through as the engine wrote them."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from vllm_supervisor.runtime.states import State


def supervisor_metrics(s: dict[str, Any]) -> str:
    m, out = f'model="{s["model"]}"', []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")
        out.extend(f"{name}{{{labels}}} {value:g}\n" for labels, value in samples)

    metric(
        "vllm_supervisor_up",
        "gauge",
        "1 when the engine is ready to serve",
        [(m, 1.0 if s["state"] in (State.READY, State.DRAINING) else 0.0)],
    )
    metric(
        "vllm_supervisor_state",
        "gauge",
        "1 for the current lifecycle state",
        [(f'{m},state="{st.value}"', 1.0 if s["state"] == st.value else 0.0) for st in State],
    )
    metric(
        "vllm_supervisor_restarts_total",
        "counter",
        "engine restarts after failures",
        [(m, float(s["restarts"]))],
    )
    if s.get("time_to_ready") is not None:
        metric(
            "vllm_supervisor_time_to_ready_seconds",
            "gauge",
            "spawn to READY of the last successful start",
            [(m, s["time_to_ready"])],
        )
    if s.get("last_start") is not None:
        metric(
            "vllm_supervisor_last_start_duration_seconds",
            "gauge",
            "how long the last start took, until READY or failure",
            [(m, s["last_start"])],
        )
    if s.get("uptime") is not None:
        metric(
            "vllm_supervisor_uptime_seconds",
            "gauge",
            "time since the engine became ready",
            [(m, s["uptime"])],
        )
    outcomes = (s.get("upgrade") or {}).get("outcomes") or {}
    if outcomes:
        metric(
            "vllm_supervisor_upgrades_total",
            "counter",
            "upgrades and rollbacks (vllmctl upgrade), by how they ended",
            [(f'{m},outcome="{k}"', float(n)) for k, n in sorted(outcomes.items())],
        )
    if s.get("gpu_memory"):
        metric(
            "vllm_supervisor_gpu_memory_bytes",
            "gauge",
            "GPU memory held by the engine's processes, per GPU (NVML)",
            [(f'{m},gpu="{gpu}"', float(n)) for gpu, n in sorted(s["gpu_memory"].items())],
        )
    return "".join(out)


# Families as prometheus_client's parser names them (a counter without its _total suffix).
ENGINE_KEYS = frozenset(
    {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions",
    }
)


def engine_families(text: str) -> list[Metric]:
    """The engine's /metrics text, parsed by prometheus_client (the one Prometheus parser in
    the daemon); an unparsable text counts as no metrics."""
    try:
        return list(text_string_to_metric_families(text))
    except ValueError:
        return []


def engine_key_metrics(text: str) -> str:
    """The engine's key load metrics, with their HELP and TYPE, in Prometheus text."""

    class Keys:  # generate_latest() reads any object with collect()
        def collect(self) -> list[Metric]:
            return [f for f in engine_families(text) if f.name in ENGINE_KEYS]

    return generate_latest(Keys()).decode()


def running_requests(text: str) -> float | None:
    """Sum of vllm:num_requests_running over its label sets; None when the engine does not
    report it."""
    found = [f for f in engine_families(text) if f.name == "vllm:num_requests_running"]
    return sum(s.value for f in found for s in f.samples) if found else None
