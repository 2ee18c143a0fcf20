"""The supervisor: owns one model's lifecycle state and is the only thing that changes it
(with engine_runs.py, the transitions its orders share).

Events arrive on one queue (events.py) and are dispatched exhaustively; OS effects come in
through `Effects` (effects.py), so tests drive the whole state machine with fakes and no fork.
Per-start state lives in one `Generation` (generation.py). Decisions cite the vLLM behaviour
they guard against (docs/vllm-behaviour.md).
"""

from __future__ import annotations

import asyncio
from typing import assert_never

from vllm_supervisor import exitcodes
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime import sleep, watchers
from vllm_supervisor.runtime.diagnose import diagnose
from vllm_supervisor.runtime.effects import SleepPlan
from vllm_supervisor.runtime.engine_runs import EngineRuns
from vllm_supervisor.runtime.generation import Generation
from vllm_supervisor.runtime.group import make_room
from vllm_supervisor.runtime.states import State
from vllm_supervisor.runtime.status import status_line
from vllm_supervisor.runtime.tasks import DRAIN, LIVENESS, SLEEP


class Supervisor(EngineRuns):
    # ---- the loop -------------------------------------------------------------------------
    async def run(self) -> int:
        watchdog = asyncio.ensure_future(self.effects.notifier.keep_watchdog_fed())
        if self.setup.settings.autostart:
            self.post(ev.Activate(ev.AUTOSTART))
        else:
            self.effects.notifier.ready(f"inactive (autostart off): {self.name}")
        try:
            while self.exit_code is None:
                await self._handle(await self.queue.get())
        finally:
            watchdog.cancel()
            self._tasks.cancel_all()
        return self.exit_code

    async def _handle(self, e: ev.Event) -> None:
        answer = await self._dispatch(e)
        self.life.events += 1
        if isinstance(e, ev.Order) and e.ack is not None and not e.ack.done():
            reload = answer if isinstance(answer, ev.ReloadResult) else None
            refused = answer if isinstance(answer, str) else None
            e.ack.set_result(ev.Ack(self.life.events, reload, refused))

    async def _dispatch(self, e: ev.Event) -> ev.ReloadResult | str | None:
        """Orders always count; an engine event counts only while its generation is the
        current one (a watcher of a gone engine may still post)."""
        if isinstance(e, ev.Order):
            return await self._order(e)
        if self.gen is not None and e.gen == self.gen.number:
            await self._engine_event(e, self.gen)
        return None

    async def _order(self, e: ev.Order) -> ev.ReloadResult | str | None:
        """The outcome an order's Ack carries: a reload's result, or why an activation was
        refused."""
        match e:
            case ev.Activate():
                refused = await self._activate(e.reason, e.swap)
                if refused and e.reason == ev.AUTOSTART:
                    # The service is up, only its engine is not: systemd may count it started.
                    self.effects.notifier.ready(status_line(self.status()))
                return refused
            case ev.Deactivate():
                await self._deactivate(e)
            case ev.Restart():
                if self.state is State.INACTIVE:
                    return await self._activate(e.reason)
                else:
                    self._want_active = True
                    await self._stop(e.reason)
            case ev.Shutdown():
                self._shutting_down, self._want_active = True, False
                self.effects.notifier.stopping(f"stopping ({e.reason})")
                if not await self._stop(e.reason):
                    self.exit_code = exitcodes.OK
            case ev.Reload():
                return await self._reload()
            case _:
                assert_never(e)
        return None

    async def _engine_event(self, e: ev.EngineEvent, gen: Generation) -> None:
        st = self.state
        match e:
            case ev.Stopped():
                await self._stopped(e)
            case ev.Exited():
                if st.engine_expected:
                    # vLLM exits 0 after its engine dies (upstream 48966): any exit we did
                    # not ask for is a failure, whatever the code.
                    self.life.last_exit = e.exit.describe()
                    await self._fail(f"engine {e.exit.describe()} unexpectedly")
                elif st is State.SLEEPING:
                    await self._died_asleep(gen, e.exit.describe())
            case ev.PortUp():
                if st is State.STARTING:
                    self._set(State.PROBING, "HTTP server answers /health")
                    self._tasks.start(
                        watchers.probe(
                            gen, self.post, self.effects.prober, self.setup.settings.startup
                        )
                    )
            case ev.ProbesDone():
                if st is State.PROBING:
                    if e.error is None:
                        self._ready(gen)
                    else:
                        await self._fail(f"readiness probe failed: {e.error}")
            case ev.EngineDead() | ev.StartTimeout():
                if st.engine_expected:
                    await self._fail(e.why)
            case ev.StillLoading():
                if st in (State.STARTING, State.PROBING):
                    self.effects.notifier.extend_timeout(e.extend)
                    self.effects.notifier.status(status_line(self.status()))
            case ev.BackoffDone():
                if e.gpu_note:
                    self.effects.log.error(
                        "GPU memory not released", model=self.name, note=e.gpu_note
                    )
                if st is State.RESTARTING:
                    await self._start("backoff elapsed")
            case ev.DrainDone():
                if st is State.DRAINING and self._to_sleep and self.setup.sleep is not None:
                    self._fall_asleep(gen, self.setup.sleep, f"drained ({e.why})")
                elif st is State.DRAINING:
                    await self._stop(f"deactivate ({e.why})")
            case ev.Slept():
                await self._slept(e, gen)
            case ev.Woke():
                if st is State.PROBING and e.error is None:
                    self._ready(gen, woke=True)
                elif st is State.PROBING:  # the engine is in no known state: start it afresh
                    self._want_active = True
                    await self._stop(f"wake failed: {e.error}; starting the engine cold")
            case _:
                assert_never(e)

    # ---- orders ---------------------------------------------------------------------------
    async def _activate(self, reason: str, swap: bool = False) -> str | None:
        """Start the engine if it is not running; None, or why it was refused."""
        if self.state is State.DRAINING and self._tasks.running(SLEEP):
            self._want_active = True  # the sleep call cannot be called off: wake after it
        elif self.state is State.DRAINING:  # the deactivation is called off: keep serving
            self._want_active = True
            self._tasks.cancel(DRAIN)
            self._set(State.READY, f"{reason} (drain called off)")
        elif self.state in (State.INACTIVE, State.SLEEPING):
            group = self.setup.gpu_group
            if group is None:
                self._want_active = True
                await self._start_or_wake(reason)
                return None
            # Decide and start under the group's lock: no other member can decide between.
            async with self.effects.group.lock(group):
                refused = await make_room(
                    self.effects.group, group, self.setup.peers, swap, self.effects.log, self.name
                )
                if refused:
                    self.life.note(refused)
                    self._publish()
                    return refused
                self._want_active = True
                await self._start_or_wake(reason + (" (swap)" if swap else ""))
        else:
            # STOPPING: _stopped() starts again because _want_active is set; others: running.
            self._want_active = True
        return None

    # ---- sleep mode (runtime/sleep.py) --------------------------------------------------------
    async def _deactivate(self, e: ev.Deactivate) -> None:
        self._want_active = False
        plan = None if e.stop else self.setup.sleep
        if self.state is State.SLEEPING:
            if e.stop:  # also give back the host RAM (level 1) and the CUDA context
                await self._stop(e.reason)
        elif self.state is State.READY and self.gen is not None and (e.drain_timeout or plan):
            self._to_sleep = plan is not None
            if e.drain_timeout > 0:
                self._set(State.DRAINING, f"{e.reason}: draining up to {e.drain_timeout:g} s")
                fx = self.effects
                drain = watchers.drain(self.gen, self.post, fx.prober, e.drain_timeout, fx.clock)
                self._tasks.start(drain, DRAIN)
            elif plan is not None:
                self._set(State.DRAINING, f"{e.reason}: no drain")
                self._fall_asleep(self.gen, plan, e.reason)
        elif self.state is State.DRAINING:
            self._to_sleep = self._to_sleep and plan is not None  # --stop wins
        else:
            await self._stop(e.reason)

    def _fall_asleep(self, gen: Generation, plan: SleepPlan, why: str) -> None:
        """Sleep keeps the engine: only its liveness checks stop (a sleeping engine does not
        generate); its exit watcher stays, so a death while asleep is still seen."""
        self._tasks.cancel(LIVENESS)
        self.life.note(f"{why}: putting the engine to sleep (level {plan.level})")
        self._publish()
        fx = self.effects
        self._asleep = plan
        self._tasks.start(
            sleep.fall_asleep(gen, self.post, fx.prober, plan, fx.gpu, fx.available_ram), SLEEP
        )

    async def _slept(self, e: ev.Slept, gen: Generation) -> None:
        if self.state is not State.DRAINING:
            return
        if e.error is not None or not self._to_sleep:
            why = f"sleep failed: {e.error}; stopping instead" if e.error else "deactivate --stop"
            if e.error:
                self.effects.log.error("sleep failed", model=self.name, error=e.error)
            await self._stop(why)
            return
        if e.note:
            self.effects.log.info("engine asleep", model=self.name, note=e.note)
        level = self._asleep.level if self._asleep else "?"
        self._set(State.SLEEPING, f"asleep (level {level})" + (f"; {e.note}" if e.note else ""))
        if self._want_active:  # activated while it fell asleep
            await self._start_or_wake("activate (during the sleep)")

    async def _start_or_wake(self, reason: str) -> None:
        plan, gen = self._asleep, self.gen
        if self.state is not State.SLEEPING or plan is None or gen is None:
            await self._start(reason)
            return
        self._set(State.PROBING, f"{reason}: waking (level {plan.level})")
        fx = self.effects
        self._tasks.start(sleep.wake(gen, self.post, fx.prober, plan, self.setup.settings.startup))

    async def _died_asleep(self, gen: Generation, how: str) -> None:
        """A sleeping engine is not wanted: its death is no failure to restart from, but the
        diagnosis is kept and the next activate starts it cold."""
        self._tasks.cancel_all()
        engine, gen.engine = gen.engine, None
        if engine is not None:
            self.life.group_left(await engine.kill(), "after its death while asleep")
        self.life.last_exit = how
        reason = f"engine {how} while asleep; the next activate starts it cold"
        self.life.failed(reason, diagnose(self.engine_log.since(gen.first_line)))
        self._set(State.INACTIVE, reason)

    async def _reload(self) -> ev.ReloadResult:
        """Apply a re-read config: new settings at once, a new engine command by restarting
        the engine (only when it runs and the command changed)."""
        if self.effects.reload is None:
            return ev.ReloadResult(False, False, "reload is not available here")
        try:
            # Off the loop: parsing a large or hostile file must not stall the admin socket,
            # the log pump or the health checks of the engine that serves meanwhile.
            got = await asyncio.to_thread(self.effects.reload)
        except Exception as exc:  # a reload that fails, for any reason, never ends the engine
            got = f"the config could not be read: {type(exc).__name__}: {exc}"
        if isinstance(got, str):
            self.effects.log.error(
                "reload refused: config invalid; keeping the running one",
                model=self.name,
                problems=got,
            )
            self.life.last_reload = ev.ReloadResult(False, False, got)
            return self.life.last_reload
        self.setup = got
        self._tracker.policy = got.settings.restart
        if got.address is not None:
            self.effects.prober.aim(got.address)
        before = self.gen.command if self.gen is not None else None
        asleep = self.state is State.SLEEPING
        result = ev.ReloadResult.of(before, got.command(), self.state.engine_expected or asleep)
        if result.restart and asleep:  # a woken engine would run the old command
            result = ev.ReloadResult(True, True, "the sleeping engine stops: activate starts anew")
            await self._stop("config changed (reload) while asleep")
        elif result.restart:
            self.effects.notifier.reloading()
            self._want_active = True
            await self._stop("config changed (reload)")
        else:
            self.effects.log.info("reload: engine command unchanged", model=self.name)
        self.life.last_reload = result
        return result
