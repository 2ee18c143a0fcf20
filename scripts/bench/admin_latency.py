"""Admin socket latency: `state` p50/p99 at 50 concurrent clients, and `vllmctl status` wall
time next to a bare `python -c pass` (the floor any Python CLI pays). One run, side by side.

    python scripts/bench/admin_latency.py [--requests 5000] [--clients 50]

Runs `vllm-supervisor run` with autostart off (no engine needed: `state` does not touch it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


async def one(path: str) -> float:
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"GET /v1/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    return time.perf_counter() - t0


async def load(path: str, total: int, clients: int) -> list[float]:
    times: list[float] = []
    per = total // clients

    async def client() -> None:
        for _ in range(per):
            times.append(await one(path))

    await asyncio.gather(*(client() for _ in range(clients)))
    return times


def wall(cmd: list[str], runs: int, env: dict[str, str]) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=50)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "etc").mkdir()
    (tmp / "venv" / "bin").mkdir(parents=True)
    (tmp / "venv" / "pyvenv.cfg").write_text("")
    (tmp / "venv" / "bin" / "python").write_text("")
    site = tmp / "venv/lib/python3.11/site-packages/vllm-0.32.0.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text("Name: vllm\nVersion: 0.32.0\n\n")
    (tmp / "etc" / "models.yaml").write_text(
        f"models:\n  m: {{model: org/m, port: 18999, venv: {tmp / 'venv'}, autostart: false}}\n"
    )
    sup = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm_supervisor.cli",
            "run",
            "m",
            "--config-dir",
            str(tmp / "etc"),
            "--runtime-dir",
            str(tmp / "run"),
            "--state-dir",
            str(tmp / "state"),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    sock = tmp / "run" / "m" / "admin.sock"
    while not sock.exists():
        time.sleep(0.05)
    try:
        asyncio.run(load(str(sock), 500, a.clients))  # warm-up
        times = sorted(asyncio.run(load(str(sock), a.requests, a.clients)))
        p50 = times[len(times) // 2] * 1000
        p99 = times[int(len(times) * 0.99)] * 1000
        env = {
            **os.environ,
            "VSUP_RUNTIME_DIR": str(tmp / "run"),
            "VSUP_CONFIG_DIR": str(tmp / "etc"),
            "VSUP_STATE_DIR": str(tmp / "state"),
        }
        status = wall([sys.executable, "-m", "vllm_supervisor.ctl.main", "status"], 20, env)
        floor = wall([sys.executable, "-c", "pass"], 20, env)
    finally:
        os.killpg(sup.pid, signal.SIGTERM)
        sup.wait()
    print(
        f"state over the admin socket, {a.clients} concurrent clients, {len(times)} requests "
        f"(new connection each)"
    )
    print(f"  p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   (target p99 <= 10 ms)")
    print(f"vllmctl status (1 model)   {status * 1000:6.0f} ms median of 20  (target <= 300 ms)")
    print(f"python -c pass             {floor * 1000:6.0f} ms   x{status / floor:.1f} of it")


if __name__ == "__main__":
    main()
