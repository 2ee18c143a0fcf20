"""The one state enum and the one transition table. Only the supervisor changes state.

EDGES lists exactly the transitions supervisor.py makes, each with the event that causes it;
tests/runtime/test_supervisor.py fails when an edge is never taken by the tests, and states.check
refuses any transition the table lacks. FAILED is final: the supervisor exits (1, or 78 when
restarting cannot help) and systemd decides what comes next.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    INACTIVE = "inactive"  # no engine, none wanted
    STARTING = "starting"  # engine spawned, loading (no HTTP listener yet)
    PROBING = "probing"  # /health answered: checking served names and one generation
    READY = "ready"  # serving; READY=1 sent
    DRAINING = "draining"  # deactivating: waiting for running requests to finish
    RESTARTING = "restarting"  # engine gone, waiting out the backoff
    STOPPING = "stopping"  # group being stopped (deactivate, reload, shutdown, failure)
    FAILED = "failed"  # restart budget spent or unrecoverable; diagnosis kept

    @property
    def engine_expected(self) -> bool:
        return self in (State.STARTING, State.PROBING, State.READY, State.DRAINING)


S = State
EDGES: tuple[tuple[State, State, str], ...] = (
    (S.INACTIVE, S.STARTING, "activate (or autostart)"),
    (S.STARTING, S.PROBING, "the HTTP server answers /health"),
    (S.STARTING, S.RESTARTING, "exit, start timeout or spawn error, with budget left"),
    (S.STARTING, S.FAILED, "the same, budget spent or not fixable by restarting"),
    (S.STARTING, S.STOPPING, "deactivate, restart, reload or shutdown"),
    (S.PROBING, S.READY, "names and 1-token generation pass"),
    (S.PROBING, S.RESTARTING, "a probe fails or the engine exits, with budget left"),
    (S.PROBING, S.FAILED, "the same, budget spent"),
    (S.PROBING, S.STOPPING, "deactivate, restart, reload or shutdown"),
    (S.READY, S.DRAINING, "deactivate with a drain timeout"),
    (S.READY, S.RESTARTING, "engine dead, exited or hung, with budget left"),
    (S.READY, S.FAILED, "the same, budget spent"),
    (S.READY, S.STOPPING, "deactivate without drain, restart, reload or shutdown"),
    (S.DRAINING, S.READY, "activate calls the drain off"),
    (S.DRAINING, S.RESTARTING, "the engine dies while draining, with budget left"),
    (S.DRAINING, S.FAILED, "the same, budget spent"),
    (S.DRAINING, S.STOPPING, "no running requests, drain timeout, restart or shutdown"),
    (S.RESTARTING, S.STARTING, "the backoff elapsed"),
    (S.RESTARTING, S.STOPPING, "deactivate, restart, reload or shutdown"),
    (S.STOPPING, S.INACTIVE, "the engine's group is gone"),
    (S.STOPPING, S.STARTING, "the group is gone and the engine is wanted (restart, reload)"),
)
TRANSITIONS: dict[State, frozenset[State]] = {
    st: frozenset(new for old, new, _ in EDGES if old is st) for st in State}


class IllegalTransition(RuntimeError):
    pass


def check(old: State, new: State) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"{old.value} -> {new.value} is not in the transition table")
