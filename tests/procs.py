"""Start children in their own process group; kill the whole group; prove nothing is left.

vLLM's API server forks VLLM::EngineCore and VLLM::Worker into its process group, and a kill
of the parent alone leaves them running (notes/vllm-behaviour.md), so tests kill by group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def group_members(pgid: int) -> list[int]:
    """PIDs whose process group is pgid, read from /proc/PID/stat (field 5)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[0] is state; a zombie has released everything but its table entry.
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> list[int]:
    """SIGKILL the child's whole group, reap it, and return what is still alive (want [])."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    left = group_members(pgid)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = group_members(pgid)
    return left


def descendants(root: int) -> dict[int, int]:
    """{pid: pgid} of every live descendant of root (and root itself)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        if rest[0] != "Z":
            table[int(entry.name)] = (int(rest[1]), int(rest[2]))
    out: dict[int, int] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        if pid in table:
            out[pid] = table[pid][1]
        frontier += [p for p, (ppid, _) in table.items() if ppid == pid and p not in out]
    return out
