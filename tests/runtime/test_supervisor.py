"""The state machine with injected spawn/probe/notify: no fork, no engine."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from vllm_supervisor.config.settings import RestartPolicy, Startup, Supervision
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime import states
from vllm_supervisor.runtime.effects import Effects, GpuGuard, GroupPort, ModelSetup, NoGpuGuard
from vllm_supervisor.runtime.group import NoGroup
from vllm_supervisor.runtime.probes import EngineAddress
from vllm_supervisor.runtime.process import Exit
from vllm_supervisor.runtime.states import State
from vllm_supervisor.runtime.status import as_dict
from vllm_supervisor.runtime.supervisor import Supervisor

from tests.fakes import FakeProber, RecordingNotifier, Spawner, command, fast_settings


class Rig:
    def __init__(
        self,
        settings: Supervision | None = None,
        watchdog_usec: int = 0,
        gpu: GpuGuard | None = None,
        group: GroupPort | None = None,
        setup: ModelSetup | None = None,
    ) -> None:
        self.prober = FakeProber()
        self.notifier = RecordingNotifier()
        self.notifier.watchdog_usec = watchdog_usec  # as if WATCHDOG_USEC named our PID
        self.spawner = Spawner(self.prober)
        self.failures: list[dict[str, Any]] = []
        self.cmd = command()
        self.reload_answer: ModelSetup | str | None = None
        self.effects = Effects(
            spawn=self.spawner,
            prober=self.prober,
            notifier=self.notifier,
            save_failure=self.failures.append,
            reload=lambda: self.reload_answer or "unset",
            gpu=gpu or NoGpuGuard(),
            group=group or NoGroup(),
        )
        self.sup = Supervisor("m", setup or self.setup(settings or fast_settings()), self.effects)
        self.task: asyncio.Task[int] = asyncio.ensure_future(self.sup.run())

    def setup(self, settings: Supervision) -> ModelSetup:
        return ModelSetup(settings, command=lambda: self.cmd, endpoint="h:1")

    async def until(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not cond():
            if self.task.done():
                self.task.result()
            assert asyncio.get_running_loop().time() < deadline, self.trail()
            await asyncio.sleep(0.005)

    async def state(self, st: State, timeout: float = 5.0) -> None:
        await self.until(lambda: self.sup.state is st, timeout)

    def trail(self) -> list[str]:
        return [f"{h['from']}->{h['state']}: {h['reason']}" for h in self.sup.life.history]

    async def ready(self) -> None:
        self.prober.up = True
        await self.state(State.READY)

    def ack(self) -> ev.AckFuture:
        return asyncio.get_running_loop().create_future()

    async def handled(self, event: ev.Reload | ev.Deactivate | ev.Activate) -> ev.Ack:
        """Post EVENT and wait until the supervisor has handled it (its ack)."""
        assert event.ack is not None
        self.sup.post(event)
        return await asyncio.wait_for(event.ack, 5)

    async def finish(self) -> int:
        self.sup.post(ev.Shutdown())
        return await asyncio.wait_for(self.task, 5)


# Every transition the supervisor makes in these tests, through states.check (which refuses
# an edge the table lacks, so an unlisted transition fails the test that makes it).
SEEN: set[tuple[State, State]] = set()
RAN: set[str] = set()
CHECK = states.check  # unrecorded, for tests of the table itself


@pytest.fixture(autouse=True)
def record_transitions(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[None]:
    real = states.check

    def check(old: State, new: State) -> None:
        real(old, new)
        SEEN.add((old, new))

    monkeypatch.setattr(states, "check", check)
    yield
    RAN.add(request.node.nodeid)


async def test_ready_only_after_health_models_and_a_token() -> None:
    rig = Rig()
    await rig.state(State.STARTING)
    await asyncio.sleep(0.05)
    assert rig.notifier.count("READY") == 0  # still loading: no READY
    rig.prober.up = True
    await rig.state(State.READY)
    assert rig.notifier.count("READY") == 1
    assert rig.notifier.sent[-1]["STATUS"] == "ready on h:1"
    assert [h["state"] for h in rig.sup.life.history] == ["starting", "probing", "ready"]
    assert await rig.finish() == 0
    assert rig.spawner.engines[0].stops == [7.0]
    assert rig.notifier.count("STOPPING") == 1


async def test_probe_failure_restarts_instead_of_ready() -> None:
    rig = Rig()
    rig.prober.token_error = "1-token generation answered 500: boom"
    rig.prober.up = True
    await rig.until(lambda: len(rig.spawner.engines) >= 2)
    assert rig.notifier.count("READY") == 0
    assert any("readiness probe failed: 1-token generation answered 500" in t for t in rig.trail())
    rig.prober.token_error = None
    await rig.state(State.READY)
    await rig.finish()


@pytest.mark.parametrize("how", ["exit0", "fatal-line", "503", "hang"])
async def test_engine_death_while_ready_restarts(how: str) -> None:
    rig = Rig()
    await rig.ready()
    first = rig.spawner.engines[0]
    if how == "exit0":
        first.exit(0)  # vLLM exits 0 after its engine dies: still a failure
    elif how == "fatal-line":
        rig.spawner.say(
            "(APIServer pid=1) WARNING [core_client.py:817] [shutdown] "
            "MPClient: engine core exited unexpectedly; starting cleanup"
        )
    elif how == "503":
        rig.prober.health_answer = 503
    else:
        rig.prober.health_answer = "timeout"
    await rig.until(lambda: len(rig.spawner.engines) == 2)
    rig.prober.health_answer = None
    await rig.state(State.READY)
    assert rig.sup.life.restarts == 1
    assert first.killed  # the old group is always killed before a restart
    reasons = {
        "exit0": "engine exited with code 0 unexpectedly",
        "fatal-line": "engine log: (APIServer pid=1)",
        "503": "/health answered 503",
        "hang": "engine hung: 3 health checks",
    }
    assert any(reasons[how] in t for t in rig.trail()), rig.trail()
    assert rig.notifier.count("READY") == 2
    await rig.finish()


async def test_failure_that_restarting_cannot_fix_ends_failed_with_78() -> None:
    rig = Rig()
    rig.spawner.lines = ["vllm serve: error: unrecognized arguments: --bogus"]
    await rig.state(State.STARTING)
    rig.spawner.engines[0].exit(2)
    assert await asyncio.wait_for(rig.task, 5) == 78
    assert len(rig.spawner.engines) == 1  # no restart storm
    assert rig.sup.state is State.FAILED
    rec = rig.failures[0]
    assert rec["diagnosis"]["id"] == "unknown-flag"
    assert rec["reason"] == "engine exited with code 2 unexpectedly"
    assert rec["log_tail"] == ["vllm serve: error: unrecognized arguments: --bogus"]
    assert rig.notifier.sent[-1]["ERRNO"] == "1"
    assert "restarting cannot fix this" in rig.notifier.sent[-1]["STATUS"]


async def test_budget_spent_ends_failed_with_1() -> None:
    rig = Rig(fast_settings(restart=RestartPolicy(backoff_initial=0.01, budget=2, window=60)))
    for n in range(3):
        await rig.until(lambda n=n: len(rig.spawner.engines) == n + 1)
        rig.spawner.engines[n].exit(1)
    assert await asyncio.wait_for(rig.task, 5) == 1
    assert rig.sup.life.restarts == 2 and len(rig.spawner.engines) == 3
    assert rig.failures[0]["diagnosis"] is None


async def test_backoff_grows() -> None:
    rig = Rig(
        fast_settings(
            restart=RestartPolicy(backoff_initial=0.01, backoff_factor=3, budget=5, window=60)
        )
    )
    for n in range(3):
        await rig.until(lambda n=n: len(rig.spawner.engines) == n + 1)
        rig.spawner.engines[n].exit(1)
    await rig.until(lambda: len(rig.spawner.engines) == 4)
    delays = [t.split("next start in ")[1] for t in rig.trail() if "next start in" in t]
    assert delays == ["0.01 s", "0.03 s", "0.09 s"]
    await rig.finish()


async def test_spawn_error_is_a_failure_not_a_crash() -> None:
    rig = Rig(fast_settings(restart=RestartPolicy(backoff_initial=0.01, budget=0)))
    rig.spawner.fail_with = FileNotFoundError(2, "No such file", "/venv/bin/python")
    assert await asyncio.wait_for(rig.task, 5) == 1
    assert "cannot start the engine" in rig.failures[0]["reason"]


async def test_stall_timeout_kills_and_restarts() -> None:
    rig = Rig(
        fast_settings(startup=Startup(stall_timeout=0.1, start_timeout=60, poll_interval=0.01))
    )
    await rig.until(lambda: len(rig.spawner.engines) == 2)
    assert rig.spawner.engines[0].killed
    assert any("no load progress for 0.1 s in phase 'spawned'" in t for t in rig.trail())
    await rig.finish()


async def test_a_download_that_grows_is_progress_and_one_that_stops_is_a_stall() -> None:
    """Issue 20: vLLM logs nothing while it downloads weights, so a first online start of a
    big model was killed as a stall. Growth of the model's cache counts as progress."""
    cache = {"bytes": 0, "grow": True}

    def size() -> int:
        if cache["grow"]:
            cache["bytes"] += 5_000_000
        return cache["bytes"]

    settings = fast_settings(
        startup=Startup(stall_timeout=0.2, start_timeout=60, poll_interval=0.01)
    )
    rig = Rig(setup=ModelSetup(settings, command=command, endpoint="h:1", cache_size=size))
    await rig.state(State.STARTING)
    await asyncio.sleep(1.0)  # five stall timeouts with no engine line, only the download
    assert len(rig.spawner.engines) == 1 and not rig.spawner.engines[0].killed, rig.trail()
    shown = [m["STATUS"] for m in rig.notifier.sent if "STATUS" in m]
    assert any(s.startswith("downloading weights (") and "MB/s" in s for s in shown), shown
    assert rig.sup.status().progress["download_bytes"] == str(cache["bytes"])
    cache["grow"] = False  # the download hangs: now it is a stall
    await rig.until(lambda: len(rig.spawner.engines) == 2)
    assert rig.spawner.engines[0].killed
    assert any("no load progress for 0.2 s in phase 'downloading weights" in t for t in rig.trail())
    await rig.finish()


async def test_shutdown_while_loading_uses_short_grace() -> None:
    rig = Rig()
    await rig.state(State.STARTING)
    assert await rig.finish() == 0
    assert rig.spawner.engines[0].stops == [5.0]  # vLLM swallows SIGTERM while loading


async def test_autostart_off_is_ready_at_once_and_activate_starts() -> None:
    rig = Rig(fast_settings(autostart=False))
    await rig.until(lambda: rig.notifier.count("READY") == 1)
    assert rig.sup.state is State.INACTIVE and not rig.spawner.engines
    rig.sup.post(ev.Activate())
    await rig.ready()
    rig.sup.post(ev.Deactivate())
    await rig.state(State.INACTIVE)
    rig.sup.post(ev.Deactivate())  # idempotent
    rig.sup.post(ev.Activate())
    await rig.until(lambda: len(rig.spawner.engines) == 2)
    await rig.state(State.READY)
    assert await rig.finish() == 0


async def test_reload_restarts_only_when_the_command_changes() -> None:
    rig = Rig()
    await rig.ready()
    rig.reload_answer = rig.setup(fast_settings())
    ack = await rig.handled(ev.Reload(ack=rig.ack()))  # handled: the decision is made
    assert len(rig.spawner.engines) == 1 and rig.notifier.count("RELOADING") == 0
    assert ack.reload == ev.ReloadResult(True, False, "engine command unchanged")
    rig.reload_answer = "models.yaml:3: models.m.port: expected a TCP port"
    ack = await rig.handled(ev.Reload(ack=rig.ack()))
    assert ack.reload is not None and ack.reload.ok is False  # refused, engine kept
    assert ack.reload.detail == rig.reload_answer
    assert as_dict(rig.sup.status())["last_reload"]["ok"] is False  # `state` shows it too
    assert rig.sup.state is State.READY and len(rig.spawner.engines) == 1
    address = EngineAddress("h", 2, ("m",))
    rig.reload_answer = replace(rig.setup(fast_settings()), address=address, endpoint="h:2")
    rig.cmd = command("b")
    rig.sup.post(ev.Reload())
    await rig.until(lambda: len(rig.spawner.engines) == 2)
    await rig.state(State.READY)
    assert rig.notifier.count("RELOADING") == 1 and rig.notifier.count("READY") == 2
    assert "MONOTONIC_USEC" in next(s for s in rig.notifier.sent if "RELOADING" in s)
    assert rig.prober.aimed_at == address  # the supervisor applied the new config itself
    assert rig.notifier.sent[-1]["STATUS"] == "ready on h:2"
    await rig.finish()


async def test_events_of_a_gone_engine_are_ignored() -> None:
    rig = Rig()
    await rig.ready()
    rig.sup.post(ev.EngineDead(gen=0, why="stale"))
    rig.sup.post(ev.Exited(gen=0, exit=Exit(0, None)))
    await rig.handled(ev.Reload(ack=rig.ack()))  # queued after both: they were handled
    assert rig.sup.state is State.READY and rig.sup.life.restarts == 0
    await rig.finish()


def test_transition_table_refuses_what_it_does_not_list() -> None:
    listed = {(o, n) for o, n, _ in states.EDGES}
    for old in State:
        for new in State:
            if (old, new) not in listed:
                with pytest.raises(states.IllegalTransition):
                    CHECK(old, new)
            else:
                CHECK(old, new)
    assert states.TRANSITIONS[State.FAILED] == frozenset()  # FAILED ends the process
    assert len(listed) == len(states.EDGES)  # no edge listed twice


async def test_watchdog_pings_at_half_the_interval_from_the_loop() -> None:
    """Counted, not timed: five pings come, and none comes sooner than half the interval
    after the one before (a loaded machine may make them later, never earlier)."""
    rig = Rig(fast_settings(autostart=False), watchdog_usec=40_000)
    deadline = time.monotonic() + 10
    while rig.notifier.count("WATCHDOG") < 5:
        assert time.monotonic() < deadline, "the watchdog was not fed"
        await asyncio.sleep(0.01)
    at = [t for t, s in zip(rig.notifier.at, rig.notifier.sent, strict=True) if "WATCHDOG" in s]
    assert min(b - a for a, b in itertools.pairwise(at)) >= 0.019  # 40 ms / 2, less rounding
    await rig.finish()


async def test_no_watchdog_pings_when_the_watchdog_is_off() -> None:
    rig = Rig(fast_settings(autostart=False))
    await asyncio.sleep(0.1)
    assert rig.notifier.count("WATCHDOG") == 0
    await rig.finish()


async def test_deactivate_drains_until_no_request_runs() -> None:
    rig = Rig()
    await rig.ready()
    rig.prober.running = 2.0
    rig.sup.post(ev.Deactivate(drain_timeout=30))
    await rig.state(State.DRAINING)
    await asyncio.sleep(0.3)
    assert rig.sup.state is State.DRAINING  # still running requests: keep serving
    rig.prober.running = 0.0
    await rig.state(State.INACTIVE)
    assert any("deactivate (no running requests)" in t for t in rig.trail())
    await rig.finish()


async def test_drain_timeout_and_activate_calling_it_off() -> None:
    rig = Rig()
    await rig.ready()
    rig.prober.running = 1.0
    rig.sup.post(ev.Deactivate(drain_timeout=30))
    await rig.state(State.DRAINING)
    rig.sup.post(ev.Activate())
    await rig.state(State.READY)
    assert len(rig.spawner.engines) == 1  # the same engine goes on serving
    rig.sup.post(ev.Deactivate(drain_timeout=0.3))
    await rig.state(State.INACTIVE)
    assert any("drain timeout 0.3 s, 1 request(s) still running" in t for t in rig.trail())
    await rig.finish()


async def test_restart_replaces_the_engine_and_acks() -> None:
    rig = Rig()
    await rig.ready()
    ack = asyncio.get_running_loop().create_future()
    rig.sup.post(ev.Restart(ack=ack))
    await asyncio.wait_for(ack, 5)
    assert rig.sup.state in (State.STOPPING, State.STARTING)
    assert "ready->stopping: restart" in rig.trail()
    await rig.until(lambda: len(rig.spawner.engines) == 2)
    await rig.state(State.READY)
    assert rig.sup.life.restarts == 0  # asked for, not a failure
    assert as_dict(rig.sup.status())["events"] >= 2
    await rig.finish()


async def test_probe_failure_with_no_budget_left_ends_failed() -> None:
    rig = Rig(fast_settings(restart=RestartPolicy(backoff_initial=0.01, budget=0)))
    rig.prober.token_error = "1-token generation answered 500: boom"
    rig.prober.up = True
    assert await asyncio.wait_for(rig.task, 5) == 1
    assert rig.trail()[-1].startswith("probing->failed: readiness probe failed")


async def test_shutdown_while_probing_stops_the_engine() -> None:
    rig = Rig()
    rig.prober.held = True  # the 1-token probe is still out
    rig.prober.up = True
    await rig.state(State.PROBING)
    assert await rig.finish() == 0
    assert "probing->stopping: SIGTERM" in rig.trail()
    assert rig.spawner.engines[0].stops  # asked to stop, not left behind


async def test_death_while_ready_with_no_budget_left_ends_failed() -> None:
    rig = Rig(fast_settings(restart=RestartPolicy(backoff_initial=0.01, budget=0)))
    await rig.ready()
    rig.spawner.engines[0].exit(0)
    assert await asyncio.wait_for(rig.task, 5) == 1
    assert rig.trail()[-1] == "ready->failed: engine exited with code 0 unexpectedly"


@pytest.mark.parametrize("budget", [3, 0])
async def test_death_while_draining_restarts_or_fails(budget: int) -> None:
    rig = Rig(fast_settings(restart=RestartPolicy(backoff_initial=0.01, budget=budget)))
    await rig.ready()
    rig.prober.running = 1.0
    rig.sup.post(ev.Deactivate(drain_timeout=30))
    await rig.state(State.DRAINING)
    rig.spawner.engines[0].exit(1)
    if budget:
        await rig.until(lambda: len(rig.spawner.engines) == 2)  # it had served: at once
        want = "draining->restarting: engine exited with code 1 unexpectedly; it had served: now"
        assert want in rig.trail()
        await rig.finish()
    else:
        assert await asyncio.wait_for(rig.task, 5) == 1
        assert rig.trail()[-1].startswith("draining->failed: engine exited with code 1")


async def test_deactivate_during_the_backoff_stops_without_a_new_start() -> None:
    rig = Rig(fast_settings(restart=RestartPolicy(backoff_initial=30, budget=3)))
    await rig.ready()
    rig.prober.up = False  # the next engine will not get READY
    rig.spawner.engines[0].exit(1)  # served, then died: restarted at once
    await rig.until(lambda: len(rig.spawner.engines) == 2)
    rig.spawner.engines[1].exit(1)  # a failed start: this one waits out the 30 s backoff
    await rig.state(State.RESTARTING)
    ack = asyncio.get_running_loop().create_future()
    rig.sup.post(ev.Deactivate(drain_timeout=0, ack=ack))
    await asyncio.wait_for(ack, 5)
    await rig.state(State.INACTIVE)
    assert "restarting->stopping: deactivate" in rig.trail()
    assert len(rig.spawner.engines) == 2  # the 30 s backoff never started another
    await rig.finish()


def test_every_table_edge_is_taken_by_these_tests(request: pytest.FixtureRequest) -> None:
    """Run last (tests/runtime/conftest.py): the table lists nothing the code cannot do. The
    tests that count are those of every module using record_transitions (the sleep-mode
    tests import it)."""
    others = {
        i.nodeid
        for i in request.session.items
        if isinstance(i, pytest.Function)
        and getattr(i.module, "record_transitions", None) is record_transitions
        and i is not request.node
    }
    if not others or not others <= RAN:
        pytest.skip("needs every test of the recording modules to have run")
    missing = [
        f"{o.value} -> {n.value} ({why})" for o, n, why in states.EDGES if (o, n) not in SEEN
    ]
    assert missing == []
