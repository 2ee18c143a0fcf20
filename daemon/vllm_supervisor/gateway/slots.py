"""The gateway's routing values: a model's policy and slot, what a request is answered (a
Lease or a Denial), and the messages the router's one task handles (router.py)."""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from vllm_supervisor.protocol.admin import Seen
from vllm_supervisor.protocol.states import DOWN, HOLDS_NO_GPU, UNKNOWN, State

FREE = HOLDS_NO_GPU | {DOWN}  # holds no GPU memory for its group (a service that is down)


class Busy(enum.StrEnum):
    """A call of the router's to an instance that is under way."""

    ACTIVATING = "activating"
    DEACTIVATING = "deactivating"
    SWAPPED_OUT = "swapped out"  # a peer's activation deactivates it


class InstancePort(Protocol):
    async def state(self, model: str, timeout: float = 3.0) -> Seen: ...
    async def activate(
        self,
        model: str,
        swap: bool,
        timeout: float,
        on_state: Callable[[dict[str, Any]], None] | None = None,
    ) -> Seen: ...
    async def deactivate(
        self, model: str, timeout: float, options: dict[str, Any] | None = None
    ) -> Seen: ...


@dataclass(frozen=True)
class Policy:
    on_demand: bool = True
    ttl: float = 0.0  # 0: never
    max_queue: int = 64
    concurrency: int = 0  # 0: no cap
    group: str | None = None


@dataclass(frozen=True)
class Lease:
    model: str


@dataclass(frozen=True)
class Denial:
    status: int  # 429 or 503
    message: str  # for the person behind the client: what happened, whether to retry
    code: str
    retry_after: float | None = None
    fix: str | None = None  # for the operator: the journal line's fix (gateway/errors.py)


Answer = asyncio.Future[Lease | Denial]


@dataclass
class Waiter:
    answer: Answer
    since: float


@dataclass
class Slot:
    name: str
    policy: Policy
    seen: Seen = field(default_factory=lambda: Seen(UNKNOWN))
    in_flight: int = 0
    queue: deque[Waiter] = field(default_factory=deque)
    busy: Busy | None = None  # a call under way
    evicting: list[str] = field(default_factory=list)  # peers this activation swaps out
    activating_since: float = 0.0
    deactivations: list[asyncio.Future[Seen | Denial]] = field(default_factory=list)  # admin
    ready_at: float = 0.0  # when the gateway last saw it become ready
    last_done: float = 0.0  # the end of its last request (TTL counts from here)
    served: int = 0
    seen_at: float = -1.0  # when the admin call behind `seen` was made
    looking: bool = False  # a look (GET state) is under way
    # What its activations did, in words (gateway/progress.py shows them to a client waiting
    # for one): the recent phases in order, the first being number `phases_from`, so a
    # writer that wakes after two changes shows both (showing only the current one lost
    # "checking that it answers" under CI's load when "ready" followed it within the
    # writer's wakeup). `phase_set` is set, and replaced, at every change.
    phases: list[str] = field(default_factory=list)
    phases_from: int = 0
    phase_set: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def phase(self) -> str:
        """What an activation does now (or did last)."""
        return self.phases[-1] if self.phases else ""


@dataclass(frozen=True)
class Acquire:
    model: str
    waiter: Waiter


@dataclass(frozen=True)
class Release:
    model: str


@dataclass(frozen=True)
class Cancel:
    model: str
    waiter: Waiter


@dataclass(frozen=True)
class Outcome:
    """What an admin call (or a state refresh) found."""

    model: str
    seen: Seen
    done: Busy | None = None  # the busy call that ended (activating, deactivating)
    asked: float = 0.0  # when the call was made: a view older than a request is not final


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class Progress:
    """A state an activating instance reported (its NDJSON answer, line by line)."""

    model: str
    state: dict[str, Any]


@dataclass(frozen=True)
class Deactivate:
    """An operator's deactivation (the gateway's admin paths): refused while busy."""

    model: str
    answer: asyncio.Future[Seen | Denial]
    options: dict[str, Any] = field(default_factory=dict)  # drain_timeout, stop


Message = Acquire | Release | Cancel | Outcome | Tick | Deactivate | Progress


def down(slot: Slot) -> Denial:
    return Denial(
        503,
        f"model {slot.name} is not available on this server right now (its service is not "
        "running). Try again later, or ask the server's operator.",
        "service_not_running",
        fix=f"systemctl start vllm-supervisor@{slot.name}",
    )


def failed(slot: Slot) -> Denial:
    diag = slot.seen.diagnosis or {}
    title = str(diag.get("title") or "it failed to start")
    fix = f"{diag.get('cause')}; fix: {diag.get('fix')}" if diag else slot.seen.reason
    return Denial(
        503,
        f"model {slot.name} could not be started ({title}). Try again later, or ask the "
        "server's operator.",
        "model_failed",
        fix=f"{fix} (vllmctl status {slot.name})",
    )


def snapshot(slots: dict[str, Slot], now: float) -> dict[str, dict[str, Any]]:
    """Per model: what the gateway sees (`vllmctl gateway status`, /v1/models, /metrics)."""
    out = {}
    for name, s in slots.items():
        ttl_left = None
        if s.policy.ttl > 0 and s.seen.state == State.READY and not s.in_flight:
            ttl_left = max(0.0, s.policy.ttl - (now - s.last_done))
        out[name] = {
            "state": s.busy or s.seen.state,
            "in_flight": s.in_flight,
            "queued": len(s.queue),
            "served": s.served,
            "idle": round(now - s.last_done, 1) if s.last_done else None,
            "ttl_left": ttl_left,
        }
    return out
