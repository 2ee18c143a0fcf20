"""Everything that can happen to a supervisor, as values on its one queue.

Signal handlers, the admin socket and the engine's watcher tasks only post these; the
supervisor alone decides what they mean (supervisor.py dispatches on them exhaustively).
Orders come from outside (an operator, a signal); engine events carry `gen`, the number of
the engine generation they belong to, and are ignored once that generation is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vllm_supervisor.preflight.render import Command
from vllm_supervisor.runtime.process import Exit


@dataclass(frozen=True)
class ReloadResult:
    ok: bool  # False: the new config is invalid and the running engine was kept
    restart: bool  # the engine restarts because its command changed
    detail: str

    @classmethod
    def of(cls, before: Command | None, after: Command, running: bool) -> ReloadResult:
        """A valid new config: the engine restarts only when it runs and its command (argv or
        added environment) changed; anything else applies without touching it."""
        changed = before is not None and (after.argv, after.env_add) != (
            before.argv,
            before.env_add,
        )
        if changed and running:
            return cls(True, True, "engine restarts with the new command")
        return cls(True, False, "engine command unchanged")

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "restart": self.restart, "detail": self.detail}


@dataclass(frozen=True)
class Ack:
    """What the supervisor answers once it has handled an order."""

    seq: int  # events handled so far: the highest number is the order accepted last
    reload: ReloadResult | None = None  # the outcome, for a Reload
    refused: str | None = None  # why an Activate was refused (a gpu_group peer is active)


AckFuture = asyncio.Future[Ack]


# ---- orders ---------------------------------------------------------------------------------
AUTOSTART = "autostart"


@dataclass(frozen=True)
class Activate:
    reason: str = "activate"
    swap: bool = False  # deactivate an active gpu_group peer first, instead of refusing
    ack: AckFuture | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Deactivate:
    reason: str = "deactivate"
    drain_timeout: float = 0.0  # >0: wait for running requests to finish first
    stop: bool = False  # stop the engine even when the model is set to `deactivate: sleep`
    ack: AckFuture | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Restart:
    reason: str = "restart"
    ack: AckFuture | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Shutdown:
    reason: str = "SIGTERM"
    ack: AckFuture | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Reload:
    reason: str = "SIGHUP"
    ack: AckFuture | None = field(default=None, compare=False)


# ---- upgrades: a candidate engine beside the serving one (runtime/candidate.py) ----------
@dataclass(frozen=True)
class StartCandidate:
    """Start VENV's engine beside the serving one, on a spare port (the Ack says why not)."""

    venv: str
    reason: str = "upgrade"  # upgrade | rollback: what the journal and the metrics say
    ack: AckFuture | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Promote:
    """The ready candidate becomes the serving engine; the old one is kept until Retire."""

    ack: AckFuture | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Retire:
    """Drain the engine a Promote replaced (up to DRAIN_TIMEOUT), then stop its group."""

    drain_timeout: float = 30.0
    ack: AckFuture | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Discard:
    """End the candidate: OUTCOME is what the upgrade counter records (golden-failed, ...)."""

    outcome: str = "aborted"
    why: str = ""
    ack: AckFuture | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CandidateUp:
    number: int
    error: str | None  # None: the candidate passed the probes


@dataclass(frozen=True)
class CandidateGone:
    """A candidate's (or a retired engine's) group is gone: LEFT, the pids still there."""

    number: int
    left: tuple[int, ...]
    why: str


# ---- engine events (from the watchers of one generation) -----------------------------------
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
class Downloading:
    """The model's files in the download cache grew: SIZE bytes now, at RATE bytes/s."""

    gen: int
    size: int
    rate: float


@dataclass(frozen=True)
class StillLoading:
    """The load makes progress: extend systemd's start timeout by `extend` seconds."""

    gen: int
    extend: float


@dataclass(frozen=True)
class BackoffDone:
    gen: int
    gpu_note: str | None = None  # the old engine's GPU memory was not released in time


@dataclass(frozen=True)
class Stopped:
    gen: int
    escalated: bool
    left: tuple[int, ...]
    gpu_note: str | None = None  # the engine's GPU memory was not released in time


@dataclass(frozen=True)
class DrainDone:
    gen: int
    why: str


@dataclass(frozen=True)
class Slept:
    """The sleep call ended: error None when the engine sleeps (note: what NVML saw freed)."""

    gen: int
    error: str | None
    note: str = ""


@dataclass(frozen=True)
class Woke:
    """The wake ended: error None when the woken engine passed the probes."""

    gen: int
    error: str | None


@dataclass(frozen=True)
class GroupHold:
    """A multi-node group's link on a start that waits for the group (runtime/nodelink.py):
    WHY it still waits, or None to spawn the engine now."""

    gen: int
    why: str | None


Order = (
    Activate
    | Deactivate
    | Restart
    | Shutdown
    | Reload
    | StartCandidate
    | Promote
    | Retire
    | Discard
)
CandidateEvent = CandidateUp | CandidateGone
EngineEvent = (
    Exited
    | PortUp
    | ProbesDone
    | EngineDead
    | StartTimeout
    | StillLoading
    | Downloading
    | BackoffDone
    | Stopped
    | DrainDone
    | Slept
    | Woke
    | GroupHold
)
Event = Order | EngineEvent | CandidateEvent
Post = Callable[[Event], None]  # all a watcher or the admin socket may do to a supervisor
