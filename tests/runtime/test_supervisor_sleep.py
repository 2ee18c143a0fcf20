"""Sleep-mode deactivation through the supervisor, against a prober that answers vLLM's dev
endpoints as 0.32 does (tests/fakes.py): the call sequence, the states, and every fallback."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from vllm_supervisor.config.settings import Health
from vllm_supervisor.gpu.memory import Held
from vllm_supervisor.preflight.render import Command
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime import sleep
from vllm_supervisor.runtime.diagnose import Finding
from vllm_supervisor.runtime.effects import ModelSetup, SleepPlan
from vllm_supervisor.runtime.states import State
from vllm_supervisor.runtime.status import as_dict, status_line

from tests.fakes import fast_settings
from tests.runtime.test_supervisor import Rig, record_transitions  # noqa: F401 (autouse)

GIB = 1024**3
LEVEL1 = SleepPlan(level=1, mode_wait=True, reset_prefix_cache=False, weights_bytes=4 * GIB)
LEVEL2 = SleepPlan(level=2, mode_wait=False, reset_prefix_cache=True)
SLEEP_CALLS = ["POST /sleep?level=1&mode=wait", "GET /is_sleeping"]
WAKE_CALLS = ["POST /wake_up", "GET /is_sleeping"]


def sleepy(plan: SleepPlan = LEVEL1, **kw: object) -> Rig:
    settings = fast_settings(health=Health(interval=0.01, timeout=0.01, failures=2))
    rig = Rig(settings, **kw)  # type: ignore[arg-type]
    rig.sup.setup = replace(rig.sup.setup, sleep=plan)  # before its task first runs
    rig.effects.available_ram = lambda: 64 * GIB
    return rig


async def asleep(rig: Rig, drain: float = 0.0) -> None:
    await rig.ready()
    await rig.handled(ev.Deactivate(drain_timeout=drain, ack=rig.ack()))
    await rig.state(State.SLEEPING)


async def test_deactivate_puts_the_engine_to_sleep_and_activate_wakes_it() -> None:
    rig = sleepy()
    await asleep(rig)
    assert rig.prober.dev_calls == SLEEP_CALLS  # the level in the query, never in a body
    engine = rig.spawner.engines[0]
    assert engine.stops == [] and not engine.killed  # the engine stays up
    assert status_line(rig.sup.status()) == "sleeping: asleep (level 1)"
    # Liveness pauses: a sleeping engine that stops answering /health is not restarted.
    rig.prober.health_answer = "timeout"
    await asyncio.sleep(0.1)
    assert rig.sup.state is State.SLEEPING and len(rig.spawner.engines) == 1
    rig.prober.health_answer = None
    await rig.handled(ev.Activate(ack=rig.ack()))
    await rig.state(State.READY)
    assert rig.prober.dev_calls == SLEEP_CALLS + WAKE_CALLS
    assert len(rig.spawner.engines) == 1  # woken, not started again
    assert rig.sup.life.last_wake is not None and as_dict(rig.sup.status())["last_wake"] >= 0
    assert rig.notifier.count("READY") == 2
    assert [h["state"] for h in rig.sup.life.history][-4:] == [
        "draining",
        "sleeping",
        "probing",
        "ready",
    ]
    await rig.finish()


async def test_level_2_wakes_in_three_steps_and_resets_the_prefix_cache_where_needed() -> None:
    rig = sleepy(LEVEL2)
    await asleep(rig)
    await rig.handled(ev.Activate(ack=rig.ack()))
    await rig.state(State.READY)
    assert rig.prober.dev_calls == [
        "POST /sleep?level=2",  # no mode=wait before vLLM 0.17
        "GET /is_sleeping",
        "POST /wake_up?tags=weights",
        'POST /collective_rpc {"method": "reload_weights"}',
        "POST /wake_up?tags=kv_cache",
        "POST /reset_prefix_cache",  # vLLM < 0.11: stale blocks after a wake (#16234)
        "GET /is_sleeping",
    ]
    await rig.finish()


async def test_sleep_follows_the_drain() -> None:
    rig = sleepy()
    rig.prober.running = 2.0
    await rig.ready()
    await rig.handled(ev.Deactivate(drain_timeout=5, ack=rig.ack()))
    await asyncio.sleep(0.05)
    assert rig.sup.state is State.DRAINING and rig.prober.dev_calls == []
    rig.prober.running = 0.0
    await rig.state(State.SLEEPING)
    assert rig.prober.dev_calls == SLEEP_CALLS
    await rig.finish()


async def test_a_failed_sleep_stops_the_engine_instead() -> None:
    rig = sleepy()
    rig.prober.dev_answers["/sleep"] = (404, '{"detail":"Not Found"}')
    await rig.ready()
    await rig.handled(ev.Deactivate(ack=rig.ack()))
    await rig.state(State.INACTIVE)
    assert rig.spawner.engines[0].stops  # stopped
    assert any("sleep failed: POST /sleep?level=1&mode=wait answered 404" in t for t in rig.trail())
    assert any("VLLM_SERVER_DEV_MODE=1" in t for t in rig.trail())
    await rig.finish()


async def test_level_1_without_host_ram_for_the_weights_stops_instead() -> None:
    rig = sleepy()
    rig.effects.available_ram = lambda: 1 * GIB
    await rig.ready()
    await rig.handled(ev.Deactivate(ack=rig.ack()))
    await rig.state(State.INACTIVE)
    assert rig.prober.dev_calls == []  # never asked to sleep
    assert any("4.0 GiB of weights to host RAM, but only 1.0 GiB" in t for t in rig.trail())
    await rig.finish()


async def test_a_failed_wake_starts_the_engine_cold_without_counting_a_crash() -> None:
    rig = sleepy()
    await asleep(rig)
    rig.prober.dev_answers["/wake_up"] = (500, "CUDA error: out of memory")
    await rig.handled(ev.Activate(ack=rig.ack()))
    await rig.until(lambda: len(rig.spawner.engines) == 2)
    await rig.state(State.READY)
    assert rig.spawner.engines[0].stops  # the engine that would not wake is gone
    assert any("wake failed: POST /wake_up answered 500: CUDA error" in t for t in rig.trail())
    assert rig.sup.life.restarts == 0
    await rig.finish()


async def test_a_woken_engine_that_cannot_generate_is_started_cold() -> None:
    rig = sleepy()
    await asleep(rig)
    rig.prober.held = True  # the probe after the wake waits: then it fails
    await rig.handled(ev.Activate(ack=rig.ack()))
    await rig.until(lambda: rig.prober.dev_calls[-2:] == WAKE_CALLS)
    rig.prober.token_error = "1-token generation answered 500: garbage"
    rig.prober.held = False
    rig.prober.hold.set()
    await rig.until(lambda: any("wake failed: 1-token generation" in t for t in rig.trail()))
    rig.prober.token_error = None  # (the cold start may have met it too: then it restarted)
    await rig.state(State.READY)
    assert rig.spawner.engines[0].stops and len(rig.spawner.engines) >= 2
    await rig.finish()


async def test_an_engine_that_dies_asleep_goes_inactive_with_its_diagnosis() -> None:
    rig = sleepy()
    await asleep(rig)
    rig.spawner.say("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    rig.spawner.engines[0].exit(0)
    await rig.state(State.INACTIVE)
    st = as_dict(rig.sup.status())
    assert "while asleep; the next activate starts it cold" in st["reason"]
    assert st["diagnosis"]["id"] == "cuda-oom" and st["last_exit"] == "exited with code 0"
    assert rig.spawner.engines[0].killed  # whatever was left of its group
    await rig.handled(ev.Activate(ack=rig.ack()))
    await rig.state(State.READY)
    assert len(rig.spawner.engines) == 2 and rig.sup.life.restarts == 0
    await rig.finish()


async def test_deactivate_stop_ends_a_sleep_and_overrides_the_config() -> None:
    rig = sleepy()
    await asleep(rig)
    await rig.handled(ev.Deactivate(stop=True, ack=rig.ack()))
    await rig.state(State.INACTIVE)
    assert rig.spawner.engines[0].stops
    await rig.handled(ev.Activate(ack=rig.ack()))
    await rig.ready()
    await rig.handled(ev.Deactivate(stop=True, ack=rig.ack()))  # from READY: no sleep at all
    await rig.state(State.INACTIVE)
    assert rig.prober.dev_calls == SLEEP_CALLS
    await rig.finish()


async def test_restart_and_shutdown_of_a_sleeping_engine_stop_it() -> None:
    rig = sleepy()
    await asleep(rig)
    rig.sup.post(ev.Restart())
    await rig.until(lambda: len(rig.spawner.engines) == 2)
    await rig.state(State.READY)
    await rig.handled(ev.Deactivate(ack=rig.ack()))
    await rig.state(State.SLEEPING)
    assert await rig.finish() == 0
    assert rig.spawner.engines[1].stops


async def test_activate_during_the_sleep_call_wakes_after_it() -> None:
    rig = sleepy()
    rig.prober.dev_hold = asyncio.Event()
    await rig.ready()
    await rig.handled(ev.Deactivate(ack=rig.ack()))
    await rig.until(lambda: bool(rig.prober.dev_calls))
    await rig.handled(ev.Activate(ack=rig.ack()))  # the sleep call is in flight
    rig.prober.dev_hold.set()
    await rig.until(lambda: rig.prober.dev_calls[-2:] == WAKE_CALLS)
    await rig.state(State.READY)
    assert len(rig.spawner.engines) == 1
    await rig.finish()


async def test_reload_with_a_new_command_stops_a_sleeping_engine() -> None:
    rig = sleepy()
    await asleep(rig)
    rig.reload_answer = replace(
        rig.sup.setup, command=lambda: Command(("vllm", "serve", "other"), {}, (), frozenset())
    )
    ack = await rig.handled(ev.Reload(ack=rig.ack()))
    assert ack.reload is not None and ack.reload.restart
    assert "sleeping engine stops" in ack.reload.detail
    await rig.state(State.INACTIVE)
    assert len(rig.spawner.engines) == 1  # not started again: it was not wanted
    await rig.finish()


class Freeing:
    """A GPU guard whose engine holds BEFORE bytes until asked to sleep, AFTER bytes then."""

    def __init__(self, before: int, after: int) -> None:
        self.answers = [before, after]

    def check_start(self, setup: ModelSetup) -> Finding | None:
        return None

    def held(self, pgid: int) -> Held:
        n = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return Held(pgid, {0: n}, {0: 0})

    async def released(self, held: Held) -> str | None:
        return None


async def test_nvml_shows_what_the_sleep_freed_and_a_shortfall_is_said() -> None:
    rig = sleepy(gpu=Freeing(40 * GIB, 2 * GIB))
    await asleep(rig)
    assert "sleep freed 38.0 GiB of the 40.0 GiB the engine held (95%)" in rig.sup.life.reason
    await rig.finish()
    short = sleepy(gpu=Freeing(40 * GIB, 30 * GIB))
    await asleep(short)
    assert "sleep freed 10.0 GiB of the 40.0 GiB the engine held (25%); less than 50%" in (
        short.sup.life.reason
    )
    await short.finish()


def test_the_wake_steps_of_each_level() -> None:
    assert sleep.wake_steps(LEVEL1) == [("/wake_up", None)]
    assert [p for p, _ in sleep.wake_steps(replace(LEVEL2, reset_prefix_cache=False))] == [
        "/wake_up?tags=weights",
        "/collective_rpc",
        "/wake_up?tags=kv_cache",
    ]
    assert sleep.answered(0, "no answer within 5 s") == "failed: no answer within 5 s"
