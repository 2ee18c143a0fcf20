"""The supervisor: owns one model's lifecycle state and is the only thing that changes it.

Events arrive on one queue (events.py) and are dispatched exhaustively; OS effects come in
through `Effects` (effects.py), so tests drive the whole state machine with fakes and no fork.
Per-start state lives in one `Generation` (generation.py). Decisions cite the vLLM behaviour
they guard against (docs/vllm-behaviour.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, assert_never

from vllm_supervisor import exitcodes
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime import states, watchers
from vllm_supervisor.runtime.broadcast import Broadcast
from vllm_supervisor.runtime.diagnose import Finding, diagnose, first_fatal_line
from vllm_supervisor.runtime.effects import Effects, ModelSetup
from vllm_supervisor.runtime.generation import Generation
from vllm_supervisor.runtime.progress import READY_HINTS
from vllm_supervisor.runtime.restarts import RestartTracker
from vllm_supervisor.runtime.states import State
from vllm_supervisor.runtime.status import Status, as_dict, status_line

RECENT_LINES = 2000  # engine lines kept for `logs` and diagnosis
HISTORY = 64  # transitions kept for `state`


class Supervisor:
    def __init__(self, name: str, setup: ModelSetup, effects: Effects) -> None:
        self.name = name
        self.setup = setup
        self.effects = effects
        self.queue: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.state = State.INACTIVE
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.recent_lines: deque[str] = deque(maxlen=RECENT_LINES)
        self.state_feed: Broadcast[dict[str, Any]] = Broadcast()  # one snapshot per change
        self.line_feed: Broadcast[list[str]] = Broadcast()  # engine lines as they come
        self.gen: Generation | None = None  # the current (or last) engine generation
        self.restarts = 0
        self.exit_code: int | None = None  # set: run() returns it
        self._since = effects.clock()
        self._reason = ""
        self._tracker = RestartTracker(setup.settings.restart)
        self._generations = 0
        self._lines_seen = 0
        self._failure: Finding | None = None
        self._last_exit = ""
        self._time_to_ready: float | None = None
        self._last_start: float | None = None
        self._last_reload: ev.ReloadResult | None = None
        self._events_handled = 0
        self._want_active = False
        self._shutting_down = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._drain: asyncio.Task[None] | None = None

    # ---- the loop -------------------------------------------------------------------------
    def post(self, event: ev.Event) -> None:
        self.queue.put_nowait(event)

    async def run(self) -> int:
        watchdog = asyncio.ensure_future(self.effects.notifier.keep_watchdog_fed())
        if self.setup.settings.autostart:
            self.post(ev.Activate("autostart"))
        else:
            self.effects.notifier.ready(f"inactive (autostart off): {self.name}")
        try:
            while self.exit_code is None:
                await self._handle(await self.queue.get())
        finally:
            watchdog.cancel()
            self._cancel_tasks()
        return self.exit_code

    async def _handle(self, e: ev.Event) -> None:
        reload = await self._dispatch(e)
        self._events_handled += 1
        if isinstance(e, ev.Order) and e.ack is not None and not e.ack.done():
            e.ack.set_result(ev.Ack(self._events_handled, reload))

    async def _dispatch(self, e: ev.Event) -> ev.ReloadResult | None:
        match e:
            case ev.Activate() | ev.Deactivate() | ev.Restart() | ev.Shutdown() | ev.Reload():
                return await self._order(e)
            case (ev.Exited() | ev.PortUp() | ev.ProbesDone() | ev.EngineDead()
                  | ev.StartTimeout() | ev.StillLoading() | ev.BackoffDone() | ev.Stopped()
                  | ev.DrainDone()):
                if self.gen is not None and e.gen == self.gen.number:
                    await self._engine_event(e, self.gen)
                # else: from an engine generation that is already gone
                return None
            case _:
                assert_never(e)

    async def _order(self, e: ev.Order) -> ev.ReloadResult | None:
        match e:
            case ev.Activate():
                await self._activate(e.reason)
            case ev.Deactivate():
                self._want_active = False
                if e.drain_timeout > 0 and self.state is State.READY and self.gen is not None:
                    self._set(State.DRAINING,
                              f"{e.reason}: draining up to {e.drain_timeout:g} s")
                    self._drain = self._start_task(watchers.drain(
                        self.gen, self.post, self.effects.prober, e.drain_timeout,
                        self.effects.clock))
                elif self.state is not State.DRAINING:
                    await self._stop(e.reason)
            case ev.Restart():
                if self.state is State.INACTIVE:
                    await self._activate(e.reason)
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
                    self._last_exit = e.exit.describe()
                    await self._fail(f"engine {e.exit.describe()} unexpectedly")
            case ev.PortUp():
                if st is State.STARTING:
                    self._set(State.PROBING, "HTTP server answers /health")
                    self._start_task(watchers.probe(gen, self.post, self.effects.prober,
                                                    self.setup.settings.startup))
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
                if st is State.RESTARTING:
                    await self._start("backoff elapsed")
            case ev.DrainDone():
                if st is State.DRAINING:
                    await self._stop(f"deactivate ({e.why})")
            case _:
                assert_never(e)

    # ---- the read side ----------------------------------------------------------------------
    def status(self) -> Status:
        gen = self.gen
        return Status(
            model=self.name, state=self.state, reason=self._reason, since=self._since,
            now=self.effects.clock(), wall=time.time(), endpoint=self.setup.endpoint,
            pid=gen.engine.pid if gen is not None and gen.engine is not None else None,
            phase=gen.progress.phase if gen is not None else "spawned",
            progress=dict(gen.progress.facts) if gen is not None else {},
            spawned_at=gen.spawned_at if gen is not None else None,
            ready_at=gen.ready_at if gen is not None else None,
            restarts=self.restarts, budget_used=self._tracker.used,
            budget=self.setup.settings.restart.budget, last_exit=self._last_exit,
            failure=self._failure, time_to_ready=self._time_to_ready,
            last_start=self._last_start, events=self._events_handled,
            last_reload=self._last_reload, history=tuple(self.history),
            facts=self.setup.facts)

    def _publish(self) -> None:
        """STATUS= for systemctl status, and a snapshot for admin followers."""
        st = self.status()
        self.effects.notifier.status(status_line(st))
        if self.state_feed:
            self.state_feed.offer(as_dict(st))

    # ---- transitions ----------------------------------------------------------------------
    def _set(self, new: State, reason: str) -> None:
        old = self.state
        states.check(old, new)
        self.state, self._since, self._reason = new, self.effects.clock(), reason
        self.history.append({"state": new.value, "from": old.value, "reason": reason,
                             "at": time.time()})
        if self.effects.log is not None:
            self.effects.log.info("state", model=self.name, state=new.value,
                                  previous=old.value, reason=reason)
        self._publish()

    async def _activate(self, reason: str) -> None:
        self._want_active = True
        if self.state is State.DRAINING:  # the deactivation is called off: keep serving
            self._cancel_drain()
            self._set(State.READY, f"{reason} (drain called off)")
        elif self.state is State.INACTIVE:
            await self._start(reason)
        # STOPPING: _stopped() starts again because _want_active is set; others: idempotent.

    async def _start(self, reason: str) -> None:
        self._generations += 1
        gen = self.gen = Generation(self._generations, spawned_at=self.effects.clock(),
                                    first_line=self._lines_seen)
        self._failure = None
        self._set(State.STARTING, reason)
        try:
            gen.command = self.setup.command()
            gen.engine = await self.effects.spawn(
                gen.command, lambda lines, text: self._on_lines(gen, lines, text))
        except OSError as exc:
            gen.engine = None
            await self._fail(f"cannot start the engine: {exc}")
            return
        settings, prober = self.setup.settings, self.effects.prober
        self._start_task(watchers.wait_exit(gen, self.post, gen.engine))
        self._start_task(watchers.readiness(gen, self.post, prober, settings.startup))
        self._start_task(watchers.start_timer(gen, self.post, settings.startup,
                                              self.effects.clock))

    def _ready(self, gen: Generation) -> None:
        gen.ready_at = self.effects.clock()
        self._time_to_ready = self._last_start = gen.ready_at - gen.spawned_at
        self._set(State.READY, "probes passed")
        self.effects.notifier.ready(status_line(self.status()))
        self._start_task(watchers.liveness(gen, self.post, self.effects.prober,
                                           self.setup.settings.health, self.effects.clock))

    async def _fail(self, reason: str) -> None:
        gen = self.gen
        assert gen is not None  # only an engine generation can fail
        now = self.effects.clock()
        if self.state in (State.STARTING, State.PROBING):
            self._last_start = now - gen.spawned_at
        self._cancel_tasks()
        engine, gen.engine = gen.engine, None
        if engine is not None:
            self._log_group(await engine.kill(), "after failure")
            now = self.effects.clock()
        lines = self._lines_of(gen)
        self._failure = diagnose(lines)
        never_ready = gen.ready_at is None
        ran = now - gen.ready_at if gen.ready_at is not None else 0.0
        permanent = never_ready and self._failure is not None and not self._failure.cause.retry
        delay = None if permanent else self._tracker.next_delay(now, ran)
        found = self._failure
        if self.effects.log is not None:
            self.effects.log.error("engine failure", model=self.name, reason=reason,
                                   cause=found.cause.id if found else "unknown",
                                   fix=found.fix if found else "")
        if delay is None:
            self._set(State.FAILED, reason)
            self.effects.save_failure({
                "model": self.name, "reason": reason, "at": time.time(),
                "diagnosis": found.as_dict() if found else None, "log_tail": lines[-50:],
                "restarts": self.restarts})
            why = "restarting cannot fix this" if permanent else "restart budget spent"
            self.effects.notifier.errno(1, f"{status_line(self.status())} ({why})")
            self.exit_code = exitcodes.CONFIG if permanent else exitcodes.FAILED
            return
        self.restarts += 1
        self._set(State.RESTARTING, f"{reason}; next start in {delay:g} s")
        self._start_task(watchers.backoff(gen, self.post, delay))

    async def _stop(self, reason: str) -> bool:
        """Begin stopping; True when an engine is being stopped (Stopped will follow)."""
        if self.state in (State.INACTIVE, State.STOPPING):
            return self.state is State.STOPPING
        gen = self.gen
        assert gen is not None  # every other state belongs to a generation
        self._cancel_tasks()
        loading = self.state is State.STARTING
        self._set(State.STOPPING, reason)
        engine, gen.engine = gen.engine, None
        if engine is None:
            self.post(ev.Stopped(gen.number, False, ()))
            return True
        grace = self.setup.settings.stop.grace
        if loading:
            # vLLM swallows SIGTERM while it loads (3 of 3 runs on 0.32): waiting the full
            # drain grace would only delay the SIGKILL that has to come anyway.
            grace = min(grace, 5.0)
        self._start_task(watchers.stop_engine(gen, self.post, engine, grace))
        return True

    async def _stopped(self, e: ev.Stopped) -> None:
        self._log_group(list(e.left),
                        "after stop" + (" (SIGKILL needed)" if e.escalated else ""))
        if self._shutting_down:
            self._set(State.INACTIVE, "shut down")
            self.exit_code = exitcodes.OK
        elif self._want_active:
            await self._start("restart")
        else:
            self._set(State.INACTIVE, "stopped")

    async def _reload(self) -> ev.ReloadResult:
        """Apply a re-read config: new settings at once, a new engine command by restarting
        the engine (only when it runs and the command changed)."""
        if self.effects.reload is None:
            return ev.ReloadResult(False, False, "reload is not available here")
        got = self.effects.reload()
        if isinstance(got, str):
            if self.effects.log is not None:
                self.effects.log.error("reload refused: config invalid; keeping the running one",
                                       model=self.name, problems=got)
            self._last_reload = ev.ReloadResult(False, False, got)
            return self._last_reload
        self.setup = got
        self._tracker.policy = got.settings.restart
        if got.address is not None:
            self.effects.prober.aim(got.address)
        before = self.gen.command if self.gen is not None else None
        command = got.command()
        same = before is None or (command.argv, command.env_add) == (before.argv,
                                                                       before.env_add)
        restart = not same and self.state.engine_expected
        self._last_reload = ev.ReloadResult(
            True, restart, "engine restarts with the new command" if restart
            else "engine command unchanged")
        if restart:
            self.effects.notifier.reloading()
            self._want_active = True
            await self._stop("config changed (reload)")
        elif self.effects.log is not None:
            self.effects.log.info("reload: engine command unchanged", model=self.name)
        return self._last_reload

    # ---- tasks and engine lines -------------------------------------------------------------
    def _start_task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _cancel_drain(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self._drain = None

    def _lines_of(self, gen: Generation) -> list[str]:
        """The generation's own lines still in the recent-lines buffer."""
        count = self._lines_seen - gen.first_line
        return list(self.recent_lines)[max(0, len(self.recent_lines) - count):]

    def _on_lines(self, gen: Generation, lines: list[str], text: str) -> None:
        """Every engine line passes here, in batches; work per line only on a regex hit, so a
        log flood does not slow the engine (scripts/bench/log_pump.py)."""
        self.recent_lines.extend(lines)
        self._lines_seen += len(lines)
        self.effects.journal(lines, text)
        if self.line_feed:
            self.line_feed.offer(lines)
        # Load progress matters only until READY; skipping it afterwards keeps a request-log
        # flood cheap.
        current = gen is self.gen
        loading = current and self.state in (State.STARTING, State.PROBING)
        phases = gen.progress.feed_batch(lines, text) if loading else []
        if phases:
            if any(p in READY_HINTS for p in phases):
                gen.server_starting.fire()
            if self.state is State.STARTING:  # `vllmctl activate` shows each phase
                self._publish()
        if not gen.fatal_reported:
            line = first_fatal_line(text)
            if line is not None:
                # Act at once: vLLM's own watchdog exits the server only ~5 s later.
                gen.fatal_reported = True
                self.post(ev.EngineDead(gen.number, f"engine log: {line.strip()[:200]}"))

    def _log_group(self, left: list[int], when: str) -> None:
        if self.effects.log is None:
            return
        if left:
            self.effects.log.error("engine processes left", model=self.name, when=when,
                                   pids=left)
        else:
            self.effects.log.info("engine process group gone", model=self.name, when=when)
