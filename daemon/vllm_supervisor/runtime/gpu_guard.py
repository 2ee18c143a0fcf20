"""The supervisor's GPU side, as one port (Effects.gpu): check the memory before a start, note
what an engine holds when its stop begins, and wait for that memory after it.

`NvmlGuard` decides with gpu/memory.py over NVML; `NoGpuGuard` (effects.py) is every answer
on a host without an NVIDIA GPU, and the default in tests: nothing to check or wait for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vllm_supervisor.gpu import memory
from vllm_supervisor.gpu.holders import PROC
from vllm_supervisor.gpu.memory import Held
from vllm_supervisor.gpu.nvml import Gpus
from vllm_supervisor.runtime.causes import TABLE
from vllm_supervisor.runtime.diagnose import Finding
from vllm_supervisor.runtime.effects import ModelSetup

RELEASE_BOUND = 30.0  # seconds to wait for an old engine's GPU memory
HELD = next(c for c in TABLE if c.id == "gpu-memory-held")


class NvmlGuard:
    def __init__(
        self,
        gpus: Gpus,
        clock: Callable[[], float],
        bound: float = RELEASE_BOUND,
        proc: Path = PROC,
    ) -> None:
        self.gpus, self.clock, self.bound, self.proc = gpus, clock, bound, proc

    def check_start(self, setup: ModelSetup) -> Finding | None:
        """The start's diagnosis when a GPU lacks the memory vLLM will ask for, else None."""
        found = memory.shortfalls(
            self.gpus, setup.gpus, setup.gpu_memory_utilization, None, self.proc
        )
        if not found:
            return None
        why = "; ".join(s.describe() for s in found)
        return Finding(HELD, f"before start: {why}", memory.start_fix(found), why)

    def held(self, pgid: int) -> Held:
        return memory.held_by(self.gpus, pgid, self.proc)

    async def released(self, held: Held) -> str | None:
        return await memory.wait_released(self.gpus, held, self.bound, self.clock, proc=self.proc)
