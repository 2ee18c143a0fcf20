"""Run the real `vllm-supervisor run` as a subprocess, with a NOTIFY_SOCKET listener."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from vllm_supervisor.runtime.process import proc_stats

from tests.procs import group_members


class NotifyListener:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536).decode("utf-8")
            except (TimeoutError, OSError):
                continue
            fields = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def count(self, key: str) -> int:
        return sum(1 for _, m in self.messages if key in m)

    def first(self, key: str) -> float | None:
        return next((t for t, m in self.messages if key in m), None)

    def close(self) -> None:
        self._stop = True
        self._t.join(timeout=2)
        self.sock.close()


class SupervisorProc:
    port = 0  # the engine's port, where a test sets one

    def __init__(
        self,
        model: str,
        config_dir: Path,
        tmp: Path,
        stdout_to_file: bool = True,
        extra_env: dict[str, str] | None = None,
        runtime_dir: Path | None = None,
        args: tuple[str, ...] = (),
        wrap: tuple[str, ...] = (),
    ) -> None:
        """WRAP: a command that execs the supervisor (`ip netns exec NS`: another host)."""
        tmp.mkdir(parents=True, exist_ok=True)
        self.notify = NotifyListener(tmp / "notify.sock")
        self.state_dir = tmp / "state"
        self.runtime_dir = runtime_dir or tmp / "run"
        self.config_dir = config_dir
        self.model = model
        self.log = tmp / "supervisor.log"
        env = {**os.environ, "NOTIFY_SOCKET": self.notify.path, **(extra_env or {})}
        out = self.log.open("wb") if stdout_to_file else subprocess.DEVNULL
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                *wrap,
                sys.executable,
                "-m",
                "vllm_supervisor.cli",
                "run",
                model,
                "--config-dir",
                str(config_dir),
                "--state-dir",
                str(self.state_dir / model),
                "--runtime-dir",
                str(self.runtime_dir),
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        if stdout_to_file:
            out.close()  # type: ignore[union-attr]
        self.engine_groups: set[int] = set()

    @property
    def socket(self) -> Path:
        return self.runtime_dir / self.model / "admin.sock"

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run vllmctl against this instance, as an operator would."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "vllm_supervisor.ctl.main",
                *args,
                "--socket-dir",
                str(self.runtime_dir),
                "--config-dir",
                str(self.config_dir),
                "--state-dir",
                str(self.state_dir),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, key: str, n: int = 1, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.notify.count(key) < n:
            self.track()
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(
                    f"no {n}x {key} (exit {self.proc.poll()}):\n" + self.text()[-4000:]
                )
            time.sleep(0.05)
        self.track()

    def track(self) -> None:
        """Remember every engine group (the warden leads it; it is our direct child). A child
        seen between fork and its setsid (subprocess's start_new_session) is still in the
        supervisor's own group: that group is not an engine's, or members() would count the
        supervisor itself (cleanup() kills it anyway)."""
        for _, _, ppid, pgid in proc_stats():
            if ppid == self.proc.pid and pgid != self.proc.pid:
                self.engine_groups.add(pgid)

    def members(self) -> list[int]:
        return [p for g in self.engine_groups for p in group_members(g)]

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def cleanup(self) -> list[int]:
        """Kill the supervisor's and every engine group; return what is left (want [])."""
        self.track()
        for g in {self.proc.pid, *self.engine_groups}:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(g, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.notify.close()
        deadline = time.monotonic() + 10
        left = self.members() + group_members(self.proc.pid)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.members() + group_members(self.proc.pid)
        return left


def wait_gone(groups: set[int], timeout: float) -> float:
    """Seconds until no process of these groups is alive; raises after timeout."""
    t0 = time.monotonic()
    while any(group_members(g) for g in groups):
        if time.monotonic() - t0 > timeout:
            raise AssertionError(
                f"still alive after {timeout} s: {[group_members(g) for g in groups]}"
            )
        time.sleep(0.02)
    return time.monotonic() - t0
