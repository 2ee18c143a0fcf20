"""The one transition table over the one state enum (protocol/states.py, which every side
shares). Only the supervisor changes state.

EDGES lists exactly the transitions supervisor.py makes, each with the event that causes it;
tests/runtime/test_supervisor.py fails when an edge is never taken by the tests, and states.check
refuses any transition the table lacks. FAILED is final: the supervisor exits (1, or 78 when
restarting cannot help) and systemd decides what comes next.
"""

from __future__ import annotations

from vllm_supervisor.protocol.states import State

__all__ = ["EDGES", "TRANSITIONS", "IllegalTransition", "State", "check"]


EDGES: tuple[tuple[State, State, str], ...] = (
    (State.INACTIVE, State.STARTING, "activate (or autostart)"),
    (State.STARTING, State.PROBING, "the HTTP server answers /health"),
    (State.STARTING, State.RESTARTING, "exit, start timeout or spawn error, with budget left"),
    (State.STARTING, State.FAILED, "the same, budget spent or not fixable by restarting"),
    (State.STARTING, State.STOPPING, "deactivate, restart, reload or shutdown"),
    (State.PROBING, State.READY, "names and 1-token generation pass"),
    (State.PROBING, State.RESTARTING, "a probe fails or the engine exits, with budget left"),
    (State.PROBING, State.FAILED, "the same, budget spent"),
    (State.PROBING, State.STOPPING, "deactivate, restart, reload, shutdown or a failed wake"),
    (State.READY, State.DRAINING, "deactivate with a drain timeout, or to sleep"),
    (State.READY, State.RESTARTING, "engine dead, exited or hung, with budget left"),
    (State.READY, State.FAILED, "the same, budget spent"),
    (State.READY, State.STOPPING, "deactivate without drain, restart, reload or shutdown"),
    (State.DRAINING, State.READY, "activate calls the drain off"),
    (State.DRAINING, State.RESTARTING, "the engine dies while draining, with budget left"),
    (State.DRAINING, State.FAILED, "the same, budget spent"),
    (
        State.DRAINING,
        State.STOPPING,
        "drained (stop), sleep failed, restart or shutdown",
    ),
    (State.DRAINING, State.SLEEPING, "/is_sleeping says so (NVML: what it freed)"),
    (State.SLEEPING, State.PROBING, "activate: wake (then prefix cache, names, 1 token)"),
    (State.SLEEPING, State.STOPPING, "deactivate --stop, restart, reload or shutdown"),
    (State.SLEEPING, State.INACTIVE, "the engine exited while asleep (diagnosis kept)"),
    (State.RESTARTING, State.STARTING, "the backoff elapsed"),
    (State.RESTARTING, State.STOPPING, "deactivate, restart, reload or shutdown"),
    (State.STOPPING, State.INACTIVE, "the engine's group is gone"),
    (
        State.STOPPING,
        State.STARTING,
        "the group is gone and the engine is wanted (restart, reload)",
    ),
)
TRANSITIONS: dict[State, frozenset[State]] = {
    st: frozenset(new for old, new, _ in EDGES if old is st) for st in State
}


class IllegalTransition(RuntimeError):
    pass


def check(old: State, new: State) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"{old.value} -> {new.value} is not in the transition table")
