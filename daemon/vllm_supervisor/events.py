"""Everything that can happen to a supervisor, as values on its one queue.

Signal handlers, the admin socket and the engine's watcher tasks only post these; the
supervisor alone decides what they mean. `gen` is the engine generation an event belongs
to: events from an engine that is already gone are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from .process import Exit


@dataclass(frozen=True)
class Activate:
    reason: str = "activate"


@dataclass(frozen=True)
class Deactivate:
    reason: str = "deactivate"


@dataclass(frozen=True)
class Shutdown:
    reason: str = "SIGTERM"


@dataclass(frozen=True)
class Reload:
    reason: str = "SIGHUP"


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


Event = (Activate | Deactivate | Shutdown | Reload | Exited | PortUp | ProbesDone | EngineDead
         | StartTimeout | BackoffDone | Stopped)
