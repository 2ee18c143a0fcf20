"""gpu_group exclusivity as the supervisor enforces it, with a stand-in for the peers' admin
sockets: a refused activation names the active peer, --swap deactivates it first, and a
refused autostart leaves the service up and INACTIVE."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime.effects import ModelSetup
from vllm_supervisor.runtime.states import State

from tests.fakes import command, fast_settings
from tests.runtime.test_supervisor import Rig


class Peers:
    def __init__(self, active: tuple[str, str] | None) -> None:
        self.active = active
        self.deactivated: list[str] = []
        self.locked = 0
        self.asked: list[tuple[str, ...]] = []

    async def active_peer(self, peers: tuple[str, ...]) -> tuple[str, str] | None:
        self.asked.append(peers)
        return self.active

    async def deactivate(self, peer: str) -> str | None:
        self.deactivated.append(peer)
        self.active = None
        return None

    @contextlib.asynccontextmanager
    async def lock(self, group: str) -> AsyncIterator[None]:
        assert group == "card0"
        self.locked += 1
        yield


async def start(autostart: bool) -> tuple[Rig, Peers]:
    peers = Peers(("big", "ready"))
    settings = fast_settings(autostart=autostart)
    setup = ModelSetup(
        settings, command=command, endpoint="h:1", gpu_group="card0", peers=("big", "small")
    )
    return Rig(settings, group=peers, setup=setup), peers


async def test_activate_is_refused_while_a_peer_is_active() -> None:
    rig, peers = await start(autostart=False)
    ack = await rig.handled(ev.Activate(ack=rig.ack()))
    assert ack.refused == (
        "gpu_group card0: big is ready; deactivate it first, or activate with --swap"
    )
    assert rig.sup.state is State.INACTIVE and rig.spawner.engines == []
    assert rig.sup.status().reason == ack.refused  # `state` says why
    assert peers.asked == [("big", "small")] and peers.locked == 1
    await rig.finish()


async def test_swap_deactivates_the_peer_first_then_starts() -> None:
    rig, peers = await start(autostart=False)
    ack = await rig.handled(ev.Activate(swap=True, ack=rig.ack()))
    assert ack.refused is None and peers.deactivated == ["big"]
    await rig.ready()
    assert "inactive->starting: activate (swap)" in rig.trail()
    await rig.finish()


async def test_a_refused_autostart_stays_inactive_and_the_service_is_ready() -> None:
    rig, _ = await start(autostart=True)
    await rig.until(lambda: rig.notifier.count("READY") == 1)
    assert rig.sup.state is State.INACTIVE and rig.spawner.engines == []
    assert "big is ready" in rig.sup.status().reason
    await rig.finish()


async def test_a_model_in_no_group_never_asks() -> None:
    peers = Peers(("big", "ready"))
    rig = Rig(group=peers)  # no gpu_group in its setup
    await rig.ready()
    assert peers.asked == [] and peers.locked == 0
    await asyncio.wait_for(rig.finish(), 5)
