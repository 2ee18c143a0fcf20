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
import time
from dataclasses import dataclass, replace
from typing import Any, assert_never

from vllm_supervisor import exitcodes
from vllm_supervisor.runtime import candidate, sleep, watchers
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime.broadcast import Broadcast
from vllm_supervisor.runtime.candidate import Candidate, Outgoing, Phase
from vllm_supervisor.runtime.diagnose import Finding, diagnose
from vllm_supervisor.runtime.effects import Effects, ModelSetup, Prepared, SleepPlan
from vllm_supervisor.runtime.engine_log import EngineLog
from vllm_supervisor.runtime.generation import Generation
from vllm_supervisor.runtime.group import make_room
from vllm_supervisor.runtime.lifecycle import Lifecycle
from vllm_supervisor.runtime.probes import EngineAddress
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
        # An upgrade (runtime/candidate.py): the new engine beside the serving one, and the
        # engine a promotion replaced, until it is stopped; what upgrades ended how.
        self._cand: Candidate | None = None
        self._outgoing: Outgoing | None = None
        self.upgrades: dict[str, int] = {}
        self.last_upgrade: dict[str, Any] | None = None

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

    def addresses(self) -> tuple[EngineAddress | None, EngineAddress | None]:
        """Where the serving engine and a ready candidate answer (runtime/golden.py)."""
        serving, port = self.setup.address, self.gen.port if self.gen is not None else None
        if serving is not None and port is not None:
            serving = replace(serving, port=port)
        c = self._cand
        return serving, c.address if c is not None and c.phase is Phase.READY else None

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
        st = self.life.status(self.gen, self.setup, self._tracker.used)
        port = self.gen.port if self.gen is not None else None
        now = self.effects.clock()
        upgrade = {
            "candidate": self._cand.view(now) if self._cand is not None else None,
            "retiring": self._outgoing.engine.pid if self._outgoing is not None else None,
            "outcomes": dict(self.upgrades),
            "last": self.last_upgrade,
        }
        facts = {**st.facts, "upgrade": upgrade}
        if port is None:
            return replace(st, facts=facts)
        # A promoted candidate serves on its spare port until the next start.
        host = str(st.facts.get("host", ""))
        return replace(st, facts={**facts, "port": port}, endpoint=f"{host}:{port}")

    def _publish(self) -> None:
        """STATUS= for systemctl status, and a snapshot for admin followers."""
        st = self.status()
        self.effects.notifier.status(status_line(st))
        if self.state_feed:
            self.state_feed.offer(as_dict(st))

    # ---- transitions ----------------------------------------------------------------------
    def _set(self, new: State, reason: str) -> None:
        self.life.enter(new, reason)
        if new not in (State.READY, State.DRAINING) and self._cand is not None:
            # The candidate is judged beside a serving engine: without one it is not.
            self._discard("aborted", f"the serving engine is {new.value} ({reason})")
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
        if self.setup.address is not None:  # after a promoted candidate: the own port again
            self.effects.prober.aim(self.setup.address)
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
            await self._close_upgrade()
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
        if isinstance(e, ev.CandidateUp | ev.CandidateGone):
            await self._candidate_event(e)
            return None
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
            case ev.StartCandidate():
                return await self._start_candidate(e)
            case ev.Promote():
                return self._promote()
            case ev.Retire():
                return self._retire(e.drain_timeout)
            case ev.Discard():
                return self._discard(e.outcome, e.why or e.outcome)
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
            port = self.gen.port if self.gen is not None else None
            # A promoted candidate keeps its spare port until its next start.
            self.effects.prober.aim(
                got.address if port is None else replace(got.address, port=port)
            )
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

    # ---- upgrades: a candidate beside the serving engine (runtime/candidate.py) -------------
    def _count(self, outcome: str, venv: str, reason: str, detail: str) -> None:
        self.upgrades[outcome] = self.upgrades.get(outcome, 0) + 1
        self.last_upgrade = {"outcome": outcome, "venv": venv, "reason": reason,
                             "detail": detail, "at": time.time()}  # fmt: skip
        log = self.effects.log.info if outcome == "switched" else self.effects.log.error
        log("upgrade", model=self.name, outcome=outcome, venv=venv, kind=reason, detail=detail)

    async def _start_candidate(self, e: ev.StartCandidate) -> str | None:
        """Start the candidate, or say why not (the serving engine is never touched)."""
        fx, gen = self.effects, self.gen
        why = self._no_candidate_now()
        if why is not None:
            return why
        assert gen is not None and gen.engine is not None and fx.prepare and fx.prober_for
        if fx.room is not None:
            room = await asyncio.to_thread(fx.room, gen.engine.pid)
            if not room.fits:
                self._count("no-room", e.venv, e.reason, room.detail)
                return f"no room for a candidate beside the serving engine: {room.detail}"
        got = await asyncio.to_thread(fx.prepare, e.venv)
        if isinstance(got, str):
            self._count("check-failed", e.venv, e.reason, got)
            return got
        return await self._spawn_candidate(e, got)

    def _no_candidate_now(self) -> str | None:
        """Why no candidate can start now, or None."""
        fx, gen, c = self.effects, self.gen, self._cand
        if fx.prepare is None or fx.prober_for is None:
            return "upgrades are not available here"
        if self.state is not State.READY or gen is None or gen.engine is None:
            return (
                f"the model is {self.state.value}, not ready: a candidate is judged beside a "
                "serving engine (an inactive model is upgraded by its config alone)"
            )
        if c is not None and c.phase is not Phase.FAILED:
            return f"a candidate is already {c.phase.value} ({c.venv}): vllmctl upgrade --abort"
        if self._outgoing is not None:
            return "the engine an upgrade replaced is still being stopped: try again shortly"
        if fx.nodes is not None:
            return "a multi-node model cannot start a second engine group beside its own"
        return None

    async def _spawn_candidate(self, e: ev.StartCandidate, got: Prepared) -> str | None:
        fx = self.effects
        assert fx.prober_for is not None and got.setup.address is not None
        self._generations += 1
        address = replace(got.setup.address, port=got.port)
        c = Candidate(self._generations, e.venv, e.reason, got, address,
                      fx.prober_for(address), fx.clock())  # fmt: skip
        c.sink.append(fx.journal)  # its lines go to the journal, not to the serving log
        try:
            c.engine = await fx.spawn(got.command, c.lines)
        except OSError as exc:
            self._count("candidate-failed", e.venv, e.reason, str(exc))
            return f"cannot start the candidate: {exc}"
        self._cand = c
        fx.log.info("upgrade candidate started", model=self.name, venv=e.venv,
                    engine=got.version, port=got.port, pid=c.engine.pid)  # fmt: skip
        startup = got.setup.settings.startup
        c.tasks.start(candidate.come_up(c.number, self.post, c.prober, c.engine, startup, fx.clock))
        self._publish()
        return None

    async def _candidate_event(self, e: ev.CandidateUp | ev.CandidateGone) -> None:
        c, old = self._cand, self._outgoing
        if isinstance(e, ev.CandidateGone):
            self.life.group_left(list(e.left), e.why)
            if old is not None and old.number == e.number:
                self._outgoing = None
            if c is not None and c.number == e.number:
                c.gone = True
            self._publish()
            return
        if c is None or c.number != e.number or c.phase is Phase.FAILED:
            return
        if e.error is None and c.phase is Phase.STARTING:
            c.phase, c.ready_at = Phase.READY, self.effects.clock()
            assert c.engine is not None
            c.tasks.start(candidate.watch_exit(c.number, self.post, c.engine))
            self.effects.log.info("upgrade candidate ready", model=self.name, venv=c.venv,
                                  seconds=round(c.ready_at - c.started_at, 1))  # fmt: skip
        elif e.error is not None:
            self._discard("candidate-failed", e.error)
            return
        self._publish()

    def _discard(self, outcome: str, why: str) -> str | None:
        c = self._cand
        if c is None or c.phase is Phase.FAILED:
            return "no candidate is running"
        c.phase, c.error = Phase.FAILED, why
        c.tasks.cancel_all()
        engine, c.engine = c.engine, None
        self._count(outcome, c.venv, c.reason, why)
        if engine is not None:
            grace = min(self.setup.settings.stop.grace, 5.0)  # it served nobody
            c.tasks.start(candidate.stop(c.number, self.post, engine, grace, "candidate stopped"))
        self._publish()
        return None

    def _promote(self) -> str | None:
        """The candidate serves from now on: a new generation made of its engine, probed by
        the liveness checks at its port. The old engine runs on until Retire (the gateway
        first moves its new requests over: gateway/admin.py, /admin/follow)."""
        c, old = self._cand, self.gen
        if c is None or c.phase is not Phase.READY or c.engine is None:
            return "no candidate is ready"
        if self.state is not State.READY or old is None or old.engine is None:
            return f"the model is {self.state.value}, not ready"
        if self.setup.address is None or self.effects.prober_for is None:
            return "upgrades are not available here"
        self._tasks.cancel_all()  # the old engine's liveness checks and exit watcher
        c.tasks.cancel_all()
        self._outgoing = Outgoing(old.number, old.engine, self.setup.address,
                                  self.effects.prober_for(self.setup.address))  # fmt: skip
        if old.port is not None:
            self._outgoing.prober.aim(replace(self.setup.address, port=old.port))
        old.engine = None
        self._generations += 1
        now = self.effects.clock()
        gen = self.gen = Generation(self._generations, spawned_at=c.started_at,
                                    first_line=self.engine_log.seen)  # fmt: skip
        gen.engine, gen.port, gen.ready_at = c.engine, c.address.port, now
        gen.command = c.prepared.setup.command()  # as configured: what a reload compares
        gen.progress.phase = "ready"
        c.sink[0] = lambda lines, text: self._on_lines(gen, lines, text)
        self.setup = c.prepared.setup
        self._tracker.policy = self.setup.settings.restart
        self.effects.prober.aim(c.address)
        self._cand = None
        self._count("switched", c.venv, c.reason, f"{c.prepared.version} on port {c.address.port}")
        self.life.time_to_ready = self.life.last_start = (c.ready_at or now) - c.started_at
        self.life.note(f"switched to {c.prepared.version} ({c.reason}); the previous engine drains")
        self._tasks.start(watchers.wait_exit(gen, self.post, c.engine))
        health = self.setup.settings.health
        fx = self.effects
        self._tasks.start(watchers.liveness(gen, self.post, fx.prober, health, fx.clock), LIVENESS)
        self._publish()
        return None

    def _retire(self, drain_timeout: float) -> str | None:
        old = self._outgoing
        if old is None:
            return "no engine to retire"
        if not old.retiring:
            old.retiring = True
            grace, clock = self.setup.settings.stop.grace, self.effects.clock
            old.tasks.start(
                candidate.retire(old.number, self.post, old, drain_timeout, grace, clock)
            )
        return None

    async def _close_upgrade(self) -> None:
        """The process ends: no candidate or retired engine may outlive it."""
        for holder in (self._cand, self._outgoing):
            if holder is None:
                continue
            holder.tasks.cancel_all()
            engine = holder.engine
            if engine is not None:
                self.life.group_left(await engine.kill(), "upgrade engine, at exit")
        self._cand = self._outgoing = None
