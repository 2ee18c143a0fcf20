"""The one state enum and the one transition table. Only the supervisor changes state.

inactive --activate--> starting --/health 200--> probing --probes pass--> ready
ready --engine dead / exit / hung--> restarting --backoff--> starting
ready --deactivate (drain)--> draining --no running requests / drain timeout--> stopping
starting|probing --exit/stall/timeout/probe failed--> restarting (failed when budget spent)
any --deactivate--> stopping --group gone--> inactive; failed --activate--> starting
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
TRANSITIONS: dict[State, frozenset[State]] = {
    S.INACTIVE: frozenset({S.STARTING, S.STOPPING}),
    S.STARTING: frozenset({S.PROBING, S.RESTARTING, S.STOPPING, S.FAILED}),
    S.PROBING: frozenset({S.READY, S.RESTARTING, S.STOPPING, S.FAILED}),
    S.READY: frozenset({S.RESTARTING, S.STOPPING, S.FAILED, S.DRAINING}),
    S.DRAINING: frozenset({S.READY, S.RESTARTING, S.STOPPING, S.FAILED}),
    S.RESTARTING: frozenset({S.STARTING, S.STOPPING, S.FAILED}),
    S.STOPPING: frozenset({S.INACTIVE, S.STARTING, S.FAILED}),
    S.FAILED: frozenset({S.STARTING, S.STOPPING}),
}


class IllegalTransition(RuntimeError):
    pass


def check(old: State, new: State) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"{old.value} -> {new.value} is not in the transition table")
