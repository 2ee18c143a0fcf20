"""The supervisor's GPU side through its port (Effects.gpu), with a guard that answers as
NVML would: a start refused while memory is held, and stops that wait for the memory."""

from __future__ import annotations

import asyncio

from vllm_supervisor.config.settings import RestartPolicy
from vllm_supervisor.gpu.memory import Held
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime.diagnose import Finding
from vllm_supervisor.runtime.effects import ModelSetup
from vllm_supervisor.runtime.gpu_guard import HELD
from vllm_supervisor.runtime.states import State
from vllm_supervisor.runtime.status import as_dict

from tests.fakes import fast_settings
from tests.runtime.test_supervisor import Rig


class Guard:
    def __init__(self) -> None:
        self.blocked = 0  # starts to refuse
        self.note: str | None = None  # what released() answers
        self.held_for: list[int] = []
        self.release_waits = 0

    def check_start(self, setup: ModelSetup) -> Finding | None:
        if self.blocked <= 0:
            return None
        self.blocked -= 1
        why = "GPU 0 has 3.0 GiB free; the model needs 72.0 GiB. Held by: pid 9 (model other)"
        return Finding(HELD, why, "deactivate other (vllmctl deactivate, or --swap)", why)

    def held(self, pgid: int) -> Held:
        self.held_for.append(pgid)
        return Held(pgid, {0: 1}, {0: 0})

    async def released(self, held: Held) -> str | None:
        self.release_waits += 1
        await asyncio.sleep(0)
        return self.note


async def test_a_start_is_refused_while_gpu_memory_is_held_and_retried() -> None:
    guard = Guard()
    guard.blocked = 1
    rig = Rig(fast_settings(restart=RestartPolicy(backoff_initial=0.01, budget=3)), gpu=guard)
    await rig.ready()
    assert rig.spawner.engines and len(rig.spawner.engines) == 1  # no spawn for the refusal
    assert any("starting->restarting: GPU memory held: GPU 0 has 3.0 GiB free" in t
               for t in rig.trail())  # fmt: skip
    await rig.finish()


async def test_held_memory_with_no_budget_left_ends_failed_with_the_diagnosis() -> None:
    guard = Guard()
    guard.blocked = 5
    rig = Rig(fast_settings(restart=RestartPolicy(backoff_initial=0.01, budget=1)), gpu=guard)
    assert await asyncio.wait_for(rig.task, 5) == 1  # the budget is spent, not 78: it may free
    state = as_dict(rig.sup.status())
    assert state["state"] == "failed" and state["diagnosis"]["id"] == "gpu-memory-held"
    assert state["diagnosis"]["fix"].startswith("deactivate other")
    assert rig.failures[-1]["diagnosis"]["id"] == "gpu-memory-held"
    assert rig.spawner.engines == []


async def test_a_stop_waits_for_the_memory_and_says_when_it_stays_held() -> None:
    guard = Guard()
    guard.note = "GPU memory still held after 30 s by the old engine's processes (pids 7)"
    rig = Rig(gpu=guard)
    await rig.ready()
    rig.sup.post(ev.Deactivate())
    await rig.state(State.INACTIVE)
    assert guard.held_for == [rig.spawner.engines[0].pid] and guard.release_waits == 1
    assert rig.trail()[-1] == f"stopping->inactive: stopped (deactivate); {guard.note}"
    await rig.finish()


async def test_a_restart_after_a_failure_waits_for_the_memory_first() -> None:
    guard = Guard()
    rig = Rig(gpu=guard)
    await rig.ready()
    rig.spawner.engines[0].exit(1)
    await rig.until(lambda: len(rig.spawner.engines) == 2)
    assert guard.held_for == [rig.spawner.engines[0].pid] and guard.release_waits == 1
    await rig.state(State.READY)
    await rig.finish()
