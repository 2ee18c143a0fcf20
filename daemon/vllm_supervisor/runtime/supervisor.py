"""The supervisor: owns one model's lifecycle state and is the only thing that changes it.

Events arrive on one queue (events.py); OS effects come in through `Ports`, so tests drive
the whole state machine with fakes and no fork. Decisions cite the vLLM behaviour they guard
against (docs/vllm-behaviour.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from vllm_supervisor import exitcodes
from vllm_supervisor.config.settings import Supervision
from vllm_supervisor.preflight.render import Command
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime import states, watchers
from vllm_supervisor.runtime.diagnose import Finding, diagnose, first_fatal_line
from vllm_supervisor.runtime.notify import Notifier
from vllm_supervisor.runtime.process import Exit
from vllm_supervisor.runtime.progress import READY_HINTS, Progress
from vllm_supervisor.runtime.states import State
from vllm_supervisor.runtime.status import Observed

RING = 2000  # engine lines kept for `logs` and diagnosis
# Engine output arrives in batches: (lines, the same lines joined by "\n") - process.pump.
LinesSink = Callable[[list[str], str], None]


class EngineHandle(Protocol):
    pid: int

    async def wait(self) -> Exit: ...
    async def stop(self, grace: float) -> tuple[bool, list[int]]: ...
    async def kill(self) -> list[int]: ...


class ProberLike(Protocol):
    async def health(self, timeout: float) -> int | str: ...
    async def models(self, timeout: float) -> str | None: ...
    async def one_token(self, timeout: float) -> str | None: ...
    async def running_requests(self, timeout: float) -> float | None: ...


@dataclass
class Ports:
    spawn: Callable[[Command, LinesSink], Coroutine[Any, Any, EngineHandle]]
    prober: ProberLike
    notifier: Notifier
    command: Callable[[], Command]  # renders the current config
    on_lines: LinesSink = lambda lines, text: None  # journal writer
    log: Any = None  # structlog logger
    clock: Callable[[], float] = time.monotonic
    save_failure: Callable[[dict[str, Any]], None] = lambda record: None
    reload: Callable[[], tuple[Command, Supervision] | str] | None = None


@dataclass
class Snapshot:
    state: State = State.INACTIVE
    since: float = 0.0
    reason: str = ""
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=64))


class Supervisor(Observed):
    def __init__(self, name: str, settings: Supervision, ports: Ports,
                 endpoint: str = "") -> None:
        from vllm_supervisor.runtime.restarts import RestartTracker

        self.name = name
        self.endpoint = endpoint
        self.s = settings
        self.p = ports
        self.queue: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.snap = Snapshot(since=ports.clock())
        self.tracker = RestartTracker(settings.restart)
        self.ring: deque[str] = deque(maxlen=RING)
        self.gen = 0
        self.engine: EngineHandle | None = None
        self.running: Command | None = None  # what the current engine was started with
        self.progress = Progress()
        self.spawned_at = 0.0
        self.ready_at: float | None = None
        self.failure: Finding | None = None
        self.last_exit: str = ""
        self.restarts = 0
        self.exit_code: int | None = None
        self.want_active = False
        self.shutting_down = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._drain: asyncio.Task[None] | None = None
        self._state_subs: set[asyncio.Queue[dict[str, Any]]] = set()
        self._line_subs: set[asyncio.Queue[list[str]]] = set()
        self.facts: dict[str, Any] = {}  # static facts for `state` (served names, engine)
        self.time_to_ready: float | None = None  # seconds, last successful start
        self.last_start: float | None = None  # seconds the last start took, ready or failed
        self.handled = 0  # events handled: orders admin requests (the last one accepted wins)
        self.last_reload: dict[str, Any] | None = None  # {"ok", "restart", "detail"}
        self.kick = asyncio.Event()  # set when the engine log says the server starts
        self._fatal_seen = -1
        self._ring_mark = 0  # ring index where this generation's lines start
        self._lines = 0

    # ---- the loop -------------------------------------------------------------------------
    def post(self, event: ev.Event) -> None:
        self.queue.put_nowait(event)

    async def run(self) -> int:
        watchdog = asyncio.ensure_future(watchers.watchdog(self))
        if self.s.autostart:
            self.post(ev.Activate("autostart"))
        else:
            self.p.notifier.ready(f"inactive (autostart off): {self.name}")
        try:
            while self.exit_code is None:
                await self._handle(await self.queue.get())
        finally:
            watchdog.cancel()
            self._cancel_tasks()
        return self.exit_code

    async def _handle(self, e: ev.Event) -> None:
        await self._dispatch(e)
        self.handled += 1
        ack = getattr(e, "ack", None)
        if ack is not None and not ack.done():
            ack.set_result(self.handled)

    async def _dispatch(self, e: ev.Event) -> None:
        cur = self.gen
        if isinstance(e, ev.Activate):
            await self._activate(e.reason)
        elif isinstance(e, ev.Deactivate):
            self.want_active = False
            if e.drain_timeout > 0 and self.snap.state is State.READY:
                self._set(State.DRAINING, f"{e.reason}: draining up to {e.drain_timeout:g} s")
                self._drain = self._spawn_task(watchers.drain(self, self.gen, e.drain_timeout))
            elif self.snap.state is not State.DRAINING:
                await self._stop(e.reason)
        elif isinstance(e, ev.Restart):
            if self.snap.state is State.INACTIVE:
                await self._activate(e.reason)
            else:
                self.want_active = True
                await self._stop(e.reason)
        elif isinstance(e, ev.Shutdown):
            self.shutting_down, self.want_active = True, False
            self.p.notifier.stopping(f"stopping ({e.reason})")
            if not await self._stop(e.reason):
                self.exit_code = exitcodes.OK
        elif isinstance(e, ev.Reload):
            await self._reload()
        elif getattr(e, "gen", cur) != cur:
            return  # from an engine generation that is already gone
        elif isinstance(e, ev.Stopped):
            await self._stopped(e)
        elif isinstance(e, ev.Exited) and self.snap.state.engine_expected:
            # vLLM exits 0 after its engine dies (upstream 48966): any exit we did not ask
            # for is a failure, whatever the code.
            self.last_exit = e.exit.describe()
            await self._fail(f"engine {e.exit.describe()} unexpectedly")
        elif isinstance(e, ev.PortUp) and self.snap.state is State.STARTING:
            self._set(State.PROBING, "HTTP server answers /health")
            self._spawn_task(watchers.probe(self, cur))
        elif isinstance(e, ev.ProbesDone) and self.snap.state is State.PROBING:
            if e.error is None:
                self._ready()
            else:
                await self._fail(f"readiness probe failed: {e.error}")
        elif isinstance(e, ev.EngineDead | ev.StartTimeout) and self.snap.state.engine_expected:
            await self._fail(e.why)
        elif isinstance(e, ev.BackoffDone) and self.snap.state is State.RESTARTING:
            await self._start("backoff elapsed")
        elif isinstance(e, ev.DrainDone) and self.snap.state is State.DRAINING:
            await self._stop(f"deactivate ({e.why})")

    # ---- transitions ----------------------------------------------------------------------
    def _set(self, new: State, reason: str) -> None:
        old = self.snap.state
        states.check(old, new)
        now = self.p.clock()
        self.snap.state, self.snap.since, self.snap.reason = new, now, reason
        self.snap.history.append({"state": new.value, "from": old.value, "reason": reason,
                                  "at": time.time()})
        if self.p.log is not None:
            self.p.log.info("state", model=self.name, state=new.value, previous=old.value,
                            reason=reason)
        self.p.notifier.status(self.status_line())
        if self._state_subs:
            self._offer(self._state_subs, self.state_dict())

    async def _activate(self, reason: str) -> None:
        self.want_active = True
        st = self.snap.state
        if st is State.DRAINING:  # the deactivation is called off: keep serving
            self._cancel_drain()
            self._set(State.READY, f"{reason} (drain called off)")
            return
        if st is State.INACTIVE:
            await self._start(reason)
        # STOPPING: _stopped() starts again because want_active is set; others: idempotent.

    async def _start(self, reason: str) -> None:
        self.gen += 1
        gen = self.gen
        self.progress = Progress()
        self.ready_at, self.failure, self._fatal_seen = None, None, -1
        self._ring_mark = self._lines
        self.spawned_at = self.p.clock()
        self._set(State.STARTING, reason)
        try:
            self.running = self.p.command()
            self.engine = await self.p.spawn(self.running, self._on_lines)
        except OSError as exc:
            self.engine = None
            await self._fail(f"cannot start the engine: {exc}")
            return
        engine = self.engine
        self._spawn_task(watchers.watch(self, gen, engine))
        self._spawn_task(watchers.readiness(self, gen))
        self._spawn_task(watchers.start_timer(self, gen))

    def _ready(self) -> None:
        self.ready_at = self.p.clock()
        self.time_to_ready = self.last_start = self.ready_at - self.spawned_at
        self._set(State.READY, "probes passed")
        self.p.notifier.ready(self.status_line())
        self._spawn_task(watchers.liveness(self, self.gen))

    async def _fail(self, reason: str) -> None:
        if self.snap.state in (State.STARTING, State.PROBING):
            self.last_start = self.p.clock() - self.spawned_at
        self._cancel_tasks()
        engine, self.engine = self.engine, None
        if engine is not None:
            left = await engine.kill()
            self._log_group(left, "after failure")
        lines = list(self.ring)[max(0, len(self.ring) - (self._lines - self._ring_mark)):]
        self.failure = diagnose(lines)
        never_ready = self.ready_at is None
        now = self.p.clock()
        ran = now - self.ready_at if self.ready_at is not None else 0.0
        permanent = never_ready and self.failure is not None and not self.failure.cause.retry
        delay = None if permanent else self.tracker.next_delay(now, ran)
        record = {"model": self.name, "reason": reason, "at": time.time(),
                  "diagnosis": self.failure.as_dict() if self.failure else None,
                  "log_tail": lines[-50:], "restarts": self.restarts}
        if self.p.log is not None:
            self.p.log.error("engine failure", model=self.name, reason=reason,
                             cause=self.failure.cause.id if self.failure else "unknown",
                             fix=self.failure.fix if self.failure else "")
        if delay is None:
            self._set(State.FAILED, reason)
            self.p.save_failure(record)
            why = "restarting cannot fix this" if permanent else "restart budget spent"
            self.p.notifier.errno(1, f"{self.status_line()} ({why})")
            self.exit_code = exitcodes.CONFIG if permanent else exitcodes.FAILED
            return
        self.restarts += 1
        self._set(State.RESTARTING, f"{reason}; next start in {delay:g} s")
        gen = self.gen
        self._spawn_task(watchers.backoff(self, gen, delay))

    async def _stop(self, reason: str) -> bool:
        """Begin stopping; True when an engine is being stopped (Stopped will follow)."""
        st = self.snap.state
        if st in (State.INACTIVE, State.STOPPING):
            return st is State.STOPPING
        self._cancel_tasks()
        loading = st is State.STARTING
        self._set(State.STOPPING, reason)
        engine, self.engine = self.engine, None
        if engine is None:
            self.post(ev.Stopped(self.gen, False, ()))
            return True
        gen, grace = self.gen, self.s.stop.grace
        if loading:
            # vLLM swallows SIGTERM while it loads (3 of 3 runs on 0.32): waiting the full
            # drain grace would only delay the SIGKILL that has to come anyway.
            grace = min(grace, 5.0)
        self._spawn_task(watchers.stop_task(self, gen, engine, grace))
        return True

    async def _stopped(self, e: ev.Stopped) -> None:
        self._log_group(list(e.left), "after stop" + (" (SIGKILL needed)" if e.escalated
                                                        else ""))
        if self.shutting_down:
            self._set(State.INACTIVE, "shut down")
            self.exit_code = exitcodes.OK
        elif self.want_active:
            await self._start("restart")
        else:
            self._set(State.INACTIVE, "stopped")

    async def _reload(self) -> None:
        if self.p.reload is None:
            return
        got = self.p.reload()
        if isinstance(got, str):
            self.last_reload = {"ok": False, "restart": False, "detail": got}
            if self.p.log is not None:
                self.p.log.error("reload refused: config invalid; keeping the running one",
                                 model=self.name, problems=got)
            return
        command, settings = got
        self.s = settings
        self.tracker.policy = settings.restart
        before = self.running
        same = before is None or (command.argv, command.env_add) == (before.argv,
                                                                       before.env_add)
        restart = not same and self.snap.state.engine_expected
        self.last_reload = {"ok": True, "restart": restart,
                            "detail": "engine restarts with the new command" if restart
                            else "engine command unchanged"}
        if not restart:
            if self.p.log is not None:
                self.p.log.info("reload: engine command unchanged", model=self.name)
            return
        self.p.notifier.reloading()
        self.want_active = True
        await self._stop("config changed (reload)")

    # ---- tasks ----------------------------------------------------------------------------
    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _cancel_drain(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None

    def _cancel_tasks(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        self._tasks.clear()
        self._drain = None

    def _on_lines(self, lines: list[str], text: str) -> None:
        """Every engine line passes here, in batches; work per line only on a regex hit, so a
        log flood does not slow the engine (scripts/bench/log_pump.py)."""
        self.ring.extend(lines)
        self._lines += len(lines)
        self.p.on_lines(lines, text)
        if self._line_subs:
            self._offer(self._line_subs, lines)
        # Load progress matters only until READY; skipping it afterwards keeps a request-log
        # flood cheap.
        starting = self.snap.state in (State.STARTING, State.PROBING)
        phases = self.progress.feed_batch(lines, text) if starting else []
        if phases:
            if any(p in READY_HINTS for p in phases):
                self.kick.set()
            if self.snap.state is State.STARTING:
                self.p.notifier.status(self.status_line())
                if self._state_subs:  # `vllmctl activate` shows each phase as it starts
                    self._offer(self._state_subs, self.state_dict())
        if self._fatal_seen != self.gen:
            line = first_fatal_line(text)
            if line is not None:
                # Act at once: vLLM's own watchdog exits the server only ~5 s later.
                self._fatal_seen = self.gen
                self.post(ev.EngineDead(self.gen, f"engine log: {line.strip()[:200]}"))

    def _log_group(self, left: list[int], when: str) -> None:
        if self.p.log is None:
            return
        if left:
            self.p.log.error("engine processes left", model=self.name, when=when, pids=left)
        else:
            self.p.log.info("engine process group gone", model=self.name, when=when)
