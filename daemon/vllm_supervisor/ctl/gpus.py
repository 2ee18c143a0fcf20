"""`vllmctl gpus`: each GPU with its memory and every process that holds some: its user, and
which model it belongs to, or whether it is an orphaned vLLM engine or a foreign process."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vllm_supervisor import exitcodes
from vllm_supervisor.ctl.client import Client, CtlError, running_models
from vllm_supervisor.gpu.holders import PROC, Process, owner_groups, processes
from vllm_supervisor.gpu.nvml import Gpus, open_gpus
from vllm_supervisor.host.locations import runtime_dirs

GIB = 1024**3
LABEL = {"orphan": "ORPHANED vLLM engine", "foreign": "foreign process"}


def engine_groups(bases: list[Path]) -> dict[int, str]:
    """Engine process group -> model, for every instance that answers here. An instance's
    `pid` is its warden, which leads the engine's group (runtime/process.py)."""
    groups: dict[int, str] = {}
    for name in running_models(bases):
        try:
            pid = Client(bases, name, timeout=3).get_json("/v1/state").get("pid")
        except CtlError:
            continue
        if isinstance(pid, int):
            groups[pid] = name
    return groups


def gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f}G"


def cmd_gpus(args: argparse.Namespace, gpus: Gpus | None = None, proc: Path = PROC) -> int:
    gpus = gpus or open_gpus()
    if not gpus.available:
        if args.json:
            print(json.dumps({"gpus": [], "reason": gpus.reason}))
        else:
            print(f"vllmctl: {gpus.reason}")
        return exitcodes.OK  # a host without a GPU is not an error
    bases = [Path(args.socket_dir)] if args.socket_dir else runtime_dirs()
    # Whose group: what /proc says (our warden leads it), and what the instances answer.
    pids = [h.pid for d in gpus.devices() for h in gpus.holders(d.index)]
    held = processes(gpus, {**owner_groups(pids, proc), **engine_groups(bases)}, proc)
    devices = gpus.devices()
    if args.json:
        out: list[dict[str, Any]] = [
            {"index": d.index, "uuid": d.uuid, "name": d.name, "total": d.total, "used": d.used,
             "processes": [p.as_dict() for p in held if p.gpu == d.index]}
            for d in devices
        ]  # fmt: skip
        print(json.dumps({"gpus": out}, indent=2))
        return exitcodes.OK
    for d in devices:
        print(f"GPU {d.index}  {d.name}  {d.uuid}  {gib(d.used)} / {gib(d.total)} used")
        mine = [p for p in held if p.gpu == d.index]
        if not mine:
            print("  no process holds memory")
        for p in mine:
            print(f"  {p.pid:>8}  {p.user:<10} {gib(p.used):>7}  {owner(p):<22} {p.command[:60]}")
    return exitcodes.OK


def owner(p: Process) -> str:
    return f"model {p.model}" if p.kind == "model" else LABEL[p.kind]
