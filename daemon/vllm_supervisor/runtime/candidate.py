"""An upgrade's candidate: the new venv's engine, started beside the serving one on a spare
port, probed like any start, and either promoted (it becomes the serving engine; the old one
drains and stops) or discarded (its group is stopped; the serving engine was never touched).

The supervisor owns the Candidate and is the only writer (runtime/supervisor.py); the
coroutines here watch one candidate and only post events, like runtime/watchers.py. The
steps and why they are safe: docs/deployment.md, "Upgrade and rollback".
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vllm_supervisor.config.settings import Startup
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime.effects import EngineHandle, LinesSink, Prepared, ProberLike
from vllm_supervisor.runtime.probes import EngineAddress
from vllm_supervisor.runtime.tasks import GenerationTasks

Clock = Callable[[], float]


class Phase(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"


@dataclass
class Candidate:
    number: int
    venv: str
    reason: str  # upgrade | rollback
    prepared: Prepared
    address: EngineAddress  # the spare port
    prober: ProberLike
    started_at: float
    phase: Phase = Phase.STARTING
    error: str = ""
    ready_at: float | None = None
    engine: EngineHandle | None = None
    gone: bool = False  # its group was stopped (after a failure or a discard)
    tasks: GenerationTasks = field(default_factory=GenerationTasks)
    # Where the engine's lines go: the journal while it is a candidate, the supervisor's
    # engine log once promoted (the spawn's sink reads this box at every batch).
    sink: list[LinesSink] = field(default_factory=list)

    def lines(self, lines: list[str], text: str) -> None:
        self.sink[0](lines, text)

    def view(self, now: float) -> dict[str, Any]:
        return {
            "venv": self.venv,
            "version": self.prepared.version,
            "reason": self.reason,
            "phase": self.phase.value,
            "error": self.error or None,
            "port": self.address.port,
            "pid": self.engine.pid if self.engine is not None else None,
            "gone": self.gone,
            "seconds": (self.ready_at or now) - self.started_at,
            "notes": list(self.prepared.notes),
        }


@dataclass
class Outgoing:
    """The engine a promotion replaced: it finishes what it runs, then its group stops."""

    number: int
    engine: EngineHandle
    address: EngineAddress
    prober: ProberLike
    retiring: bool = False
    tasks: GenerationTasks = field(default_factory=GenerationTasks)


async def come_up(
    number: int,
    post: ev.Post,
    prober: ProberLike,
    engine: EngineHandle,
    startup: Startup,
    clock: Clock,
) -> None:
    """/health, then the served names and a 1-token generation, as a start's probes, within
    the model's start timeout; an exit on the way is the candidate's failure."""
    start = clock()
    exited = asyncio.ensure_future(engine.wait())
    try:
        while (got := await prober.health(timeout=2.0)) != 200:
            if exited.done():
                post(ev.CandidateUp(number, f"the engine {exited.result().describe()}"))
                return
            if clock() - start > startup.start_timeout:
                post(ev.CandidateUp(number, f"not ready after {startup.start_timeout:g} s "
                                    f"(startup.start_timeout; last /health: {got})"))  # fmt: skip
                return
            await asyncio.sleep(min(startup.poll_interval, 1.0))
        err = await prober.models(startup.probe_timeout)
        if err is None:
            err = await prober.one_token(startup.probe_timeout)
        post(ev.CandidateUp(number, err))
    finally:
        exited.cancel()


async def watch_exit(number: int, post: ev.Post, engine: EngineHandle) -> None:
    """A candidate that exits after it was found ready fails too (CandidateUp's error)."""
    got = await engine.wait()
    post(ev.CandidateUp(number, f"the engine {got.describe()}"))


async def stop(number: int, post: ev.Post, engine: EngineHandle, grace: float, why: str) -> None:
    _, left = await engine.stop(grace)
    post(ev.CandidateGone(number, tuple(left), why))


async def retire(
    number: int, post: ev.Post, old: Outgoing, drain_timeout: float, grace: float, clock: Clock
) -> None:
    """Wait until the old engine runs no request (vllm:num_requests_running; unreadable
    metrics count as none: runtime/watchers.drain), then stop its group."""
    start = clock()
    why = "drained"
    while True:
        running = await old.prober.running_requests(2.0)
        if not running:
            break
        if clock() - start >= drain_timeout:
            why = f"drain timeout {drain_timeout:g} s, {running:g} request(s) still running"
            break
        await asyncio.sleep(0.2)
    _, left = await old.engine.stop(grace)
    post(ev.CandidateGone(number, tuple(left), f"previous engine stopped ({why})"))
