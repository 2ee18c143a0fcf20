"""P5: log pump throughput, and whether it slows the engine down. Side by side in one run.

    python scripts/bench/log_pump.py [--lines 1000000]

A child writes N vLLM-like lines (~110 bytes) as fast as it can and reports its own elapsed
time. A: its stdout is /dev/null. B: its stdout is the supervisor's pipe, pumped by
process.spawn (the warden in between) with the supervisor's work per batch (ring buffer,
fatal-line scan, journal writer to /dev/null, and while loading the progress parser), on
uvloop as the daemon runs and on plain asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections import deque

import uvloop
from vllm_supervisor.runtime import process
from vllm_supervisor.runtime.diagnose import first_fatal_line
from vllm_supervisor.runtime.progress import Progress
from vllm_supervisor.systemd.logs import EngineLineWriter

CHILD = (
    "import sys,time\nn=int(sys.argv[1])\nline='(EngineCore pid=1) INFO 11-22 00:00:00 "
    "[flood.py:1] '+'x'*60+'\\n'\nt=time.perf_counter()\nw=sys.stdout.write\n"
    "for _ in range(n): w(line)\nsys.stdout.flush()\n"
    "sys.stderr.write(f'{time.perf_counter()-t}\\n')\n"
)


def bare(n: int, through_cat: bool = False) -> float:
    if through_cat:  # the least any pipe reader costs the writer
        cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        r = subprocess.run(
            [sys.executable, "-c", CHILD, str(n)],
            stdout=cat.stdin,
            stderr=subprocess.PIPE,
            text=True,
            check=True,
        )
        assert cat.stdin is not None
        cat.stdin.close()
        cat.wait()
    else:
        r = subprocess.run(
            [sys.executable, "-c", CHILD, str(n)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=True,
        )
    return float(r.stderr.strip())


async def pumped(n: int, serving: bool) -> tuple[float, float, int]:
    ring: deque[str] = deque(maxlen=2000)
    prog = Progress()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
    writer = EngineLineWriter("bench", devnull)
    count = 0
    child_time: list[float] = []
    ready = serving

    def on_lines(lines: list[str], text: str) -> None:
        nonlocal count
        count += len(lines)
        ring.extend(lines)
        if not ready:
            prog.feed_batch(lines, text)  # the supervisor parses progress only until READY
        first_fatal_line(text)
        last = lines[-1]
        if last[:1].isdigit():
            child_time.append(float(last))  # the child's own elapsed time (stderr, merged)
        writer(lines, text)

    t0 = time.perf_counter()
    eng = await process.spawn([sys.executable, "-c", CHILD, str(n)], dict(os.environ), on_lines)
    await eng.wait()
    await eng.kill()
    total = time.perf_counter() - t0
    devnull.close()
    return child_time[-1], total, count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    n = ap.parse_args().lines
    a = min(bare(n) for _ in range(3))
    a2 = min(bare(n, through_cat=True) for _ in range(3))
    print(f"{n:,} lines of ~110 bytes; child's own write time (best of 3 for A)")
    print(f"A  child writing to /dev/null                 {a:6.2f} s  {n / a:12,.0f} lines/s")
    print(
        f"A2 child writing into a pipe read by cat      {a2:6.2f} s  {n / a2:12,.0f} lines/s"
        f"   x{a2 / a:.2f} of A"
    )
    for label, serving, runner in (
        ("B1 into the pump, serving, uvloop (daemon)", True, uvloop.run),
        ("B2 into the pump, serving, asyncio        ", True, asyncio.run),
        ("B3 into the pump, loading, uvloop         ", False, uvloop.run),
    ):
        b_child, b_total, count = runner(pumped(n, serving))
        assert count >= n, count
        print(
            f"{label} {b_child:6.2f} s  {n / b_child:12,.0f} lines/s   x{b_child / a:.2f} "
            f"of A; pump done after {b_total:.2f} s"
        )


if __name__ == "__main__":
    main()
