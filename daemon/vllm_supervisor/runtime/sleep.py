"""Sleep-mode deactivation (`deactivate: sleep`): put a drained engine to sleep and check
that it sleeps, wake it and prove that it serves. Each coroutine posts one event; the
supervisor alone decides what it means (supervisor.py).

vLLM's side (docs/vllm-behaviour.md, "Sleep mode"): the routes exist only with
VLLM_SERVER_DEV_MODE=1 and --enable-sleep-mode; /sleep reads `level` from the query string
only (a JSON body is ignored and gives level 1); `mode=wait` exists from 0.17; level 2 wakes
in three steps (weights, reload_weights, kv_cache); before 0.11 a woken engine can serve
from stale prefix-cache blocks (upstream #16234), so the cache is reset after the wake.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from vllm_supervisor.config.settings import Startup
from vllm_supervisor.gpu.memory import Held
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime.effects import GpuGuard, ProberLike, SleepPlan
from vllm_supervisor.runtime.generation import Generation

GIB = 1024**3
MODE_WAIT_SINCE = (0, 17, 0)  # /sleep?mode= (upstream PR 34528); older ones ignore the param
# The API server resets the prefix cache on sleep at the latest from 0.11 (upstream PR 22726,
# August 2025, for #16234 and #20627); before, a woken engine could serve from stale blocks.
CACHE_RESET_BY_SLEEP_SINCE = (0, 11, 0)
SLEEP_TIMEOUT = 300.0  # level 1 copies every weight to host RAM: allow a large model
STATE_TIMEOUT = 10.0  # GET /is_sleeping
FREED_ENOUGH = 0.5  # less than this share of the engine's GPU memory freed is reported
SETTLE = (0.2, 0.5, 1.0)  # re-reads of NVML while the freed memory shows up


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


async def fall_asleep(
    gen: Generation,
    post: ev.Post,
    prober: ProberLike,
    plan: SleepPlan,
    gpu: GpuGuard,
    available_ram: Callable[[], int | None],
) -> None:
    assert gen.engine is not None  # only a running engine is put to sleep
    error, note = await sleep_engine(prober, plan, gpu, gen.engine.pid, available_ram)
    post(ev.Slept(gen.number, error, note))


async def sleep_engine(
    prober: ProberLike,
    plan: SleepPlan,
    gpu: GpuGuard,
    pgid: int,
    available_ram: Callable[[], int | None],
) -> tuple[str | None, str]:
    """(None, what NVML saw freed) once the engine sleeps; else (why not, "")."""
    if plan.level == 1 and plan.weights_bytes:
        ram = available_ram()
        if ram is not None and ram < plan.weights_bytes:
            return (
                f"level 1 sleep copies {gib(plan.weights_bytes)} of weights to host RAM, but "
                f"only {gib(ram)} is available (MemAvailable): free host memory, or use "
                "sleep_level: 2 (weights reloaded from disk at wake)",
                "",
            )
    before = gpu.held(pgid)
    path = f"/sleep?level={plan.level}" + ("&mode=wait" if plan.mode_wait else "")
    status, text = await prober.dev("POST", path, SLEEP_TIMEOUT)
    if status != 200:
        return f"POST {path} {answered(status, text)}", ""
    asleep = await is_sleeping(prober)
    if asleep is not True:
        return f"POST {path} returned, but GET /is_sleeping says {asleep}", ""
    return None, await freed(gpu, pgid, before)


async def freed(gpu: GpuGuard, pgid: int, before: Held) -> str:
    """What the sleep freed, as NVML sees it; a shortfall is said, not fatal: vLLM keeps its
    CUDA graphs, NCCL buffers and CUDA context, and 0.14-0.15 freed far less."""
    held = sum(before.per_gpu.values())
    if not held:
        return ""  # no NVIDIA GPU (or nothing held): nothing to compare
    left = held
    for pause in SETTLE:
        left = sum(gpu.held(pgid).per_gpu.values())
        if held - left >= FREED_ENOUGH * held:
            break
        await asyncio.sleep(pause)
    share = (held - left) / held
    text = f"sleep freed {gib(held - left)} of the {gib(held)} the engine held ({share:.0%})"
    if share < FREED_ENOUGH:
        text += (
            f"; less than {FREED_ENOUGH:.0%}: vLLM keeps CUDA graphs, NCCL buffers and its "
            f"context, and some versions free far less ({gib(left)} still held)"
        )
    return text


async def is_sleeping(prober: ProberLike) -> bool | str:
    """GET /is_sleeping: the engine's answer, or what went wrong as text."""
    status, text = await prober.dev("GET", "/is_sleeping", STATE_TIMEOUT)
    if status != 200:
        return f"GET /is_sleeping {answered(status, text)}"
    try:
        value = json.loads(text).get("is_sleeping")
    except (ValueError, AttributeError):
        return f"an unreadable answer ({text[:100]!r})"
    return value if isinstance(value, bool) else f"is_sleeping={value!r}"


def wake_steps(plan: SleepPlan) -> list[tuple[str, dict[str, object] | None]]:
    """The calls that wake the engine, in order (POST each)."""
    if plan.level == 1:
        steps: list[tuple[str, dict[str, object] | None]] = [("/wake_up", None)]
    else:  # the weights were discarded: allocate them, load them from disk, then the cache
        steps = [
            ("/wake_up?tags=weights", None),
            ("/collective_rpc", {"method": "reload_weights"}),
            ("/wake_up?tags=kv_cache", None),
        ]
    if plan.reset_prefix_cache:
        steps.append(("/reset_prefix_cache", None))
    return steps


async def wake(
    gen: Generation, post: ev.Post, prober: ProberLike, plan: SleepPlan, startup: Startup
) -> None:
    """Wake, then the readiness probes a start passes (served names, one token): a wake that
    returns but cannot generate has been seen (docs/vllm-behaviour.md)."""
    error = await wake_engine(prober, plan, startup.start_timeout)
    if error is None:
        error = await prober.models(startup.probe_timeout)
    if error is None and startup.probe_generation:
        error = await prober.one_token(startup.probe_timeout)
    post(ev.Woke(gen.number, error))


async def wake_engine(prober: ProberLike, plan: SleepPlan, timeout: float) -> str | None:
    for path, body in wake_steps(plan):
        status, text = await prober.dev("POST", path, timeout, body)
        if status != 200:
            return f"POST {path} {answered(status, text)}"
    asleep = await is_sleeping(prober)
    return None if asleep is False else f"after the wake, GET /is_sleeping says {asleep}"


def answered(status: int, text: str) -> str:
    if status == 0:
        return f"failed: {text}"
    hint = (
        " (no dev endpoints: the engine runs without VLLM_SERVER_DEV_MODE=1)"
        if status == 404
        else ""
    )
    return f"answered {status}: {text[:200]}{hint}"
