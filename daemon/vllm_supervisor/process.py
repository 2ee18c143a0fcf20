"""Spawn the engine in its own process group, pump its output line by line, stop the whole
group in two stages, and prove that nothing of it is left.

The direct child is our warden (warden.py), which leads the group and takes the group down
if the supervisor dies. vLLM swallows SIGTERM while loading (notes/vllm-behaviour.md), so a
stop always ends with SIGKILL to the group when the grace period runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_LINE = 16 * 1024  # longer lines are cut, not fatal (a traceback with a huge repr, say)
READ_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Exit:
    code: int | None  # exit code, or None when killed by a signal
    signal: int | None

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by {signal.Signals(self.signal).name}"
        return f"exited with code {self.code}"


def group_members(pgid: int, proc: Path = Path("/proc")) -> list[int]:
    """Live PIDs in process group pgid (zombies excluded: they hold nothing but a PID)."""
    out = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        if int(rest[2]) == pgid and rest[0] != "Z":
            out.append(int(entry.name))
    return out


class Engine:
    """One running engine group. Created by spawn(); the supervisor owns it."""

    def __init__(self, proc: asyncio.subprocess.Process, on_line: Callable[[str], None]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pgid = proc.pid  # the warden was started with setsid: it leads the group
        self.started = time.monotonic()
        self._on_line = on_line
        assert proc.stdout is not None
        self._pump = asyncio.ensure_future(pump(proc.stdout, on_line))
        self.lines = 0

    async def wait(self) -> Exit:
        """Returns when the warden (so the API server) exits: at once, not when the pipe
        closes, since an orphaned EngineCore can hold the pipe open for a long time."""
        rc = await self.proc.wait()
        return Exit(rc, None) if rc >= 0 else Exit(None, -rc)

    async def _drain(self) -> None:
        """After the group is dead the pipe closes: read what is left (the fatal lines are
        last), bounded in case something outside the group still holds the pipe."""
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._pump), timeout=2.0)
        self._pump.cancel()

    def signal_group(self, sig: int) -> bool:
        try:
            os.killpg(self.pgid, sig)
            return True
        except ProcessLookupError:
            return False

    async def stop(self, grace: float) -> tuple[bool, list[int]]:
        """SIGTERM the group, wait up to `grace`, then SIGKILL it. Returns (escalated, left):
        left lists PIDs of the group still alive after SIGKILL (want [])."""
        escalated = False
        self.signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), timeout=grace)
        except TimeoutError:
            escalated = True
        # Always SIGKILL the rest of the group: the API server can exit while EngineCore and
        # workers live on (a killed server leaves them reparented, holding memory).
        self.signal_group(signal.SIGKILL)
        await self.proc.wait()
        left = await reap_check(self.pgid)
        await self._drain()
        return escalated, left

    async def kill(self) -> list[int]:
        self.signal_group(signal.SIGKILL)
        await self.proc.wait()
        left = await reap_check(self.pgid)
        await self._drain()
        return left


async def reap_check(pgid: int, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    left = group_members(pgid)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        left = group_members(pgid)
    return left


async def spawn(argv: Sequence[str], env: dict[str, str],
                on_line: Callable[[str], None]) -> Engine:
    warden = [sys.executable, "-m", "vllm_supervisor.warden", str(os.getpid()), "--", *argv]
    # Run the warden from the supervisor's own import path, wherever it was installed.
    pkg_root = str(Path(__file__).resolve().parent.parent)
    wenv = dict(env)
    wenv["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    proc = await asyncio.create_subprocess_exec(
        *warden, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=wenv, start_new_session=True, limit=READ_LIMIT)
    return Engine(proc, on_line)


async def pump(reader: asyncio.StreamReader, on_line: Callable[[str], None]) -> None:
    """Read lines as fast as they come, so the child never blocks on a full pipe; cut lines
    longer than MAX_LINE instead of failing on them."""
    while True:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                on_line(_decode(exc.partial))
            return
        except asyncio.LimitOverrunError as exc:
            raw = await reader.readexactly(exc.consumed)
            on_line(_decode(raw[:MAX_LINE]) + " …[line cut]")
            await _skip_to_newline(reader)
            continue
        on_line(_decode(raw[:MAX_LINE]) + (" …[line cut]" if len(raw) > MAX_LINE + 1 else ""))


async def _skip_to_newline(reader: asyncio.StreamReader) -> None:
    while True:
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.LimitOverrunError as exc:
            await reader.readexactly(exc.consumed)
        except asyncio.IncompleteReadError:
            return


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")
