"""The group link between two real supervisors' ends (issue 21), over TCP on two loopback
addresses, with owners that record what the link posts: the link decides nothing itself, it
posts the events a group needs, and in time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from vllm_supervisor.config.nodes_keys import Nodes, Rank
from vllm_supervisor.protocol import nodes as proto
from vllm_supervisor.protocol.states import State
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime import nodelink
from vllm_supervisor.runtime.generation import Generation

KEY = b"0123456789abcdef0123456789abcdef"


@dataclass
class FakeEngine:
    pid: int


@dataclass
class Owner:
    state: State = State.INACTIVE
    held: bool = False
    wanted: bool = False
    gen: Generation | None = None
    reason: str = ""
    last_exit: str = ""
    posted: list[ev.Event] = field(default_factory=list)

    def post(self, event: ev.Event) -> None:
        self.posted.append(event)

    def run(self, number: int, pid: int | None = 4242) -> None:
        self.gen = Generation(number, spawned_at=0.0, first_line=0)
        self.gen.engine = FakeEngine(pid) if pid else None  # type: ignore[assignment]
        self.state, self.wanted, self.held = State.READY, True, False

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.posted if isinstance(e, kind)]


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))

    warning = error = info


def nodes(port: int) -> Nodes:
    return Nodes(("127.0.0.11", "127.0.0.12"), "lo", None, 29500, port)  # type: ignore[arg-type]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(check: Any, timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def pair(worker_key: bytes = KEY) -> tuple[Any, Any, Owner, Owner, Log, Log]:
    n = nodes(free_port())
    head_owner, worker_owner, hlog, wlog = Owner(), Owner(), Log(), Log()
    head = nodelink.HeadLink(Rank(n, 0), KEY, "big", head_owner, hlog, lambda: {})
    worker = nodelink.WorkerLink(Rank(n, 1), worker_key, "big", worker_owner, wlog, lambda: {})
    await head.start()
    await worker.start()
    return head, worker, head_owner, worker_owner, hlog, wlog


async def let_go(owner: Owner) -> None:
    """OWNER starts generation 1 and waits for its group, until its link lets it spawn."""
    owner.gen = Generation(1, spawned_at=0.0, first_line=0)
    owner.state, owner.held, owner.wanted = State.STARTING, True, True
    await until(lambda: any(e.why is None for e in owner.of(ev.GroupHold)))
    owner.run(1)


async def test_a_group_starts_together_then_a_dead_rank_restarts_it_within_two_seconds() -> None:
    head, worker, ho, wo, hlog, _ = await pair()
    try:
        # Rank 0 starts generation 1 and waits for its group.
        ho.gen = Generation(1, spawned_at=0.0, first_line=0)
        ho.state, ho.held, ho.wanted = State.STARTING, True, True
        await until(lambda: any(e.why is None for e in ho.of(ev.GroupHold)))
        # The worker, waiting too, is let go for rank 0's epoch.
        wo.gen = Generation(1, spawned_at=0.0, first_line=0)
        wo.state, wo.held, wo.wanted = State.STARTING, True, True
        await until(lambda: any(e.why is None for e in wo.of(ev.GroupHold)))
        ho.run(1)
        wo.run(1)
        await asyncio.sleep(1.2)  # rank 0 sees rank 1 run its epoch
        assert not ho.of(ev.EngineDead)
        assert head.view()["ranks"][1]["error"] is None  # it runs this start
        wo.gen.engine = None  # rank 1's engine is killed
        wo.last_exit = "killed by SIGKILL"
        wo.state, wo.reason = State.RESTARTING, "engine killed by SIGKILL unexpectedly"
        took = await until(lambda: bool(ho.of(ev.EngineDead)))
        assert took < 2.0
        dead = ho.of(ev.EngineDead)[0]
        assert dead.gen == 1 and "rank 1 (127.0.0.12)" in dead.why and "SIGKILL" in dead.why
        assert any(e == "group restarts: a rank failed" for e, _ in hlog.lines)
        row = head.view()["ranks"][1]  # `vllmctl status` on rank 0 says why
        assert (row["state"], row["error"]) == (
            "restarting",
            "engine killed by SIGKILL unexpectedly",
        )
    finally:
        await worker.stop()
        await head.stop()


async def test_a_silent_head_stops_the_ranks_engine() -> None:
    head, worker, ho, wo, _, _ = await pair()
    try:
        ho.run(1)
        await let_go(wo)
        await asyncio.sleep(proto.HEAD_LOST_AFTER + 0.5)
        assert not wo.of(ev.Restart)  # rank 0 speaks: the rank's engine stays
        await head.stop()  # rank 0's supervisor is gone
        # Within HEAD_LOST_AFTER of the last sync (up to a POLL before the stop), with room
        # for a loaded machine: the bound is the behaviour, not a speed.
        await until(lambda: bool(wo.of(ev.Restart)), timeout=proto.HEAD_LOST_AFTER + 3.0)
        silent = worker.clock() - (worker.head.at or 0.0)
        assert silent >= proto.HEAD_LOST_AFTER
        assert "silent" in wo.of(ev.Restart)[0].reason
    finally:
        await worker.stop()


async def test_a_new_epoch_restarts_the_rank_and_a_stop_deactivates_it() -> None:
    head, worker, ho, wo, _, _ = await pair()
    try:
        ho.run(1)
        await let_go(wo)
        ho.gen = Generation(2, spawned_at=0.0, first_line=0)  # rank 0 restarted
        await until(lambda: bool(wo.of(ev.Restart)))
        assert "restarted the group" in wo.of(ev.Restart)[0].reason
        wo.run(3)  # the rank runs again (for whatever epoch): rank 0 is deactivated
        worker._epochs[3] = head.epoch_of(ho.gen) or ""
        ho.wanted, ho.state = False, State.STOPPING
        await until(lambda: bool(wo.of(ev.Deactivate)))
        assert wo.of(ev.Deactivate)[0].stop
    finally:
        await worker.stop()
        await head.stop()


async def test_a_leaving_rank_stops_the_group_and_its_return_starts_it() -> None:
    head, worker, ho, *_ = await pair()
    try:
        ho.run(1)
        worker.leaving("SIGTERM")
        await until(lambda: bool(ho.of(ev.Deactivate)))
        assert "rank 1 (127.0.0.12) left the group (SIGTERM)" in ho.of(ev.Deactivate)[0].reason
        ho.state, ho.wanted, ho.gen.engine = State.INACTIVE, False, None  # type: ignore[union-attr]
        worker.leaving_reason = None  # its service is back
        await until(lambda: bool(ho.of(ev.Activate)))
        assert "is back" in ho.of(ev.Activate)[0].reason
    finally:
        await worker.stop()
        await head.stop()


async def test_a_wrong_key_is_refused_logged_and_holds_the_group() -> None:
    head, worker, ho, wo, _, wlog = await pair(worker_key=b"not the group's key" * 2)
    try:
        ho.gen = Generation(1, spawned_at=0.0, first_line=0)
        ho.state, ho.held, ho.wanted = State.STARTING, True, True
        await asyncio.sleep(1.0)
        assert head.ranks[1].error.startswith("refused the link: 401")
        assert any(
            e == "group link: request refused" and "bad signature" in kw["why"]
            for e, kw in wlog.lines
        )
        assert not wo.of(ev.GroupHold) and not wo.of(ev.Activate)  # it took no order
        assert all(e.why is not None for e in ho.of(ev.GroupHold))  # rank 0 never started
    finally:
        await worker.stop()
        await head.stop()


async def test_an_unsigned_client_gets_401_and_no_facts() -> None:
    head, worker, *_ = await pair()
    try:
        r, w = await asyncio.open_connection("127.0.0.12", worker.rank.nodes.link_port)
        w.write(b"GET /v1/group/facts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = await r.read()
        w.close()
        assert raw.startswith(b"HTTP/1.1 401") and b"unsigned request" in raw
    finally:
        await worker.stop()
        await head.stop()


async def raw(port: int, data: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.12", port)
    w.write(data)
    with contextlib.suppress(ConnectionError):
        await w.drain()
    got = await asyncio.wait_for(r.read(), 10)
    w.close()
    return got


async def test_what_a_hostile_peer_sends_gets_a_4xx_and_takes_no_order() -> None:
    head, worker, _, wo, _, wlog = await pair()
    port = worker.rank.nodes.link_port
    try:
        big = b"x" * (proto.MAX_BODY + 1)
        answers = [
            # a body over the link's bound, signed or not: refused unread
            await raw(
                port,
                b"POST /v1/group/sync HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(big), big),
            ),
            # malformed HTTP
            await raw(port, b"GARBAGE\r\n\r\n"),
            # path tricks reach no route without the signature of that very path
            await raw(
                port,
                b"GET /v1/group/../group/facts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ),
            await raw(
                port,
                b"GET //v1/group/%2e%2e/facts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ),
        ]
        for got in answers:
            status = int(got.split(b" ", 2)[1])
            assert 400 <= status < 500, got[:200]
            assert b"Traceback" not in got
        assert not wo.posted  # nothing reached the supervisor
        # A signed request whose body is not a JSON object: 400, still no order.
        with pytest.raises(proto.Refused) as exc:
            await proto.call("127.0.0.12", port, KEY, "big", "POST", proto.SYNC, None, 3.0)
        assert exc.value.status == 400
        assert not wo.posted
        assert all(KEY.decode() not in repr(kw) for _, kw in wlog.lines)  # no secret logged
    finally:
        await worker.stop()
        await head.stop()
