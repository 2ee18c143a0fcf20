"""P1 readiness lag, P2 death detection, P3 recovery vs cold start, side by side in one run.

    python scripts/bench/lifecycle.py --engine-venv V --model TINY_MODEL_DIR

A: the bare engine (the same rendered command, no supervisor), /health polled every 10 ms:
   the cold start an operator with a shell script gets.
B: `vllm-supervisor run`, with /health polled every 10 ms beside it and a NOTIFY_SOCKET
   listener. P1 = READY=1 - first /health 200 (the probes included). Then kill -9 of
   VLLM::EngineCore: P2 = STATUS "restarting" - kill; P3 = second READY=1 - kill, vs A.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.engine.detect import detect
from vllm_supervisor.preflight.render import render
from vllm_supervisor.runtime.process import group_members as group
from vllm_supervisor.runtime.process import proc_stats


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def first_200(p: int, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{p}/health", timeout=1) as r:
                if r.status == 200:
                    out.append(time.monotonic())
                    return
        except OSError:
            pass
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine-venv", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "etc").mkdir()
    p = port()
    (tmp / "etc" / "models.yaml").write_text(
        f"models:\n  tiny:\n    model: {a.model}\n    port: {p}\n    venv: {a.engine_venv}\n"
        "    offline: true\n    env: {VLLM_CPU_KVCACHE_SPACE: '1'}\n"
        "    engine: {dtype: float32, max_model_len: 1024, enforce_eager: true}\n"
        "    restart: {backoff_initial: 0.1}\n"
    )
    cfg = load_registry(tmp / "etc").models["tiny"]
    cmd = render(cfg, detect(cfg.venv))

    # A: bare engine
    seen: list[float] = []
    stop = threading.Event()
    t0 = time.monotonic()
    bare = subprocess.Popen(
        list(cmd.argv),
        env=cmd.child_env(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    first_200(p, stop, seen)
    cold = seen[0] - t0
    os.killpg(bare.pid, signal.SIGKILL)
    bare.wait()
    while group(bare.pid):
        time.sleep(0.05)

    # B: supervised
    sock_path = str(tmp / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    msgs: list[tuple[float, str]] = []

    def listen() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                msgs.append((time.monotonic(), sock.recv(65536).decode()))
            except OSError:
                continue

    threading.Thread(target=listen, daemon=True).start()
    seen.clear()
    t0 = time.monotonic()
    sup = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm_supervisor.cli",
            "run",
            "tiny",
            "--config-dir",
            str(tmp / "etc"),
            "--state-dir",
            str(tmp / "st"),
        ],
        env={**os.environ, "NOTIFY_SOCKET": sock_path},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    poll = threading.Thread(target=first_200, args=(p, stop, seen))
    poll.start()

    def ready_times() -> list[float]:
        return [t for t, m in msgs if "READY=1" in m]

    while not ready_times():
        time.sleep(0.01)
    poll.join()
    p1 = ready_times()[0] - seen[0]
    sup_cold = ready_times()[0] - t0
    core = next(
        pid
        for pgid in {os.getpgid(c) for c in _children(sup.pid)}
        for pid in group(pgid)
        if Path(f"/proc/{pid}/comm").read_text().startswith("VLLM::EngineCor")
    )
    tk = time.monotonic()
    os.kill(core, signal.SIGKILL)
    while len(ready_times()) < 2:
        time.sleep(0.01)
    p2 = next(t for t, m in msgs if t > tk and "STATUS=restarting" in m) - tk
    p3 = ready_times()[1] - tk
    sup.send_signal(signal.SIGTERM)
    sup.wait(timeout=60)
    stop.set()
    print("vLLM engine: " + detect(cfg.venv).label + ", tiny model, CPU, --enforce-eager")
    print(f"A  bare engine cold start (spawn -> /health 200, 10 ms poll)  {cold:7.2f} s")
    print(
        f"B  supervised cold start (spawn -> READY=1)                 {sup_cold:7.2f} s"
        f"   x{sup_cold / cold:.2f} of A"
    )
    print(f"P1 readiness lag (/health 200 -> READY=1, probes included)  {p1 * 1000:7.0f} ms")
    print(f"P2 detection (kill -9 EngineCore -> restarting)             {p2 * 1000:7.0f} ms")
    print(
        f"P3 recovery (kill -9 -> READY=1 again)                      {p3:7.2f} s"
        f"   x{p3 / cold:.2f} of A"
    )


def _children(pid: int) -> list[int]:
    return [p for p, _, ppid, _ in proc_stats() if ppid == pid]


if __name__ == "__main__":
    main()
