"""The supervisor's state, how it got there, and the counters `state` reports.

The supervisor holds the one Lifecycle and is the only caller of enter() and the only
writer of its counters; everything else reads Status values (status.py). enter() checks every
transition against the table (states.py), so one the table lacks fails loudly.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from vllm_supervisor.runtime import states
from vllm_supervisor.runtime.diagnose import Finding
from vllm_supervisor.runtime.effects import Effects, ModelSetup
from vllm_supervisor.runtime.events import ReloadResult
from vllm_supervisor.runtime.generation import Generation
from vllm_supervisor.runtime.states import State
from vllm_supervisor.runtime.status import Status

HISTORY = 64  # transitions kept for `state`


class Lifecycle:
    def __init__(self, name: str, effects: Effects) -> None:
        self.name = name
        self.effects = effects
        self.state = State.INACTIVE
        self.since = effects.clock()
        self.reason = ""
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.restarts = 0  # restarts after failures (asked-for restarts do not count)
        self.last_exit = ""
        self.failure: Finding | None = None
        self.time_to_ready: float | None = None  # seconds, last successful start
        self.last_start: float | None = None  # seconds the last start took, ready or failed
        self.last_wake: float | None = None  # seconds the last wake from sleep took
        self.stop_reason = ""  # why the current (or last) stop began
        self.last_reload: ReloadResult | None = None
        self.events = 0  # events handled

    def enter(self, new: State, reason: str) -> None:
        old = self.state
        states.check(old, new)
        self.state, self.since, self.reason = new, self.effects.clock(), reason
        entry = {"state": new.value, "from": old.value, "reason": reason, "at": time.time()}
        self.history.append(entry)
        self.effects.log.info(
            "state", model=self.name, state=new.value, previous=old.value, reason=reason
        )

    def note(self, reason: str) -> None:
        """A new reason for the same state (an activation refused while INACTIVE)."""
        self.reason = reason
        self.effects.log.info("state", model=self.name, state=self.state.value, reason=reason)

    def failed(self, reason: str, finding: Finding | None) -> Finding | None:
        """Keep the diagnosis `state` shows, and say it in the journal."""
        self.failure = finding
        self.effects.log.error(
            "engine failure",
            model=self.name,
            reason=reason,
            cause=finding.cause.id if finding else None,
            fix=finding.fix if finding else "",
        )
        return finding

    def failure_record(self, reason: str, lines: list[str]) -> dict[str, Any]:
        """What last-failure.json keeps for the operator once the process has exited."""
        return {
            "model": self.name,
            "reason": reason,
            "at": time.time(),
            "diagnosis": self.failure.as_dict() if self.failure else None,
            "log_tail": lines[-50:],
            "restarts": self.restarts,
        }

    def group_left(self, left: list[int], when: str) -> None:
        """Journal whether the engine's process group is gone (it must be: no orphan may
        keep the GPU, docs/vllm-behaviour.md)."""
        if left:
            self.effects.log.error("engine processes left", model=self.name, when=when, pids=left)
        else:
            self.effects.log.info("engine process group gone", model=self.name, when=when)

    def status(self, gen: Generation | None, setup: ModelSetup, budget_used: int) -> Status:
        engine = gen.engine if gen is not None else None
        return Status(
            model=self.name,
            state=self.state,
            reason=self.reason,
            since=self.since,
            now=self.effects.clock(),
            wall=time.time(),
            endpoint=setup.endpoint,
            pid=engine.pid if engine is not None else None,
            phase=gen.progress.phase if gen is not None else "spawned",
            progress=dict(gen.progress.facts) if gen is not None else {},
            spawned_at=gen.spawned_at if gen is not None else None,
            ready_at=gen.ready_at if gen is not None else None,
            restarts=self.restarts,
            budget_used=budget_used,
            budget=setup.settings.restart.budget,
            last_exit=self.last_exit,
            failure=self.failure,
            time_to_ready=self.time_to_ready,
            last_start=self.last_start,
            last_wake=self.last_wake,
            events=self.events,
            last_reload=self.last_reload,
            history=tuple(self.history),
            facts=setup.facts,
        )
