"""How long `vllmctl check` takes: cached flag list vs building it; strict parsing batched per
venv vs one parser process per model. Side by side, in one run.

    python scripts/bench/check_speed.py --engine-venv ~/.cache/vllm-supervisor/engine-cpu-0.32.0
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vllm_supervisor.engine import flagcache
from vllm_supervisor.engine.detect import detect
from vllm_supervisor.preflight.check import run_check, server_args


def timed(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine-venv", type=Path, required=True)
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3, help="runs of each slow case (median)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "etc").mkdir()
    body = "".join(
        f"  m{i}:\n    model: org/m{i}\n    port: {8100 + i}\n"
        f"    venv: {a.engine_venv}\n"
        f"    extra_args: [--disable-uvicorn-access-log]\n"
        for i in range(a.models)
    )
    (tmp / "etc" / "models.yaml").write_text("models:\n" + body)
    os.environ["VSUP_CACHE_DIR"] = str(tmp / "cache")
    info = detect(a.engine_venv)
    cli = [
        sys.executable,
        "-m",
        "vllm_supervisor.ctl.main",
        "check",
        "--config-dir",
        str(tmp / "etc"),
    ]

    def check_cold() -> None:
        for f in (tmp / "cache" / "flags").glob("*.json"):
            f.unlink()
        subprocess.run(cli, check=True, capture_output=True)

    def check_warm() -> None:
        subprocess.run(cli, check=True, capture_output=True)

    cold = timed(check_cold, a.runs)
    warm = timed(check_warm, 10)
    report = run_check(tmp / "etc", [], probe=True)
    argvs = [server_args(m.command) for m in report.models if m.command is not None]
    batched = timed(lambda: flagcache.parse_many(info, argvs), a.runs)
    one_each = timed(lambda: [flagcache.parse_argv(info, x) for x in argvs], a.runs)
    print(f"engine: {info.label}; {a.models} models; medians of {a.runs} (warm: 10) runs")
    print(f"vllmctl check, flag list cached     {warm * 1000:8.0f} ms")
    print(
        f"vllmctl check, flag list built      {cold * 1000:8.0f} ms   "
        f"x{cold / warm:.0f} the cached check"
    )
    print(f"strict parse, one process per venv  {batched * 1000:8.0f} ms")
    print(
        f"strict parse, one process per model {one_each * 1000:8.0f} ms   "
        f"x{one_each / batched:.1f} the batched parse"
    )


if __name__ == "__main__":
    main()
