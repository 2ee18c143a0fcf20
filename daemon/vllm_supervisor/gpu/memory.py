"""GPU memory decisions around an engine's life, pure over a `Gpus` view (tests use recorded
answers):

- before a start: vLLM refuses to start when a GPU's free memory is below
  gpu_memory_utilization x total ("Free memory on device ... is less than desired GPU memory
  utilization", vllm/v1/worker/gpu_worker.py), deep in its start. Check that first, and name
  who holds the memory;
- after a stop: the driver frees an engine's memory only once its processes are gone, and an
  orphaned EngineCore keeps it (docs/vllm-behaviour.md). Wait, with a bound, until no process
  of the old group holds memory and 75% of what it held is free again (Ollama polls every
  250 ms for the same 75%).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vllm_supervisor.gpu.holders import PROC, Process, group_holders, group_memory, processes
from vllm_supervisor.gpu.nvml import Device, Gpus

GIB = 1024**3
POLL = 0.25  # seconds between NVML reads while waiting for memory to come back
RELEASE_SHARE = 0.75  # of what the group held


@dataclass(frozen=True)
class Shortfall:
    device: Device
    needed: int  # bytes: gpu_memory_utilization x total
    holders: tuple[Process, ...]

    def describe(self) -> str:
        d = self.device
        who = ", ".join(_holder(p) for p in self.holders) or "no process NVML can see"
        return (
            f"GPU {d.index} has {d.free / GIB:.1f} GiB free; the model needs "
            f"{self.needed / GIB:.1f} GiB (gpu_memory_utilization x {d.total / GIB:.1f} GiB). "
            f"Held by: {who}"
        )


def _holder(p: Process) -> str:
    what = f"model {p.model}" if p.kind == "model" else (
        "orphaned vLLM engine" if p.kind == "orphan" else f"{p.user}'s {p.command[:40]}"
    )  # fmt: skip
    size = "?" if p.used is None else f"{p.used / GIB:.1f} GiB"
    return f"pid {p.pid} ({what}, {size})"


def shortfalls(
    gpus: Gpus,
    indexes: Sequence[int],
    utilization: float,
    groups: dict[int, str] | None = None,
    proc: Path = PROC,
) -> list[Shortfall]:
    """The model's GPUs whose free memory is below what vLLM will ask for."""
    if not gpus.available or not indexes:
        return []
    held = processes(gpus, groups, proc)
    out = []
    for d in gpus.devices():
        needed = int(utilization * d.total)
        if d.index in indexes and d.free < needed:
            out.append(Shortfall(d, needed, tuple(p for p in held if p.gpu == d.index)))
    return out


def start_fix(found: Sequence[Shortfall]) -> str:
    kinds = {p.kind for s in found for p in s.holders}
    models = sorted({p.model for s in found for p in s.holders if p.model})
    steps = []
    if models:
        steps.append("deactivate " + ", ".join(models) + " (vllmctl deactivate, or --swap)")
    if "orphan" in kinds:
        steps.append("kill the orphaned vLLM engine (vllmctl gpus lists it)")
    if "foreign" in kinds or not kinds:
        steps.append("stop the other process (vllmctl gpus lists it)")
    steps.append("or lower engine.gpu_memory_utilization")
    return "; ".join(steps)


@dataclass(frozen=True)
class Held:
    """What one engine group held when its stop began."""

    pgid: int
    per_gpu: dict[int, int]  # bytes
    free_before: dict[int, int]  # bytes free on those GPUs then


def held_by(gpus: Gpus, pgid: int, proc: Path = PROC) -> Held:
    if not gpus.available:
        return Held(pgid, {}, {})
    per_gpu = {i: n for i, n in group_memory(gpus, pgid, proc).items() if n}
    free = {d.index: d.free for d in gpus.devices() if d.index in per_gpu}
    return Held(pgid, per_gpu, free)


async def wait_released(
    gpus: Gpus,
    held: Held,
    bound: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    proc: Path = PROC,
) -> str | None:
    """None once the group holds nothing and 75% of its memory is free again; else, after
    BOUND seconds, what still holds it."""
    if not gpus.available or not held.per_gpu:
        return None
    deadline = clock() + bound
    while True:
        still = sorted({h.pid for _, h in group_holders(gpus, held.pgid, proc)})
        free = {d.index: d.free for d in gpus.devices()}
        back = all(
            free.get(i, 0) >= held.free_before.get(i, 0) + RELEASE_SHARE * n
            for i, n in held.per_gpu.items()
        )
        if not still and back:
            return None
        if clock() >= deadline:
            break
        await sleep(POLL)
    if still:
        return (
            f"GPU memory still held after {bound:g} s by the old engine's processes "
            f"(pids {', '.join(map(str, still))}): vllmctl gpus; kill them"
        )
    return (
        f"GPU memory not back after {bound:g} s although the old engine's processes are "
        "gone: vllmctl gpus shows who holds it"
    )
