"""The states an instance reports, and the groups of them each side decides by: the one
spelling the supervisor, the gateway and vllmctl share (as supervisord's states.py is).

A state travels as its string (the admin socket's JSON); State is a StrEnum, so a state
read from JSON compares equal to its member. runtime/states.py holds the transition table,
which is the supervisor's alone.
"""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    INACTIVE = "inactive"  # no engine, none wanted
    STARTING = "starting"  # engine spawned, loading (no HTTP listener yet)
    PROBING = "probing"  # /health answered: checking served names and one generation
    READY = "ready"  # serving; READY=1 sent
    DRAINING = "draining"  # deactivating: waiting for running requests to finish
    RESTARTING = "restarting"  # engine gone, waiting out the backoff
    STOPPING = "stopping"  # group being stopped (deactivate, reload, shutdown, failure)
    SLEEPING = "sleeping"  # vLLM's sleep mode: the engine lives, its GPU memory freed
    FAILED = "failed"  # restart budget spent or unrecoverable; diagnosis kept

    @property
    def engine_expected(self) -> bool:
        return self in ENGINE_EXPECTED


# What a client sees of an instance when no state answers it: its service does not answer
# its admin socket (DOWN), or it has not been asked yet (UNKNOWN, the gateway at start).
DOWN = "down"
UNKNOWN = "unknown"

ENGINE_EXPECTED = frozenset({State.STARTING, State.PROBING, State.READY, State.DRAINING})
# Holds no GPU memory for its gpu_group: a sleeping engine gave its memory back.
HOLDS_NO_GPU = frozenset({State.INACTIVE, State.FAILED, State.SLEEPING})
# On its way to ready: an activation joins it.
COMING = frozenset({State.STARTING, State.PROBING, State.RESTARTING})
# Where following an activation, or a deactivation, ends.
TERMINAL_UP = frozenset({State.READY, State.FAILED, State.INACTIVE})
TERMINAL_DOWN = frozenset({State.INACTIVE, State.FAILED, State.SLEEPING})
