"""Who holds GPU memory: for each process NVML lists, its user, its command, and which of our
models it belongs to, if any.

An engine belongs to a model when its process group is that model's engine group (the warden
leads it: runtime/process.py). A `VLLM::` process (vLLM names its EngineCore and workers so)
in no model's group is an orphan: vLLM leaves them when its API server is killed
(docs/vllm-behaviour.md) and they keep the memory. Anything else is a foreign holder.
"""

from __future__ import annotations

import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vllm_supervisor.gpu.nvml import Gpus, Holder

Kind = Literal["model", "orphan", "foreign"]
PROC = Path("/proc")


@dataclass(frozen=True)
class Process:
    gpu: int
    pid: int
    used: int | None  # bytes
    user: str
    command: str
    kind: Kind
    model: str | None  # set when kind is "model"

    def as_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "pid": self.pid, "used": self.used, "user": self.user,
                "command": self.command, "kind": self.kind, "model": self.model}  # fmt: skip


def pgid_of(pid: int, proc: Path = PROC) -> int | None:
    try:
        # /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces and ')'.
        fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def command_of(pid: int, proc: Path = PROC) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or "?"


def user_of(pid: int, proc: Path = PROC) -> str:
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
                try:
                    return pwd.getpwuid(uid).pw_name
                except KeyError:
                    return str(uid)
    except (OSError, ValueError, IndexError):
        pass
    return "?"


WARDEN_MARK = "vllm_supervisor.runtime.warden"


def owner_model(pgid: int, proc: Path = PROC) -> str | None:
    """The model whose engine group PGID is: the group's leader is our warden
    (`python -m vllm_supervisor.runtime.warden SUPERVISOR_PID -- ...`), and that supervisor
    runs `vllm-supervisor run MODEL`. Read from /proc, so it needs no admin socket."""
    try:
        argv = (proc / str(pgid) / "cmdline").read_bytes().split(b"\0")
        at = argv.index(WARDEN_MARK.encode())
        sup = (proc / argv[at + 1].decode() / "cmdline").read_bytes().split(b"\0")
        return sup[sup.index(b"run") + 1].decode() or None
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def owner_groups(pids: list[int], proc: Path = PROC) -> dict[int, str]:
    """Engine process group -> model, for the groups these processes are in."""
    out: dict[int, str] = {}
    for pid in pids:
        pgid = pgid_of(pid, proc)
        if pgid is not None and pgid not in out:
            model = owner_model(pgid, proc)
            if model:
                out[pgid] = model
    return out


def classify(gpu: int, holder: Holder, groups: Mapping[int, str], proc: Path = PROC) -> Process:
    """GROUPS: engine process group id -> model name, for the models running here."""
    command = command_of(holder.pid, proc)
    model = groups.get(pgid_of(holder.pid, proc) or -1)
    kind: Kind = "model" if model else "orphan" if command.startswith("VLLM::") else "foreign"
    return Process(gpu, holder.pid, holder.used, user_of(holder.pid, proc), command, kind, model)


def processes(
    gpus: Gpus, groups: Mapping[int, str] | None = None, proc: Path = PROC
) -> list[Process]:
    """Every holder on every GPU, classified. GROUPS (engine group -> model) defaults to what
    /proc says about the holders' groups (owner_model)."""
    held = [(d.index, h) for d in gpus.devices() for h in gpus.holders(d.index)]
    if groups is None:
        groups = owner_groups([h.pid for _, h in held], proc)
    return [classify(index, h, groups, proc) for index, h in held]


def group_holders(gpus: Gpus, pgid: int, proc: Path = PROC) -> list[tuple[int, Holder]]:
    """(GPU index, holder) for the processes of one process group (a model's engine)."""
    return [
        (d.index, h)
        for d in gpus.devices()
        for h in gpus.holders(d.index)
        if pgid_of(h.pid, proc) == pgid
    ]


def group_memory(gpus: Gpus, pgid: int, proc: Path = PROC) -> dict[int, int]:
    """Bytes per GPU held by the processes of one process group."""
    out: dict[int, int] = {}
    for index, h in group_holders(gpus, pgid, proc):
        out[index] = out.get(index, 0) + (h.used or 0)
    return out
