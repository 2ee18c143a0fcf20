"""The supervisor's watchers: coroutines that observe one engine generation and only post
events.

Each gets what it needs and nothing more (the generation, `post`, the prober, its settings,
the clock), runs as a task of that generation, and is cancelled by the supervisor when the
generation ends. The supervisor alone decides what their events mean (supervisor.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from vllm_supervisor.config.settings import Health, Startup
from vllm_supervisor.gpu.memory import Held
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime.effects import EngineHandle, GpuGuard, ProberLike
from vllm_supervisor.runtime.generation import Generation

Clock = Callable[[], float]


async def wait_exit(gen: Generation, post: ev.Post, engine: EngineHandle) -> None:
    post(ev.Exited(gen.number, await engine.wait()))


async def readiness(gen: Generation, post: ev.Post, prober: ProberLike, startup: Startup) -> None:
    """Poll /health until 200; a log line saying the server starts cuts the wait short."""
    while await prober.health(timeout=2.0) != 200:
        await gen.server_starting.wait(startup.poll_interval)
    post(ev.PortUp(gen.number))


async def probe(gen: Generation, post: ev.Post, prober: ProberLike, startup: Startup) -> None:
    err = await prober.models(startup.probe_timeout)
    if err is None and startup.probe_generation:
        err = await prober.one_token(startup.probe_timeout)
    post(ev.ProbesDone(gen.number, err))


async def start_timer(gen: Generation, post: ev.Post, startup: Startup, clock: Clock) -> None:
    """Until the generation is ready: a start timeout, a stall timeout (no load progress),
    and a StillLoading tick for systemd's start timeout."""
    tick = min(5.0, startup.stall_timeout / 4, startup.start_timeout / 4)
    seen, last_change = gen.progress.changes, clock()
    while True:
        await asyncio.sleep(tick)
        if gen.ready_at is not None:
            return  # startup is over
        now = clock()
        if gen.progress.changes != seen:
            seen, last_change = gen.progress.changes, now
        if now - gen.spawned_at > startup.start_timeout:
            post(
                ev.StartTimeout(
                    gen.number,
                    f"not ready after {startup.start_timeout:g} s (startup.start_timeout)",
                )
            )
            return
        if now - last_change > startup.stall_timeout:
            post(
                ev.StartTimeout(
                    gen.number,
                    f"no load progress for {startup.stall_timeout:g} "
                    f"s in phase '{gen.progress.phase}' "
                    "(startup.stall_timeout)",
                )
            )
            return
        # systemd(1) would kill a start job that outlives TimeoutStartSec: extend it while
        # the load makes progress and the engine lives.
        post(ev.StillLoading(gen.number, 3 * tick + 5))


async def downloads(
    gen: Generation, post: ev.Post, size: Callable[[], int], startup: Startup, clock: Clock
) -> None:
    """Until the generation is ready: the model's bytes in the download cache, sampled as
    often as the stall timer looks. vLLM downloads with its progress bar off and logs nothing
    until "Time spent downloading weights" (vLLM 0.32, model_loader/weight_utils.py), so a
    download longer than stall_timeout was killed as a stall (issue 20): growth is progress."""
    every = min(2.0, startup.stall_timeout / 4)
    last, at = await asyncio.to_thread(size), clock()
    while gen.ready_at is None:
        await asyncio.sleep(every)
        now_size, now = await asyncio.to_thread(size), clock()
        if now_size > last:
            post(ev.Downloading(gen.number, now_size, (now_size - last) / max(now - at, 1e-3)))
        last, at = now_size, now


async def liveness(
    gen: Generation, post: ev.Post, prober: ProberLike, health: Health, clock: Clock
) -> None:
    fails, last_generation = 0, clock()
    while True:
        await asyncio.sleep(health.interval)
        got = await prober.health(health.timeout)
        if got == 503:
            post(ev.EngineDead(gen.number, "/health answered 503 (EngineDeadError)"))
            return
        fails = 0 if got == 200 else fails + 1
        if fails >= health.failures:
            what = "engine stopped listening" if got == "refused" else "engine hung"
            post(
                ev.EngineDead(gen.number, f"{what}: {fails} health checks in a row failed ({got})")
            )
            return
        if health.generation_interval and clock() - last_generation >= health.generation_interval:
            last_generation = clock()
            err = await prober.one_token(health.generation_timeout)
            if err is not None:
                post(ev.EngineDead(gen.number, f"generation probe failed: {err}"))
                return


async def backoff(
    gen: Generation, post: ev.Post, delay: float, gpu: GpuGuard, held: Held, clock: Clock
) -> None:
    """The next start waits for the old engine's GPU memory first (bounded), then for
    whatever is left of the backoff delay."""
    start = clock()
    note = await gpu.released(held)
    await asyncio.sleep(max(0.0, delay - (clock() - start)))
    post(ev.BackoffDone(gen.number, note))


async def stop_engine(
    gen: Generation, post: ev.Post, engine: EngineHandle, grace: float, gpu: GpuGuard
) -> None:
    held = gpu.held(engine.pid)  # what the group holds now, before its processes go
    escalated, left = await engine.stop(grace)
    note = await gpu.released(held)
    post(ev.Stopped(gen.number, escalated, tuple(left), note))


async def drain(
    gen: Generation, post: ev.Post, prober: ProberLike, timeout: float, clock: Clock
) -> None:
    """Wait until the engine reports no running requests (vllm:num_requests_running), or
    the timeout, then post DrainDone. Unreadable metrics count as drained: an engine that
    cannot answer /metrics is not serving anyone either."""
    start = clock()
    while True:
        running = await prober.running_requests(2.0)
        if not running:
            post(
                ev.DrainDone(
                    gen.number,
                    "no running requests" if running == 0 else "engine metrics unavailable",
                )
            )
            return
        if clock() - start >= timeout:
            post(
                ev.DrainDone(
                    gen.number, f"drain timeout {timeout:g} s, {running:g} request(s) still running"
                )
            )
            return
        await asyncio.sleep(0.2)
