"""The floor under the gateway's per-request cost (issue 23): an aiohttp server on uvloop that
answers the completion itself, without forwarding, beside the raw upstream of
scripts/bench/relay.py, with the same client, in one run.

    python scripts/bench/aiohttp_floor.py [--serve-aiohttp PORT]

If aiohttp alone serves about as many requests/s as the raw upstream, the gap between the
gateway and direct in relay.py is what a forward adds, not aiohttp's server. Each server
runs in its own process group, killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import relay  # noqa: E402  (the client and helpers of relay.py)

ANSWER = (
    b'{"id":"cmpl-1","object":"text_completion","created":1,"model":"fast","choices":[{"index":0,'
    b'"text":"a","finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1,'
    b'"total_tokens":2}}'
)


def serve_aiohttp(port: int) -> None:
    import uvloop
    from aiohttp import web

    async def completion(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/completions", completion)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None,
                loop=uvloop.new_event_loop())  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve-aiohttp", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    if a.serve_aiohttp:
        serve_aiohttp(a.serve_aiohttp)
        return
    ports = {"direct": relay.free_port(), "aiohttp alone": relay.free_port()}
    argvs = {
        "direct": [sys.executable, str(HERE / "relay_upstream.py"), "--port"],
        "aiohttp alone": [sys.executable, __file__, "--serve-aiohttp"],
    }
    procs = [
        subprocess.Popen([*argvs[k], str(p)], start_new_session=True, stdout=subprocess.DEVNULL)
        for k, p in ports.items()
    ]
    try:
        for p in ports.values():
            relay.wait_port(p)
        asyncio.run(relay.latency(ports, 100))  # warm
        lat = asyncio.run(relay.latency(ports, 1000))
        rates = {k: [asyncio.run(relay.rps(p, 32, a.seconds)) for _ in range(2)]
                 for k, p in ports.items()}  # fmt: skip
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print(f"{'':28}{'p50, ms':>10}{'requests/s at 32 clients (2 runs)':>36}")
    for k in ports:
        runs = ", ".join(f"{r:.0f}" for r in rates[k])
        print(f"{k:28}{statistics.median(lat[k]):10.3f}{runs:>36}")
    left = [q for proc in procs for q in relay.group_pids(proc.pid)]
    print(f"processes left: {left or 'none'}")


if __name__ == "__main__":
    main()
