"""The host gateway against nginx and against the engine directly, on a fast upstream, side by
side in one run (issue 23; docs/performance.md, "The gateway's relay against nginx").

    python scripts/bench/relay.py --engine-venv V --model TINY_MODEL_DIR [--seconds 5]

(the model folder only passes the config check: the upstream serves no model)

The upstream is scripts/bench/relay_upstream.py, run by a real `vllm-supervisor run` as its
engine; the gateway finds it through the admin socket, as in production. nginx (Debian's
nginx-light) runs from a config of its own in a temporary prefix: proxy_pass to the
upstream, `proxy_buffering off`, keep-alive. The client is raw asyncio (keep-alive
connections), the same for the three targets:
1. latency: 1-token completions one at a time, the targets interleaved; p50 and p99;
2. requests/s with 32 clients for --seconds each;
3. burst stream: one stream of --events events sent at once, events/s (median of 3), and the
   proxy's CPU (its processes' utime+stime) per 1,000 events;
4. paced stream: time to the first event of a stream whose events are 5 ms apart (median);
5. --streams paced streams at once (100 events each, 10 ms apart), as a GPU host serves
   them: each event comes alone, so this is the proxy's cost per read, in CPU per 1,000
   events (median of 3).
Every process started is killed by its group at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Conn:
    """One keep-alive HTTP/1.1 connection; reads content-length and chunked answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def post(self, body: dict[str, object]) -> tuple[int, float]:
        """(events, or 1 for a plain answer; seconds to its head, or to a stream's first
        event)."""
        data = json.dumps(body).encode()
        request = (
            b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(data), data)
        )
        for attempt in (1, 2):
            if self.w is None:
                self.r, self.w = await asyncio.open_connection(
                    "127.0.0.1", self.port, limit=1 << 20
                )
            assert self.r is not None
            t0 = time.perf_counter()
            self.w.write(request)
            try:
                head = await self.r.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closed an idle keep-alive connection: open another, as clients do.
                self.close()
                self.w = None
                if attempt == 2:
                    raise
        first = time.perf_counter() - t0
        lower = head.lower()
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head[:200])
        if b"transfer-encoding: chunked" not in lower:
            size = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            await self.r.readexactly(size)
            return 1, first
        events, first, tail = 0, 0.0, b""
        while True:
            size = int((await self.r.readline()).split(b";")[0], 16)
            if size == 0:
                await self.r.readline()
                return events, first
            payload = (await self.r.readexactly(size + 2))[:-2]
            # A proxy may cut an event across chunks: the tail (shorter than the marker)
            # finds a marker split between two, and never counts one twice.
            events += (tail + payload).count(b"data: ")
            tail = payload[-5:]
            first = first or time.perf_counter() - t0  # a stream: to its first event

    def close(self) -> None:
        if self.w is not None:
            self.w.close()


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICK


async def latency(ports: dict[str, int], n: int) -> dict[str, list[float]]:
    conns = {k: Conn(p) for k, p in ports.items()}
    out: dict[str, list[float]] = {k: [] for k in ports}
    body = {"model": "fast", "prompt": "Hi", "max_tokens": 1}
    for _ in range(n // 50):
        for k, c in conns.items():
            for _ in range(50):
                t0 = time.perf_counter()
                await c.post(body)
                out[k].append((time.perf_counter() - t0) * 1000)
    for c in conns.values():
        c.close()
    return out


async def rps(port: int, clients: int, seconds: float) -> float:
    body = {"model": "fast", "prompt": "Hi", "max_tokens": 1}
    done = 0
    stop = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal done
        c = Conn(port)
        while time.perf_counter() < stop:
            await c.post(body)
            done += 1
        c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    return done / (time.perf_counter() - t0)


async def burst(port: int, events: int, pids: list[int]) -> tuple[float, float]:
    """(events/s, proxy CPU ms per 1,000 events)."""
    c = Conn(port)
    cpu0, t0 = cpu_seconds(pids), time.perf_counter()
    got, _ = await c.post({"model": "fast", "prompt": "Hi", "max_tokens": events, "stream": True})
    took, cpu = time.perf_counter() - t0, cpu_seconds(pids) - cpu0
    c.close()
    assert got == events + 1, got  # every event and [DONE]
    return got / took, cpu * 1000 / got * 1000


async def many_paced(port: int, streams: int, events: int, pids: list[int]) -> float:
    """STREAMS streams at once, each of EVENTS events 10 ms apart (a GPU host's load: every
    stream's events come one at a time): the proxy's CPU ms per 1,000 events."""
    body = {"model": "fast", "prompt": "Hi", "max_tokens": events, "stream": True,
            "x_pace_ms": 10}  # fmt: skip

    async def one() -> int:
        c = Conn(port)
        got, _ = await c.post(body)
        c.close()
        return got

    cpu0 = cpu_seconds(pids)
    got = sum(await asyncio.gather(*(one() for _ in range(streams))))
    assert got == streams * (events + 1), got
    return (cpu_seconds(pids) - cpu0) * 1000 / got * 1000


async def first_event(port: int, n: int) -> float:
    c = Conn(port)
    body = {"model": "fast", "prompt": "Hi", "max_tokens": 20, "stream": True, "x_pace_ms": 5}
    firsts = []
    for _ in range(n):
        firsts.append((await c.post(body))[1])  # the same connection each time
    c.close()
    return statistics.median(firsts) * 1000


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing listens on {port}")
        time.sleep(0.1)


def nginx_conf(prefix: Path, listen: int, upstream: int) -> str:
    temps = " ".join(f"{k}_temp_path {prefix}/{k};" for k in ("client_body", "proxy"))
    return f"""daemon off; worker_processes 1; pid {prefix}/nginx.pid; error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
  access_log off; {temps} fastcgi_temp_path {prefix}/f; uwsgi_temp_path {prefix}/u;
  scgi_temp_path {prefix}/s;
  upstream engine {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 1000000; }}
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{listen};
    location / {{
      proxy_pass http://engine; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; proxy_request_buffering off;
    }}
  }}
}}
"""


def nginx_binary() -> str:
    """Debian's nginx. Not installed from here: its package starts a service on port 80
    (apt-get install nginx-light, with an exit-101 /usr/sbin/policy-rc.d to keep it off)."""
    for found in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if found and Path(found).exists():
            return found
    raise SystemExit("nginx is missing: apt-get install nginx-light (docs/performance.md)")


def group_pids(pgid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z" and int(fields[2]) == pgid:
                    out.append(int(p.name))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine-venv", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--events", type=int, default=200000)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--streams", type=int, default=200, help="paced streams at once")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    up, gw, ng = free_port(), free_port(), free_port()
    etc = tmp / "etc"
    etc.mkdir()
    (etc / "models.yaml").write_text(
        f"models:\n  fast:\n    model: {a.model}\n    port: {up}\n"
        f"    venv: {a.engine_venv}\n    offline: true\n"
        f"    entrypoint: ['{{python}}', '{ROOT / 'scripts/bench/relay_upstream.py'}']\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "daemon")}
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], log: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            argv,
            env=env,
            stdout=(tmp / log).open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(p)
        return p

    try:
        start(
            [
                sys.executable,
                "-m",
                "vllm_supervisor.cli",
                "run",
                "fast",
                "--config-dir",
                str(etc),
                "--state-dir",
                str(tmp / "state"),
                "--runtime-dir",
                str(tmp / "run"),
            ],
            "supervisor.log",
        )
        wait_port(up)
        gateway = start(
            [
                sys.executable,
                "-m",
                "vllm_supervisor.cli",
                "gateway",
                "--config-dir",
                str(etc),
                "--listen",
                f"127.0.0.1:{gw}",
                "--runtime-dir",
                str(tmp / "run"),
                "--admin-socket",
                str(tmp / "gw.sock"),
            ],
            "gateway.log",
        )
        prefix = tmp / "nginx"
        prefix.mkdir()
        (prefix / "nginx.conf").write_text(nginx_conf(prefix, ng, up))
        nginx = start(
            [nginx_binary(), "-p", str(prefix), "-c", str(prefix / "nginx.conf")], "nginx.log"
        )
        wait_port(gw)
        wait_port(ng)
        time.sleep(2)  # the supervisor's probes pass: the gateway sees the model ready
        ports = {"direct": up, "nginx": ng, "gateway": gw}
        pids = {"direct": [], "nginx": group_pids(nginx.pid), "gateway": [gateway.pid]}
        asyncio.run(latency(ports, 100))  # warm every path
        lat = asyncio.run(latency(ports, a.requests))
        rates = {k: asyncio.run(rps(p, 32, a.seconds)) for k, p in ports.items()}
        bursts: dict[str, list[tuple[float, float]]] = {k: [] for k in ports}
        for _ in range(3):
            for k, p in ports.items():
                bursts[k].append(asyncio.run(burst(p, a.events, pids[k])))
        firsts = {k: asyncio.run(first_event(p, 20)) for k, p in ports.items()}
        paced = {k: [asyncio.run(many_paced(ports[k], a.streams, 100, pids[k])) for _ in range(3)]
                 for k in ("nginx", "gateway")}  # fmt: skip
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        deadline = time.monotonic() + 10  # a killed group takes a moment to be reaped
        while (left := [q for p in procs for q in group_pids(p.pid)]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        # The upstream runs in its own group under the supervisor's warden, which ends it
        # when the supervisor dies: nothing may listen on its port any more.
        while listening(up) and time.monotonic() < deadline:
            time.sleep(0.1)
        left += [f"upstream on {up}"] if listening(up) else []
    p50 = {k: statistics.median(v) for k, v in lat.items()}
    p99 = {k: statistics.quantiles(v, n=100)[98] for k, v in lat.items()}
    ev = {k: statistics.median(x[0] for x in v) for k, v in bursts.items()}
    cpu = {k: statistics.median(x[1] for x in v) for k, v in bursts.items()}
    many = {k: statistics.median(v) for k, v in paced.items()}
    proxies = ("nginx", "gateway")

    def row(label: str, values: dict[str, float], fmt: str = ".3f") -> None:
        """One line of the table: LABEL, then a value per target (blank where none)."""
        cells = (format(values[k], fmt) if k in values else "" for k in ports)
        print(f"{label:34}" + "".join(f"{c:>10}" for c in cells))

    def against(values: dict[str, float]) -> dict[str, float]:
        return {k: values[k] / values["direct"] for k in proxies}

    print(f"{'':34}" + "".join(f"{k:>10}" for k in ports))
    row("p50 latency, ms", p50)
    row("p99 latency, ms", p99)
    row("p50 added over direct, ms", {k: p50[k] - p50["direct"] for k in proxies})
    row("requests/s at 32 clients", rates, ".0f")
    row("  against direct", against(rates), ".2f")
    row("burst stream, events/s", ev, ".0f")
    row("  against direct", against(ev), ".2f")
    row("proxy CPU per 1,000 events, ms", {k: cpu[k] for k in proxies}, ".2f")
    row(f"{a.streams} paced streams: CPU/1,000 ev", many, ".2f")
    row("paced stream, first event, ms", firsts, ".2f")
    added = {k: p50[k] - p50["direct"] for k in proxies}
    print(
        f"goals (issue 23): p50 added <= 2x nginx's: "
        f"{added['gateway'] / max(added['nginx'], 1e-9):.2f}x; "
        f"rps >= 0.8x direct: {rates['gateway'] / rates['direct']:.2f}x; "
        f"burst >= 1.0x direct: {ev['gateway'] / ev['direct']:.2f}x; "
        f"CPU/event <= 2x nginx's: {cpu['gateway'] / max(cpu['nginx'], 1e-9):.2f}x burst, "
        f"{many['gateway'] / max(many['nginx'], 1e-9):.2f}x paced"
    )
    print(f"processes left: {left or 'none'}")


if __name__ == "__main__":
    main()
