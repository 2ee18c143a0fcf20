"""Per-model supervision settings: autostart, how to deactivate, and the
startup/health/restart/stop timings.

Each block is a map of typed numbers with defaults; like every other key, a bad value is
reported with file, line and key (config/key_parsers.py parses them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args


@dataclass(frozen=True)
class RestartPolicy:
    backoff_initial: float = 2.0
    backoff_max: float = 60.0
    backoff_factor: float = 2.0
    stable_after: float = 300.0  # a run this long resets the backoff
    budget: int = 5  # restarts allowed ...
    window: float = 600.0  # ... per this many seconds


@dataclass(frozen=True)
class Startup:
    stall_timeout: float = 300.0  # no load progress in the engine's log for this long: kill
    start_timeout: float = 1800.0  # not READY this long after spawn: kill
    poll_interval: float = 2.0  # /health poll while loading (log hints probe at once)
    probe_generation: bool = True  # a 1-token generation must pass before READY
    probe_timeout: float = 60.0


@dataclass(frozen=True)
class Health:
    interval: float = 5.0  # GET /health every N s once ready
    timeout: float = 5.0
    failures: int = 3  # consecutive timeouts that mean "hung"
    generation_interval: float = 0.0  # >0: also a 1-token generation every N s
    generation_timeout: float = 30.0


@dataclass(frozen=True)
class Stop:
    grace: float = 30.0  # SIGTERM -> SIGKILL of the group (vLLM drains within this)


Deactivate = Literal["stop", "sleep"]
DEACTIVATE: tuple[Deactivate, ...] = get_args(Deactivate)
SLEEP_LEVELS = (1, 2)


@dataclass(frozen=True)
class Supervision:
    autostart: bool = True
    deactivate: Deactivate = (
        "stop"  # or "sleep": vLLM's sleep mode, CUDA engines (runtime/sleep.py)
    )
    sleep_level: int = 1  # 1: weights to host RAM; 2: weights discarded, reloaded at wake
    startup: Startup = field(default_factory=Startup)
    health: Health = field(default_factory=Health)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop: Stop = field(default_factory=Stop)


BLOCKS: dict[str, type] = {
    "startup": Startup,
    "health": Health,
    "restart": RestartPolicy,
    "stop": Stop,
}
