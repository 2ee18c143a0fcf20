"""The supervisor's read side: a `Status` value taken at one instant, and pure functions that
turn it into the STATUS= line (sd_notify(3)) and the admin socket's `state` answer.

The supervisor builds a Status (Supervisor.status()); nothing here can change its state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vllm_supervisor.runtime.diagnose import Finding
from vllm_supervisor.runtime.events import ReloadResult
from vllm_supervisor.runtime.states import State

HISTORY_SHOWN = 20


@dataclass(frozen=True)
class Status:
    model: str
    state: State
    reason: str  # why the current state was entered
    since: float  # clock() when it was entered
    now: float  # clock() when this Status was taken
    wall: float  # time.time() when this Status was taken
    endpoint: str
    pid: int | None  # the engine's warden (its group leader)
    phase: str  # the load phase of the current engine generation
    progress: Mapping[str, str]  # facts read from the engine's log while it loads
    spawned_at: float | None
    ready_at: float | None
    restarts: int
    budget_used: int
    budget: int
    last_exit: str
    failure: Finding | None
    time_to_ready: float | None  # seconds, last successful start
    last_start: float | None  # seconds the last start took, ready or failed
    last_wake: float | None  # seconds the last wake from sleep took
    events: int  # events handled
    last_reload: ReloadResult | None
    history: tuple[dict[str, Any], ...]
    facts: Mapping[str, Any]  # static facts of the config (served names, engine)


def status_line(st: Status) -> str:
    s = st.state
    if s is State.STARTING:
        return f"{st.phase} ({st.now - (st.spawned_at or st.now):.0f} s)"
    if s is State.PROBING:
        # A generation that was ready before is being woken from sleep (runtime/sleep.py).
        doing = State.PROBING if st.ready_at is None else f"waking from sleep, then {State.PROBING}"
        return f"{doing}: served names and a 1-token generation"
    if s is State.READY:
        return f"{State.READY} on {st.endpoint}" if st.endpoint else State.READY
    if s is State.RESTARTING:
        return f"restarting after {st.reason} ({st.budget_used}/{st.budget})"
    if s is State.FAILED and st.failure is not None:
        return f"failed: {st.failure.cause.title}: {st.failure.fix}"
    return f"{s.value}: {st.reason}"


def as_dict(st: Status) -> dict[str, Any]:
    serving = st.ready_at is not None and st.state in (State.READY, State.DRAINING)
    return {
        "model": st.model,
        "state": st.state.value,
        "reason": st.reason,
        "since": st.wall - (st.now - st.since),
        "endpoint": st.endpoint,
        "pid": st.pid,
        "uptime": st.now - st.ready_at if serving and st.ready_at is not None else None,
        "restarts": st.restarts,
        "restart_budget_used": st.budget_used,
        "last_exit": st.last_exit or None,
        "diagnosis": st.failure.as_dict() if st.failure is not None else None,
        "progress": {"phase": st.phase, **st.progress} if st.state.engine_expected else None,
        "time_to_ready": st.time_to_ready,
        "status": status_line(st),
        "events": st.events,
        "last_start": st.last_start,
        "last_wake": st.last_wake,
        "last_reload": st.last_reload.as_dict() if st.last_reload is not None else None,
        "history": list(st.history[-HISTORY_SHOWN:]),
        **st.facts,
    }
