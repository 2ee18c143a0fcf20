"""A multi-node rank's supervisor with a stand-in for its group link (issue 21): a start
waits for the group without spawning, spawns on the link's word, waits again for a stale
word never, and a shutdown is said to the group. The link itself is
tests/runtime/test_nodelink.py; the real group, tests/e2e/test_multinode_real_engine.py."""

from __future__ import annotations

from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime.states import State

from tests.fakes import fast_settings
from tests.runtime.test_supervisor import Rig


class Gate:
    def __init__(self) -> None:
        self.why: str | None = "rank 1 (10.0.0.2) does not answer on link port 29600"
        self.asked: list[int] = []
        self.left: list[str] = []

    def hold(self, gen: int) -> str | None:
        self.asked.append(gen)
        return self.why

    def leaving(self, reason: str) -> None:
        self.left.append(reason)


def rig() -> tuple[Rig, Gate]:
    r = Rig(fast_settings())
    gate = Gate()
    r.effects.nodes = gate  # before the loop runs the autostart
    return r, gate


async def test_a_start_waits_for_its_group_then_spawns_on_the_links_word() -> None:
    r, gate = rig()
    await r.until(lambda: gate.asked == [1])
    assert r.sup.state is State.STARTING and r.sup.held and r.spawner.engines == []
    st = r.sup.status()
    assert (
        st.reason == "waiting for the group: rank 1 (10.0.0.2) does not answer on link port 29600"
    )
    r.sup.post(ev.GroupHold(1, "rank 1 (10.0.0.2) still runs the engine of the last start"))
    await r.until(lambda: "still runs" in r.sup.status().reason)
    assert r.spawner.engines == []
    r.sup.post(ev.GroupHold(1, None))
    await r.until(lambda: len(r.spawner.engines) == 1)
    assert not r.sup.held
    await r.ready()
    assert r.notifier.count("READY") == 1
    r.sup.post(ev.GroupHold(1, None))  # a late word spawns nothing more
    assert await r.finish() == 0
    assert len(r.spawner.engines) == 1 and gate.left == ["SIGTERM"]


async def test_a_word_for_another_start_spawns_nothing() -> None:
    r, _ = rig()
    await r.until(lambda: r.sup.held)
    r.sup.post(ev.GroupHold(7, None))  # not this generation's
    await r.until(lambda: r.sup.life.events >= 2)
    assert r.spawner.engines == [] and r.sup.held
    await r.finish()


async def test_a_waiting_start_is_stopped_without_an_engine() -> None:
    r, _ = rig()
    await r.until(lambda: r.sup.held)
    await r.handled(ev.Deactivate(reason="rank 0 stopped the group", stop=True, ack=r.ack()))
    await r.state(State.INACTIVE)
    assert r.spawner.engines == []
    assert r.sup.status().reason == "stopped (rank 0 stopped the group)"
    await r.finish()


async def test_a_dead_rank_restarts_the_group_under_rank_0s_budget() -> None:
    r, gate = rig()
    gate.why = None
    await r.ready()
    used = r.sup.status().budget_used
    gate.why = "rank 1 (10.0.0.2) still runs the engine of the last start"
    r.sup.post(ev.EngineDead(1, "rank 1 (10.0.0.2): its engine is gone (engine killed by SIGKILL)"))
    await r.until(lambda: r.sup.held and r.sup.gen is not None and r.sup.gen.number == 2)
    assert r.spawner.engines[0].killed  # rank 0's own engine went first
    assert r.sup.status().budget_used == used + 1
    assert any("rank 1 (10.0.0.2): its engine is gone" in h["reason"] for h in r.sup.life.history)
    await r.finish()
