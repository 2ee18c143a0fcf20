"""The supervisor: owns one model's lifecycle state and is the only thing that changes it.

Events arrive on one queue (events.py) and are dispatched exhaustively; OS effects come in
through `Effects` (effects.py), so tests drive the whole state machine with fakes and no fork.
Per-start state lives in one `Generation` (generation.py); what the supervisor wants of its
engine is one Intent, set once per order, and a deactivation under way is one Deactivation.
It was one object split over two files by inheritance (engine_runs.py; issue 19): it is one
class in one file, longer than the others because it is the one owner; what can live apart
does (watchers.py, sleep.py, lifecycle.py, restarts.py, status.py). The admin socket sees it
through a narrow port (AdminPort: runtime/admin.py). Decisions cite the vLLM behaviour they
guard against (docs/vllm-behaviour.md).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any, assert_never

from vllm_supervisor import exitcodes
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime import sleep, watchers
from vllm_supervisor.runtime.broadcast import Broadcast
from vllm_supervisor.runtime.diagnose import Finding, diagnose
from vllm_supervisor.runtime.effects import Effects, ModelSetup, SleepPlan
from vllm_supervisor.runtime.engine_log import EngineLog
from vllm_supervisor.runtime.generation import Generation
from vllm_supervisor.runtime.group import make_room
from vllm_supervisor.runtime.lifecycle import Lifecycle
from vllm_supervisor.runtime.restarts import RestartTracker, judge
from vllm_supervisor.runtime.states import State
from vllm_supervisor.runtime.status import Status, as_dict, status_line
from vllm_supervisor.runtime.tasks import DRAIN, LIVENESS, SLEEP, GenerationTasks


class Intent(enum.Enum):
    """What the supervisor wants of its engine, set once by each order that changes it."""

    INACTIVE = enum.auto()  # none (deactivate; at start until autostart's activate)
    ACTIVE = enum.auto()  # serving (activate, restart; a reload that restarts it)
    SHUTDOWN = enum.auto()  # none, and the process ends once the engine is gone


@dataclass
class Deactivation:
    """A deactivation under way, and how the engine sleeps after it: its sleep plan (None:
    it ends in a stop) and whether the sleep call was made (then the engine falls asleep,
    and sleeps with that plan until a wake)."""

    sleep: SleepPlan | None
    called: bool = False


class Supervisor:
    def __init__(self, name: str, setup: ModelSetup, effects: Effects) -> None:
        self.name = name
        self.setup = setup
        self.effects = effects
        self.queue: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.life = Lifecycle(name, effects)
        self.engine_log = EngineLog(effects.journal)
        self.state_feed: Broadcast[dict[str, Any]] = Broadcast()  # one snapshot per change
        self.gen: Generation | None = None  # the current (or last) engine generation
        self.exit_code: int | None = None  # set: run() returns it
        self._tracker = RestartTracker(setup.settings.restart)
        self._generations = 0
        self._intent = Intent.INACTIVE
        self._deactivation: Deactivation | None = None
        self._tasks = GenerationTasks()

    # ---- the queue ----------------------------------------------------------------------
    def post(self, event: ev.Event) -> None:
        self.queue.put_nowait(event)

    def _want(self, intent: Intent) -> None:
        """An order's intent; a shutdown under way is never called off."""
        if self._intent is not Intent.SHUTDOWN:
            self._intent = intent

    # ---- the admin socket's port (runtime/admin.py: AdminPort) ----------------------------
    def engine_key(self) -> str | None:
        address = self.setup.address
        return address.api_key if address is not None else None

    def log_tail(self, n: int) -> list[str]:
        return list(self.engine_log.recent)[-n:] if n > 0 else []

    def follow_log(self) -> asyncio.Queue[list[str]]:
        return self.engine_log.followers.subscribe()

    def unfollow_log(self, q: asyncio.Queue[list[str]]) -> None:
        self.engine_log.followers.unsubscribe(q)

    def follow_states(self) -> asyncio.Queue[dict[str, Any]]:
        return self.state_feed.subscribe()

    def unfollow_states(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self.state_feed.unsubscribe(q)

    # ---- the read side ----------------------------------------------------------------------
    @property
    def held(self) -> bool:
        """A start waits for its multi-node group (runtime/nodelink.py reads this)."""
        return self.gen is not None and self.gen.held and self.state is State.STARTING

    @property
    def reason(self) -> str:
        return self.life.reason

    @property
    def last_exit(self) -> str:
        return self.life.last_exit

    @property
    def wanted(self) -> bool:
        """The engine is wanted: activated, and no deactivation or shutdown under way."""
        return self._intent is Intent.ACTIVE

    @property
    def state(self) -> State:
        return self.life.state

    def status(self) -> Status:
        return self.life.status(self.gen, self.setup, self._tracker.used)

    def _publish(self) -> None:
        """STATUS= for systemctl status, and a snapshot for admin followers."""
        st = self.status()
        self.effects.notifier.status(status_line(st))
        if self.state_feed:
            self.state_feed.offer(as_dict(st))

    # ---- transitions ----------------------------------------------------------------------
    def _set(self, new: State, reason: str) -> None:
        self.life.enter(new, reason)
        self._publish()

    async def _start(self, reason: str) -> None:
        self._generations += 1
        gen = self.gen = Generation(
            self._generations, spawned_at=self.effects.clock(), first_line=self.engine_log.seen
        )
        self.life.failure = None
        self._set(State.STARTING, reason)
        blocked = self.effects.gpu.check_start(self.setup)
        if blocked is not None:  # vLLM would fail deep in its start: say why now
            await self._fail(f"GPU memory held: {blocked.why}", blocked)
            return
        why = self.effects.nodes.hold(gen.number) if self.effects.nodes is not None else None
        if why is not None:  # a multi-node rank: the group starts together (GroupHold)
            gen.held = True
            self._hold(gen, why)
            return
        await self._spawn(gen)

    def _hold(self, gen: Generation, why: str) -> None:
        if gen.progress.phase == f"waiting for the group: {why}":
            return
        gen.progress.phase = f"waiting for the group: {why}"
        self.life.note(gen.progress.phase)
        self._publish()

    async def _spawn(self, gen: Generation) -> None:
        gen.held = False
        gen.spawned_at = self.effects.clock()
        try:
            gen.command = self.setup.command()
            gen.engine = await self.effects.spawn(
                gen.command, lambda lines, text: self._on_lines(gen, lines, text)
            )
        except OSError as exc:
            gen.engine = None
            await self._fail(f"cannot start the engine: {exc}")
            return
        settings, prober = self.setup.settings, self.effects.prober
        self._tasks.start(watchers.wait_exit(gen, self.post, gen.engine))
        self._tasks.start(watchers.readiness(gen, self.post, prober, settings.startup))
        self._tasks.start(
            watchers.start_timer(gen, self.post, settings.startup, self.effects.clock)
        )
        if self.setup.cache_size is not None:
            size, clock = self.setup.cache_size, self.effects.clock
            self._tasks.start(watchers.downloads(gen, self.post, size, settings.startup, clock))

    def _ready(self, gen: Generation, woke: bool = False) -> None:
        now = self.effects.clock()
        if woke:
            self.life.last_wake = now - self.life.since
        else:
            gen.ready_at = now
            self.life.time_to_ready = self.life.last_start = now - gen.spawned_at
        self._set(State.READY, "woke; probes passed" if woke else "probes passed")
        self.effects.notifier.ready(status_line(self.status()))
        fx = self.effects
        health = self.setup.settings.health
        liveness = watchers.liveness(gen, self.post, fx.prober, health, fx.clock)
        self._tasks.start(liveness, LIVENESS)

    async def _fail(self, reason: str, finding: Finding | None = None) -> None:
        gen = self.gen
        assert gen is not None  # only an engine generation can fail
        now = self.effects.clock()
        if self.state in (State.STARTING, State.PROBING):
            self.life.last_start = now - gen.spawned_at
        self._tasks.cancel_all()
        engine, gen.engine = gen.engine, None
        held = self.effects.gpu.held(engine.pid if engine is not None else -1)
        if engine is not None:
            self.life.group_left(await engine.kill(), "after failure")
            now = self.effects.clock()
        lines = self.engine_log.since(gen.first_line)
        found = self.life.failed(reason, finding or diagnose(lines))
        verdict = judge(self._tracker, found, gen.ready_at, now)
        if verdict.delay is None:
            self._set(State.FAILED, reason)
            self.effects.save_failure(self.life.failure_record(reason, lines))
            self.effects.notifier.errno(1, f"{status_line(self.status())} ({verdict.why_final})")
            self.exit_code = exitcodes.CONFIG if verdict.permanent else exitcodes.FAILED
            return
        self.life.restarts += 1
        when = f"next start in {verdict.delay:g} s" if verdict.delay else "it had served: now"
        self._set(State.RESTARTING, f"{reason}; {when}")
        fx = self.effects
        self._tasks.start(watchers.backoff(gen, self.post, verdict.delay, fx.gpu, held, fx.clock))

    async def _stop(self, reason: str) -> bool:
        """Begin stopping; True when an engine is being stopped (Stopped will follow)."""
        if self.state in (State.INACTIVE, State.STOPPING):
            return self.state is State.STOPPING
        gen = self.gen
        assert gen is not None  # every other state belongs to a generation
        self._tasks.cancel_all()
        loading = self.state is State.STARTING
        self._set(State.STOPPING, reason)
        self.life.stop_reason = reason
        engine, gen.engine = gen.engine, None
        if engine is None:
            self.post(ev.Stopped(gen.number, False, ()))
            return True
        grace = self.setup.settings.stop.grace
        if loading:
            # vLLM swallows SIGTERM while it loads (3 of 3 runs on 0.32): waiting the full
            # drain grace would only delay the SIGKILL that has to come anyway.
            grace = min(grace, 5.0)
        self._tasks.start(watchers.stop_engine(gen, self.post, engine, grace, self.effects.gpu))
        return True

    async def _stopped(self, e: ev.Stopped) -> None:
        self.life.group_left(
            list(e.left), "after stop" + (" (SIGKILL needed)" if e.escalated else "")
        )
        gpu = f"; {e.gpu_note}" if e.gpu_note else ""
        if e.gpu_note:
            self.effects.log.error("GPU memory not released", model=self.name, note=e.gpu_note)
        if self._intent is Intent.SHUTDOWN:
            self._set(State.INACTIVE, "shut down" + gpu)
            self.exit_code = exitcodes.OK
        elif self._intent is Intent.ACTIVE:
            await self._start("restart")  # the start's own GPU check says what still holds it
        else:
            # Keep why it was stopped (a failed sleep, a reload): INACTIVE must say why.
            self._set(State.INACTIVE, f"stopped ({self.life.stop_reason})" + gpu)

    # ---- engine lines -------------------------------------------------------------------------
    def _on_lines(self, gen: Generation, lines: list[str], text: str) -> None:
        """Every engine line passes here, in batches; work per line only on a regex hit, so a
        log flood does not slow the engine (scripts/bench/log_pump.py)."""
        self.engine_log.take(lines, text)
        # Load progress matters only until READY; skipping it afterwards keeps a request-log
        # flood cheap.
        loading = gen is self.gen and self.state in (State.STARTING, State.PROBING)
        new_phase, fatal = gen.scan(lines, text, loading)
        if new_phase and self.state is State.STARTING:  # `vllmctl activate` shows each phase
            self._publish()
        if fatal is not None:
            # Act at once: vLLM's own watchdog exits the server only ~5 s later.
            self.post(ev.EngineDead(gen.number, f"engine log: {fatal.strip()[:200]}"))

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
                    self._want(Intent.ACTIVE)
                    await self._stop(e.reason)
            case ev.Shutdown():
                if self.effects.nodes is not None:
                    self.effects.nodes.leaving(e.reason)
                self._intent = Intent.SHUTDOWN
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
            case ev.Downloading():
                if st is State.STARTING and gen.progress.download(e.size, e.rate) is not None:
                    self._publish()  # STATUS=, `vllmctl activate`, the gateway's progress
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
                d = self._deactivation
                if st is State.DRAINING and d and d.sleep and self.setup.sleep is not None:
                    self._fall_asleep(gen, self.setup.sleep, f"drained ({e.why})")
                elif st is State.DRAINING:
                    await self._stop(f"deactivate ({e.why})")
            case ev.Slept():
                await self._slept(e, gen)
            case ev.GroupHold():
                if st is State.STARTING and gen.held and e.why is None:
                    await self._spawn(gen)
                elif st is State.STARTING and gen.held and e.why is not None:
                    self._hold(gen, e.why)
            case ev.Woke():
                if st is State.PROBING and e.error is None:
                    self._ready(gen, woke=True)
                elif st is State.PROBING:  # the engine is in no known state: start it afresh
                    # (the activation that woke it wants it active: the stop restarts it)
                    await self._stop(f"wake failed: {e.error}; starting the engine cold")
            case _:
                assert_never(e)

    # ---- orders ---------------------------------------------------------------------------
    async def _activate(self, reason: str, swap: bool = False) -> str | None:
        """Start the engine if it is not running; None, or why it was refused (then the
        intent stays what it was)."""
        if self.state in (State.INACTIVE, State.SLEEPING) and self.setup.gpu_group is not None:
            group = self.setup.gpu_group
            # Decide and start under the group's lock: no other member can decide between.
            async with self.effects.group.lock(group):
                refused = await make_room(
                    self.effects.group, group, self.setup.peers, swap, self.effects.log, self.name
                )
                if refused:
                    self.life.note(refused)
                    self._publish()
                    return refused
                self._want(Intent.ACTIVE)
                await self._start_or_wake(reason + (" (swap)" if swap else ""))
            return None
        self._want(Intent.ACTIVE)
        if self.falling_asleep:
            pass  # the sleep call cannot be called off: _slept() wakes it after
        elif self.state is State.DRAINING:  # the deactivation is called off: keep serving
            self._tasks.cancel(DRAIN)
            self._set(State.READY, f"{reason} (drain called off)")
        elif self.state in (State.INACTIVE, State.SLEEPING):
            await self._start_or_wake(reason)
        # STOPPING: _stopped() starts again, as the intent says; others: running already.
        return None

    @property
    def falling_asleep(self) -> bool:
        """Draining done, the sleep call made, its answer not yet in: the state a client
        sees as `draining`, which an activation cannot call off."""
        d = self._deactivation
        return self.state is State.DRAINING and d is not None and d.called

    # ---- sleep mode (runtime/sleep.py) --------------------------------------------------------
    async def _deactivate(self, e: ev.Deactivate) -> None:
        self._want(Intent.INACTIVE)
        plan = None if e.stop else self.setup.sleep
        if self.state is State.SLEEPING:
            if e.stop:  # also give back the host RAM (level 1) and the CUDA context
                await self._stop(e.reason)
        elif self.state is State.READY and self.gen is not None and (e.drain_timeout or plan):
            self._deactivation = Deactivation(plan)
            if e.drain_timeout > 0:
                self._set(State.DRAINING, f"{e.reason}: draining up to {e.drain_timeout:g} s")
                fx = self.effects
                drain = watchers.drain(self.gen, self.post, fx.prober, e.drain_timeout, fx.clock)
                self._tasks.start(drain, DRAIN)
            elif plan is not None:
                self._set(State.DRAINING, f"{e.reason}: no drain")
                self._fall_asleep(self.gen, plan, e.reason)
        elif self.state is State.DRAINING and self._deactivation is not None:
            if plan is None:  # --stop wins: the drain (or the sleep call) ends in a stop
                self._deactivation.sleep = None
        else:
            await self._stop(e.reason)

    def _fall_asleep(self, gen: Generation, plan: SleepPlan, why: str) -> None:
        """Sleep keeps the engine: only its liveness checks stop (a sleeping engine does not
        generate); its exit watcher stays, so a death while asleep is still seen."""
        self._tasks.cancel(LIVENESS)
        self.life.note(f"{why}: putting the engine to sleep (level {plan.level})")
        self._publish()
        fx = self.effects
        self._deactivation = Deactivation(plan, called=True)
        self._tasks.start(
            sleep.fall_asleep(gen, self.post, fx.prober, plan, fx.gpu, fx.available_ram), SLEEP
        )

    async def _slept(self, e: ev.Slept, gen: Generation) -> None:
        if self.state is not State.DRAINING:
            return
        d = self._deactivation
        if e.error is not None or d is None or d.sleep is None:
            why = f"sleep failed: {e.error}; stopping instead" if e.error else "deactivate --stop"
            if e.error:
                self.effects.log.error("sleep failed", model=self.name, error=e.error)
            await self._stop(why)
            return
        if e.note:
            self.effects.log.info("engine asleep", model=self.name, note=e.note)
        note = f"; {e.note}" if e.note else ""
        self._set(State.SLEEPING, f"asleep (level {d.sleep.level})" + note)
        if self._intent is Intent.ACTIVE:  # activated while it fell asleep
            await self._start_or_wake("activate (during the sleep)")

    async def _start_or_wake(self, reason: str) -> None:
        d, gen = self._deactivation, self.gen
        plan = d.sleep if d is not None and d.called else None
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
            self._want(Intent.ACTIVE)
            await self._stop("config changed (reload)")
        else:
            self.effects.log.info("reload: engine command unchanged", model=self.name)
        self.life.last_reload = result
        return result
