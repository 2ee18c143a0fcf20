"""Run the real `vllm-supervisor gateway` as a subprocess, and the fake-engine instances it
fronts (tests/e2e/test_gateway.py, tests/e2e/test_gateway_real_engine.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.supervisor_proc import NotifyListener
from tests.procs import group_members


class GatewayProc:
    def __init__(
        self,
        config_dir: Path,
        runtime_dir: Path,
        port: int,
        tmp: Path,
        host: str = "127.0.0.1",
        wrap: tuple[str, ...] = (),
    ) -> None:
        """HOST: where clients reach it (it listens on every address when not loopback);
        WRAP: a command that execs it (`ip netns exec NS`: on another host)."""
        tmp.mkdir(parents=True, exist_ok=True)
        self.port, self.log, self.host = port, tmp / "gateway.log", host
        listen = host if host.startswith("127.") else "0.0.0.0"
        self.admin_socket = tmp / "admin.sock"
        self.notify = NotifyListener(tmp / "notify.sock")
        env = {**os.environ, "NOTIFY_SOCKET": self.notify.path}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    *wrap,
                    sys.executable,
                    "-m",
                    "vllm_supervisor.cli",
                    "gateway",
                    "--config-dir",
                    str(config_dir),
                    "--listen",
                    f"{listen}:{port}",
                    "--runtime-dir",
                    str(runtime_dir),
                    "--admin-socket",
                    str(self.admin_socket),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.notify.count("READY") < 1:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"gateway not ready (exit {self.proc.poll()}):\n{self.text()}")
            time.sleep(0.05)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def models(self) -> dict[str, dict[str, Any]]:
        """/v1/models' extension field, per model (state, in_flight, queued, ...)."""
        with urllib.request.urlopen(self.url + "/v1/models", timeout=10) as r:
            data = json.load(r)["data"]
        return {m["x_vllm_supervisor"]["model"]: m["x_vllm_supervisor"] for m in data}

    def cleanup(self) -> list[int]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.notify.close()
        return group_members(self.proc.pid)


class Answer:
    def __init__(self, status: int, data: bytes) -> None:
        self.status, self.data = status, data

    def json(self) -> Any:
        return json.loads(self.data)


class Http:
    """Plain HTTP for the tests (the standard library's): any status comes back, no raise."""

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return Answer(r.status, r.read())
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.read())
