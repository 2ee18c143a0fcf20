"""The supervisor's engine runs: the state it holds and the transitions every order shares
(start, ready, fail, stop). supervisor.py builds on this with the loop, the dispatch and the
orders; the two are one object, and nothing else changes its state (states.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from vllm_supervisor import exitcodes
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime import watchers
from vllm_supervisor.runtime.broadcast import Broadcast
from vllm_supervisor.runtime.diagnose import Finding, diagnose
from vllm_supervisor.runtime.effects import Effects, ModelSetup, SleepPlan
from vllm_supervisor.runtime.engine_log import EngineLog
from vllm_supervisor.runtime.generation import Generation
from vllm_supervisor.runtime.lifecycle import Lifecycle
from vllm_supervisor.runtime.restarts import RestartTracker, judge
from vllm_supervisor.runtime.states import State
from vllm_supervisor.runtime.status import Status, as_dict, status_line
from vllm_supervisor.runtime.tasks import LIVENESS, GenerationTasks


class EngineRuns:
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
        self._want_active = False
        self._to_sleep = False  # the deactivation under way ends in sleep, not a stop
        self._asleep: SleepPlan | None = None  # how the engine was put to sleep (wake to match)
        self._shutting_down = False
        self._tasks = GenerationTasks()

    # ---- the queue ----------------------------------------------------------------------
    def post(self, event: ev.Event) -> None:
        self.queue.put_nowait(event)

    # ---- the read side ----------------------------------------------------------------------
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
        if self._shutting_down:
            self._set(State.INACTIVE, "shut down" + gpu)
            self.exit_code = exitcodes.OK
        elif self._want_active:
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
