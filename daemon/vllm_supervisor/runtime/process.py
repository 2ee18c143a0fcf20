"""Spawn the engine in its own process group, pump its output line by line, stop the whole
group in two stages, and prove that nothing of it is left.

The direct child is our warden (warden.py), which leads the group and takes the group down
if the supervisor dies. vLLM swallows SIGTERM while loading (docs/vllm-behaviour.md), so a
stop always ends with SIGKILL to the group when the grace period runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_LINE = 16 * 1024  # longer lines are cut, not fatal (a traceback with a huge repr, say)
CHUNK = 1024 * 1024
CUT = " …[line cut]"
# The pump reads, handles the batch, then waits this long so the next read finds a batch, not
# one 4 KiB write: without it a flood costs one event-loop wake-up per write and slows the
# engine 2-4x (scripts/bench/log_pump.py). A log line is seen at most this much later.
BATCH_WAIT = 0.001
PIPE_SIZE = 1024 * 1024  # fcntl(2) F_SETPIPE_SZ: room for ~1 ms of a flood

WARDEN = "vllm_supervisor.runtime.warden"  # run by module path: moves with warden.py (tested)
ENGINE_PYTHONPATH = "VSUP_ENGINE_PYTHONPATH"  # warden.py reads it: keep the two in step


@dataclass(frozen=True)
class Exit:
    code: int | None  # exit code, or None when killed by a signal
    signal: int | None

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by {signal.Signals(self.signal).name}"
        return f"exited with code {self.code}"


def proc_stats(proc: Path = Path("/proc")) -> Iterator[tuple[int, str, int, int]]:
    """(pid, state, ppid, pgid) of every process, from /proc/PID/stat (proc(5)). The command
    name can hold spaces and ')': the fields start after its last ')'."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        rest = stat[stat.rindex(")") + 2 :].split()
        yield int(entry.name), rest[0], int(rest[1]), int(rest[2])


def group_members(pgid: int) -> list[int]:
    """Live PIDs in process group pgid (zombies excluded: they hold nothing but a PID)."""
    return [pid for pid, state, _, group in proc_stats() if group == pgid and state != "Z"]


class Engine:
    """One running engine group. Created by spawn(); the supervisor owns it."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        read_fd: int,
        on_lines: Callable[[list[str], str], None],
    ) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pgid = proc.pid  # the warden was started with setsid: it leads the group
        self._pump = asyncio.ensure_future(pump(read_fd, on_lines))

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


async def spawn(
    argv: Sequence[str], env: dict[str, str], on_lines: Callable[[list[str], str], None]
) -> Engine:
    warden = [sys.executable, "-m", WARDEN, str(os.getpid()), "--", *argv]
    # Run the warden from the supervisor's own import path, wherever it was installed or
    # checked out: the folder that holds the package (it named the package's own folder,
    # which only an installed package made up for). The engine gets ENV as it was given:
    # the warden hands the original PYTHONPATH back (warden.ENGINE_PYTHONPATH).
    pkg_root = str(Path(__file__).resolve().parents[2])
    wenv = dict(env)
    wenv["PYTHONPATH"] = pkg_root + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    wenv[ENGINE_PYTHONPATH] = env.get("PYTHONPATH", "")
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # capped by /proc/sys/fs/pipe-max-size: best effort
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    try:
        proc = await asyncio.create_subprocess_exec(
            *warden,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_end,
            stderr=write_end,
            env=wenv,
            start_new_session=True,
        )
    finally:
        os.close(write_end)  # only the child keeps the write end: EOF when the group is gone
    return Engine(proc, read_end, on_lines)


async def pump(fd: int, on_lines: Callable[[list[str], str], None]) -> None:
    """Read the engine's output straight from the pipe in large chunks, so the child never
    waits on a full pipe, and hand over whole lines in batches: on_lines(lines, text) with
    text == "\n".join(lines), so callers scan a batch with one substring check instead of
    one per line. Lines longer than MAX_LINE are cut. Closes fd."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    on_lines = _Guarded(on_lines)
    partial = b""
    skipping = False  # inside a line that was already cut
    try:
        while True:
            await _readable(loop, fd)
            # Let a burst accumulate: one wake-up per batch, not per 4 KiB write (BATCH_WAIT).
            await asyncio.sleep(BATCH_WAIT)
            data, eof = _read_available(fd)
            if data:
                partial, skipping = _split(partial + data, skipping, on_lines)
            if eof:
                if partial and not skipping:
                    _emit([_decode(partial)], on_lines)
                return
    finally:
        loop.remove_reader(fd)
        os.close(fd)


class _Guarded:
    """on_lines, but a fault in it is said once on stderr (journald, as err) and the reading
    goes on. A pump that stopped closes its end of the pipe: the engine's next log write fails
    with EPIPE (a Python child ends with code 120; tests/runtime/test_process.py), and the
    exception would end the supervisor at the next stop (_drain)."""

    def __init__(self, on_lines: Callable[[list[str], str], None]) -> None:
        self.on_lines = on_lines
        self.failed = 0

    def __call__(self, lines: list[str], text: str) -> None:
        try:
            self.on_lines(lines, text)
        except Exception:  # any fault: the pipe must still be read
            self.failed += 1
            if self.failed == 1:
                trace = traceback.format_exc().rstrip("\n").split("\n")
                sys.stderr.write(
                    "<3>log pump: handling the engine's lines failed; lines are dropped where "
                    "it fails again, reading goes on\n" + "".join(f"<3>  {t}\n" for t in trace)
                )


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """One-shot wait for fd to be readable. A reader left registered would fire again and
    again while the pump waits for a batch (epoll is level-triggered)."""
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        loop.remove_reader(fd)
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


def _read_available(fd: int) -> tuple[bytes, bool]:
    parts: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, CHUNK)
        except BlockingIOError:
            return b"".join(parts), False
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        if len(chunk) < CHUNK:
            return b"".join(parts), False


def _split(
    data: bytes, skipping: bool, on_lines: Callable[[list[str], str], None]
) -> tuple[bytes, bool]:
    """Emit the complete lines in data; return the unfinished tail and the skipping flag."""
    cut = data.rfind(b"\n")
    if cut < 0:
        if skipping:
            return b"", True
        if len(data) > MAX_LINE:
            _emit([_decode(data[:MAX_LINE]) + CUT], on_lines)
            return b"", True
        return data, False
    lines = data[:cut].decode("utf-8", errors="replace").split("\n")
    if skipping:  # the rest of a cut line ends at the first newline
        lines = lines[1:]
    if lines:
        _emit(lines, on_lines)
    return data[cut + 1 :], False


def _emit(lines: list[str], on_lines: Callable[[list[str], str], None]) -> None:
    if max(map(len, lines)) > MAX_LINE:
        lines = [ln if len(ln) <= MAX_LINE else ln[:MAX_LINE] + CUT for ln in lines]
    text = "\n".join(lines)
    if "\r" in text:  # progress bars and CRLF output: one scan of the batch decides
        lines = [ln.rstrip("\r") for ln in lines]
        text = "\n".join(lines)
    on_lines(lines, text)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")
