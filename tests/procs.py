"""Start children in their own process group; kill the whole group; prove nothing is left.

vLLM's API server forks VLLM::EngineCore and VLLM::Worker into its process group, and a kill
of the parent alone leaves them running (docs/vllm-behaviour.md), so tests kill by group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from vllm_supervisor.runtime.process import group_members, proc_stats

__all__ = ["descendants", "group_members", "kill_group"]


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
    table = {pid: (ppid, pgid) for pid, state, ppid, pgid in proc_stats() if state != "Z"}
    out: dict[int, int] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        if pid in table:
            out[pid] = table[pid][1]
        frontier += [p for p, (ppid, _) in table.items() if ppid == pid and p not in out]
    return out
