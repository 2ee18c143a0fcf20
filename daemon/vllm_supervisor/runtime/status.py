"""The supervisor's read side: state snapshots, the STATUS= line, and bounded subscriptions
for the admin socket. It reads the supervisor's state and never changes it (supervisor.py
decides)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from vllm_supervisor.runtime.states import State

if TYPE_CHECKING:
    from vllm_supervisor.config.settings import Supervision
    from vllm_supervisor.runtime.diagnose import Finding
    from vllm_supervisor.runtime.progress import Progress
    from vllm_supervisor.runtime.restarts import RestartTracker
    from vllm_supervisor.runtime.supervisor import EngineHandle, Ports, Snapshot

SUB_QUEUE = 1000  # state / log-line batches a subscriber may lag behind before losing some
HISTORY_SHOWN = 20


class Observed:
    # Provided by Supervisor.
    name: str
    endpoint: str
    s: Supervision
    p: Ports
    snap: Snapshot
    engine: EngineHandle | None
    progress: Progress
    tracker: RestartTracker
    failure: Finding | None
    spawned_at: float
    ready_at: float | None
    restarts: int
    last_exit: str
    time_to_ready: float | None
    last_start: float | None
    last_reload: dict[str, Any] | None
    handled: int
    facts: dict[str, Any]
    ring: deque[str]
    _state_subs: set[asyncio.Queue[dict[str, Any]]]
    _line_subs: set[asyncio.Queue[list[str]]]

    def subscribe_states(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue of state snapshots, one per transition. Bounded: a slow reader loses
        snapshots, it never blocks the supervisor."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=SUB_QUEUE)
        self._state_subs.add(q)
        return q

    def subscribe_lines(self) -> asyncio.Queue[list[str]]:
        q: asyncio.Queue[list[str]] = asyncio.Queue(maxsize=SUB_QUEUE)
        self._line_subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Any]) -> None:
        self._state_subs.discard(q)
        self._line_subs.discard(q)

    @staticmethod
    def _offer(subs: set[asyncio.Queue[Any]], item: Any) -> None:
        for q in subs:
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(item)

    def state_dict(self) -> dict[str, Any]:
        now, wall = self.p.clock(), time.time()
        st = self.snap.state
        return {
            "model": self.name, "state": st.value, "reason": self.snap.reason,
            "since": wall - (now - self.snap.since), "endpoint": self.endpoint,
            "pid": self.engine.pid if self.engine is not None else None,
            "uptime": (now - self.ready_at) if self.ready_at is not None
            and st in (State.READY, State.DRAINING) else None,
            "restarts": self.restarts, "restart_budget_used": self.tracker.used,
            "last_exit": self.last_exit or None,
            "diagnosis": self.failure.as_dict() if self.failure is not None else None,
            "progress": {"phase": self.progress.phase, **self.progress.facts}
            if st.engine_expected else None,
            "time_to_ready": self.time_to_ready, "status": self.status_line(),
            "events": self.handled, "last_start": self.last_start,
            "last_reload": self.last_reload,
            "history": list(self.snap.history)[-HISTORY_SHOWN:], **self.facts,
        }

    def status_line(self) -> str:
        st, now = self.snap.state, self.p.clock()
        if st is State.STARTING:
            return f"{self.progress.phase} ({now - self.spawned_at:.0f} s)"
        if st is State.PROBING:
            return "probing: served names and a 1-token generation"
        if st is State.READY:
            return f"ready on {self.endpoint}" if self.endpoint else "ready"
        if st is State.RESTARTING:
            return (f"restarting after {self.snap.reason} "
                    f"({self.tracker.used}/{self.s.restart.budget})")
        if st is State.FAILED and self.failure is not None:
            return f"failed: {self.failure.cause.title}: {self.failure.fix}"
        return f"{st.value}: {self.snap.reason}"
