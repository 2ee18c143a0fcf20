"""The supervisor's Prometheus text parses with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from vllm_supervisor.runtime.metrics import (
    engine_key_metrics,
    running_requests,
    supervisor_metrics,
)
from vllm_supervisor.runtime.states import State


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_supervisor_metrics() -> None:
    got = samples(
        supervisor_metrics(
            {
                "model": "m",
                "state": "draining",
                "restarts": 2,
                "time_to_ready": 31.5,
                "last_start": None,
                "uptime": 12.0,
            }
        )
    )
    m = (("model", "m"),)
    assert got[("vllm_supervisor_up", m)] == 1.0  # draining still serves
    assert got[("vllm_supervisor_restarts_total", m)] == 2.0
    assert got[("vllm_supervisor_time_to_ready_seconds", m)] == 31.5
    assert ("vllm_supervisor_last_start_duration_seconds", m) not in got
    states = {dict(k[1])["state"]: v for k, v in got.items() if k[0] == "vllm_supervisor_state"}
    assert set(states) == {s.value for s in State} and states["draining"] == 1.0
    assert sum(states.values()) == 1.0


def test_engine_key_metrics_keep_only_the_key_families() -> None:
    engine = (
        "# HELP vllm:num_requests_running Number of requests running.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="m"} 3.0\n'
        "# HELP vllm:prompt_tokens_total Prompt tokens.\n"
        "# TYPE vllm:prompt_tokens_total counter\n"
        'vllm:prompt_tokens_total{model_name="m"} 99.0\n'
        "# HELP vllm:kv_cache_usage_perc KV-cache usage.\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{model_name="m"} 0.25\n'
    )
    got = samples(engine_key_metrics(engine))
    assert got == {
        ("vllm:num_requests_running", (("model_name", "m"),)): 3.0,
        ("vllm:kv_cache_usage_perc", (("model_name", "m"),)): 0.25,
    }


def test_engine_counter_keeps_its_total_suffix_and_running_requests_sums_label_sets() -> None:
    engine = (
        "# HELP vllm:num_preemptions_total Preemptions.\n"
        "# TYPE vllm:num_preemptions_total counter\n"
        'vllm:num_preemptions_total{model_name="m"} 4.0\n'
        "# HELP vllm:num_requests_running Number of requests running.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="m",engine="0"} 2.0\n'
        'vllm:num_requests_running{model_name="m",engine="1"} 1.0\n'
    )
    got = samples(engine_key_metrics(engine))
    assert got[("vllm:num_preemptions_total", (("model_name", "m"),))] == 4.0
    assert running_requests(engine) == 3.0
    assert running_requests("# HELP other x\n# TYPE other gauge\nother 1\n") is None
    assert running_requests("not { prometheus") is None and engine_key_metrics("{") == ""
