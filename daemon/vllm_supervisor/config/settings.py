"""Per-model supervision settings: autostart and the startup/health/restart/stop timings.

Each block is a map of typed numbers with defaults; like every other key, a bad value is
reported with file, line and key (fields.py calls parse()).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

from vllm_supervisor.config.problems import did_you_mean
from vllm_supervisor.runtime.restarts import RestartPolicy

if TYPE_CHECKING:
    from vllm_supervisor.config.model_keys import Ctx
    from vllm_supervisor.config.yamltree import YNode


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


@dataclass(frozen=True)
class Supervision:
    autostart: bool = True
    startup: Startup = field(default_factory=Startup)
    health: Health = field(default_factory=Health)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop: Stop = field(default_factory=Stop)


BLOCKS: dict[str, type] = {"startup": Startup, "health": Health, "restart": RestartPolicy,
                           "stop": Stop}
# The smallest sane value of each number: a 0 s timeout or a 0 budget is a typo.
MINIMUM = {"failures": 1, "budget": 0, "backoff_factor": 1.0}


def parse_block(ctx: Ctx, name: str, node: YNode, current: object) -> object:
    """One block (over the defaults' block, so defaults: and models can both set parts)."""
    if node.mapping is None:
        ctx.err(node, name, "expected a mapping")
        return current
    known = {f.name: f for f in fields(BLOCKS[name])}
    changes: dict[str, object] = {}
    for key, vnode in node.mapping.items():
        line = node.key_lines[key]
        f = known.get(key)
        if f is None:
            ctx.err(vnode, f"{name}.{key}", "unknown key" + did_you_mean(key, known), line)
            continue
        v = vnode.scalar
        default = getattr(BLOCKS[name](), key)
        if isinstance(default, bool):
            if not isinstance(v, bool):
                ctx.err(vnode, f"{name}.{key}", f"expected true or false, got {v!r}", line)
                continue
        elif isinstance(default, int):
            if isinstance(v, bool) or not isinstance(v, int) or v < MINIMUM.get(key, 1):
                ctx.err(vnode, f"{name}.{key}", f"expected a whole number >= "
                        f"{MINIMUM.get(key, 1)}, got {v!r}", line)
                continue
        else:
            low = MINIMUM.get(key, 0.0)
            num = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
            # generation_interval 0 means "off"; every other duration must be positive.
            if num is None or num < low or (num == 0 and key != "generation_interval"):
                ctx.err(vnode, f"{name}.{key}", f"expected seconds > 0, got {v!r}", line)
                continue
            v = num
        changes[key] = v
    return replace(current, **changes)  # type: ignore[type-var]
