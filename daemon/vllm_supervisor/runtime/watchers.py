"""The supervisor's watchers: coroutines that observe the engine and only post events.

Each runs as a task of the current engine generation; the supervisor cancels them when the
generation ends and alone decides what their events mean (supervisor.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime.states import State

if TYPE_CHECKING:
    from vllm_supervisor.runtime.supervisor import EngineHandle, Supervisor


async def watch(sup: Supervisor, gen: int, engine: EngineHandle) -> None:
    sup.post(ev.Exited(gen, await engine.wait()))


async def readiness(sup: Supervisor, gen: int) -> None:
    while await sup.p.prober.health(timeout=2.0) != 200:
        sup.kick.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sup.kick.wait(), sup.s.startup.poll_interval)
    sup.post(ev.PortUp(gen))


async def probe(sup: Supervisor, gen: int) -> None:
    t = sup.s.startup.probe_timeout
    err = await sup.p.prober.models(t)
    if err is None and sup.s.startup.probe_generation:
        err = await sup.p.prober.one_token(t)
    sup.post(ev.ProbesDone(gen, err))


async def start_timer(sup: Supervisor, gen: int) -> None:
    st = sup.s.startup
    tick = min(5.0, st.stall_timeout / 4, st.start_timeout / 4)
    seen, last_change = sup.progress.changes, sup.p.clock()
    while True:
        await asyncio.sleep(tick)
        if sup.snap.state not in (State.STARTING, State.PROBING) or sup.gen != gen:
            return  # startup is over: READY (or failed) ends this timer
        now = sup.p.clock()
        if sup.progress.changes != seen:
            seen, last_change = sup.progress.changes, now
        if now - sup.spawned_at > st.start_timeout:
            sup.post(ev.StartTimeout(gen, f"not ready after {st.start_timeout:g} s "
                                           "(startup.start_timeout)"))
            return
        if now - last_change > st.stall_timeout:
            sup.post(ev.StartTimeout(gen, f"no load progress for {st.stall_timeout:g} s "
                                           f"in phase '{sup.progress.phase}' "
                                           "(startup.stall_timeout)"))
            return
        # systemd(1) would kill a start job that outlives TimeoutStartSec: extend it while
        # the load makes progress and the engine lives.
        sup.p.notifier.extend_timeout(3 * tick + 5)
        sup.p.notifier.status(sup.status_line())


async def liveness(sup: Supervisor, gen: int) -> None:
    h, fails, last_gen = sup.s.health, 0, sup.p.clock()
    while True:
        await asyncio.sleep(h.interval)
        got = await sup.p.prober.health(h.timeout)
        if got == 503:
            sup.post(ev.EngineDead(gen, "/health answered 503 (EngineDeadError)"))
            return
        fails = 0 if got == 200 else fails + 1
        if fails >= h.failures:
            what = ("engine stopped listening" if got == "refused" else "engine hung")
            sup.post(ev.EngineDead(gen, f"{what}: {fails} health checks in a row "
                                         f"failed ({got})"))
            return
        if h.generation_interval and sup.p.clock() - last_gen >= h.generation_interval:
            last_gen = sup.p.clock()
            err = await sup.p.prober.one_token(h.generation_timeout)
            if err is not None:
                sup.post(ev.EngineDead(gen, f"generation probe failed: {err}"))
                return


async def backoff(sup: Supervisor, gen: int, delay: float) -> None:
    await asyncio.sleep(delay)
    sup.post(ev.BackoffDone(gen))


async def stop_task(sup: Supervisor, gen: int, engine: EngineHandle, grace: float) -> None:
    escalated, left = await engine.stop(grace)
    sup.post(ev.Stopped(gen, escalated, tuple(left)))


async def watchdog(sup: Supervisor) -> None:
    usec = sup.p.notifier.watchdog_usec
    if not usec:
        return
    while True:  # sd_watchdog_enabled(3): ping at half the interval, from the event loop
        sup.p.notifier.watchdog()
        await asyncio.sleep(usec / 2_000_000)


async def drain(sup: Supervisor, gen: int, timeout: float) -> None:
    """Wait until the engine reports no running requests (vllm:num_requests_running), or
    the timeout, then post DrainDone. Unreadable metrics count as drained: an engine that
    cannot answer /metrics is not serving anyone either."""
    start = sup.p.clock()
    while True:
        running = await sup.p.prober.running_requests(2.0)
        if not running:
            sup.post(ev.DrainDone(gen, "no running requests" if running == 0
                                  else "engine metrics unavailable"))
            return
        if sup.p.clock() - start >= timeout:
            sup.post(ev.DrainDone(gen, f"drain timeout {timeout:g} s, {running:g} request(s) "
                                       "still running"))
            return
        await asyncio.sleep(0.2)
