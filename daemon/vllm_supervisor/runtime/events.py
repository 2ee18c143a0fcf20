"""Everything that can happen to a supervisor, as values on its one queue.

Signal handlers, the admin socket and the engine's watcher tasks only post these; the
supervisor alone decides what they mean. `gen` is the engine generation an event belongs
to: events from an engine that is already gone are ignored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from vllm_supervisor.runtime.process import Exit


@dataclass(frozen=True)
class Activate:
    reason: str = "activate"
    # Set by the supervisor, to the event's sequence number, once it has handled it: a caller
    # knows its request is done, and the highest number is the request accepted last.
    ack: asyncio.Future[int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Deactivate:
    reason: str = "deactivate"
    drain_timeout: float = 0.0  # >0: wait for running requests to finish first
    ack: asyncio.Future[int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Restart:
    reason: str = "restart"
    ack: asyncio.Future[int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DrainDone:
    gen: int
    why: str


@dataclass(frozen=True)
class Shutdown:
    reason: str = "SIGTERM"


@dataclass(frozen=True)
class Reload:
    reason: str = "SIGHUP"
    ack: asyncio.Future[int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Exited:
    gen: int
    exit: Exit


@dataclass(frozen=True)
class PortUp:
    gen: int


@dataclass(frozen=True)
class ProbesDone:
    gen: int
    error: str | None


@dataclass(frozen=True)
class EngineDead:
    gen: int
    why: str


@dataclass(frozen=True)
class StartTimeout:
    gen: int
    why: str


@dataclass(frozen=True)
class BackoffDone:
    gen: int


@dataclass(frozen=True)
class Stopped:
    gen: int
    escalated: bool
    left: tuple[int, ...]


Event = (Activate | Deactivate | Restart | Shutdown | Reload | Exited | PortUp | ProbesDone
         | EngineDead | StartTimeout | BackoffDone | Stopped | DrainDone)
