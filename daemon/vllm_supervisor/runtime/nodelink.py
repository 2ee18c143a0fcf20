"""One multi-node group, supervised as one: the link between its supervisors, one per host
(docs/multi-node.md; the messages and their signing are protocol/nodes.py).

Rank 0 drives. Every POLL it sends each rank a sync (its engine generation's epoch, its state,
whether the group is wanted) and reads the rank's answer (its engine's epoch and pid, its
state). It never changes state itself: it posts events to its supervisor, the one owner.
- A start waits until every rank answers and none runs an engine of an older epoch
  (GroupHold), so the group starts together.
- A rank that ran this epoch and no longer does, or that has not answered for LOST_AFTER,
  is a dead engine for rank 0 (EngineDead, naming the rank): the whole group restarts, under
  rank 0's restart budget. vLLM alone notices a dead remote rank only when a request fails.
- A rank that leaves (its service stopped) stops the group (Deactivate); the group starts
  again when that rank is back.
The other ranks follow. A rank starts its engine for a new epoch of rank 0's, stops it when
rank 0's epoch moves on (Restart) or the group is no longer wanted (Deactivate), and stops it
when rank 0 has been silent for HEAD_LOST_AFTER (vllm #32136: headless ranks outlive their
head forever). Its readiness is rank 0's (HeadProber): a headless rank has no HTTP server.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from vllm_supervisor.config.nodes_keys import Rank
from vllm_supervisor.protocol import jsonbody
from vllm_supervisor.protocol import nodes as proto
from vllm_supervisor.protocol.states import State
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime.generation import Generation

HOLD_EXTEND = 60.0  # seconds of start timeout granted at a time while a start waits
RUNNING = frozenset({State.STARTING, State.PROBING, State.READY, State.DRAINING})
SERVING = frozenset({State.PROBING, State.READY, State.DRAINING})


class Owner(Protocol):
    """The supervisor, as its link reads it; the link only posts to it."""

    @property
    def state(self) -> State: ...
    @property
    def held(self) -> bool: ...
    @property
    def wanted(self) -> bool: ...
    @property
    def gen(self) -> Generation | None: ...
    @property
    def reason(self) -> str: ...
    @property
    def last_exit(self) -> str: ...
    def post(self, event: ev.Event) -> None: ...


@dataclass
class Seen:
    """What one end knows of another: its last answer and when."""

    at: float | None = None
    msg: dict[str, Any] = field(default_factory=dict)
    error: str = "no answer yet"
    ran: str | None = None  # (rank 0) the epoch this rank was seen running
    since: float | None = None  # (rank 0) time.time() when its state was first seen

    def fresh(self, now: float, limit: float) -> bool:
        return self.at is not None and now - self.at <= limit


class Link:
    """The common part: the listener on this host's cluster address, and the log."""

    def __init__(
        self,
        rank: Rank,
        key: bytes,
        group: str,
        owner: Owner,
        log: Any,
        facts: Callable[[], dict[str, Any]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rank, self.key, self.group, self.owner, self.log = rank, key, group, owner, log
        self.facts, self.clock = facts, clock
        self.verifier = proto.Verifier(key, group)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._refusals: dict[str, float] = {}
        self.leaving_reason: str | None = None
        self._extended = -1e9
        self._posted_hold: tuple[int, str | None] | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=proto.MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        # Only the cluster network's address: never a wildcard (docs/multi-node.md).
        site = web.TCPSite(self._runner, self.rank.address, self.rank.nodes.link_port)
        await site.start()
        self._tasks.append(asyncio.ensure_future(self._loop()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        why = self.verifier.check(request.method, request.path, headers, body)
        peer = request.remote or "?"
        if why is not None:
            self._refused(peer, request.path, why)
            return web.json_response({"error": f"refused: {why}"}, status=401)
        try:
            msg = proto.message(request.path, body)
        except jsonbody.BadBody as exc:
            return web.json_response({"error": str(exc)}, status=400)
        answer = self.answer(request.method, request.path, msg)
        if answer is None:
            return web.json_response({"error": f"no route {request.path}"}, status=404)
        raw = json.dumps(answer).encode()
        sig = proto.sign_answer(self.key, headers[proto.H_NONCE], 200, raw)
        return web.Response(body=raw, content_type="application/json", headers={proto.H_SIG: sig})

    def _refused(self, peer: str, path: str, why: str) -> None:
        """Every refusal is logged, at most once per peer per 10 s (a scan must not flood
        the journal)."""
        now = self.clock()
        if now - self._refusals.get(peer, -1e9) >= 10.0:
            self._refusals[peer] = now
            self.log.warning(
                "group link: request refused", model=self.group, peer=peer, path=path, why=why
            )

    def answer(self, method: str, path: str, msg: dict[str, Any]) -> dict[str, Any] | None:
        if path == proto.FACTS:
            return {"rank": self.rank.rank, "address": self.rank.address, **self.facts()}
        return None

    def report(self) -> dict[str, Any]:
        """This rank's engine, as the other end reads it."""
        own = self.owner
        gen = own.gen
        pid = gen.engine.pid if gen is not None and gen.engine is not None else None
        return {
            "rank": self.rank.rank,
            "state": own.state.value,
            "pid": pid,
            "epoch": self.epoch_of(gen) if pid is not None else None,
            "reason": own.reason,
            "last_exit": own.last_exit,
            "leaving": self.leaving_reason is not None,
        }

    def epoch_of(self, gen: Generation | None) -> str | None:
        raise NotImplementedError

    def _judge_hold(self, gen: Generation) -> None:
        """A start waiting for its group: say whether it may spawn now (once per change of
        the answer). It makes no load progress meanwhile: keep systemd's start timeout
        (TimeoutStartSec=) from ending it, as a download does (EXTEND_TIMEOUT_USEC)."""
        now = self.clock()
        if now - self._extended >= HOLD_EXTEND / 2:
            self._extended = now
            self.owner.post(ev.StillLoading(gen.number, HOLD_EXTEND))
        why = self.hold(gen.number)
        if self._posted_hold != (gen.number, why):
            self._posted_hold = (gen.number, why)
            self.owner.post(ev.GroupHold(gen.number, why))

    def view(self) -> dict[str, Any]:
        raise NotImplementedError

    async def _loop(self) -> None:
        raise NotImplementedError

    def hold(self, gen: int) -> str | None:
        raise NotImplementedError

    def leaving(self, reason: str) -> None:
        self.leaving_reason = reason


class HeadLink(Link):
    """Rank 0's end: polls every rank and judges the group."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.nonce = os.urandom(4).hex()  # a new process: epochs never repeat
        self.ranks = {r: Seen() for r in range(1, len(self.rank.nodes.hosts))}
        self._lost_reported: int | None = None
        self._left: int | None = None  # the rank whose leaving stopped the group

    def epoch_of(self, gen: Generation | None) -> str | None:
        return f"{self.nonce}.{gen.number}" if gen is not None else None

    def hold(self, gen: int) -> str | None:
        now = self.clock()
        epoch = f"{self.nonce}.{gen}"
        for r, seen in self.ranks.items():
            peer = self.rank.peer(r)
            if not seen.fresh(now, proto.LOST_AFTER):
                # Not seen.error: its wording changes with each poll (a timeout, then no
                # route), and each change of reason is a journal line. `status` shows it.
                return f"{peer} does not answer on link port {self.rank.nodes.link_port}"
            if seen.msg.get("leaving"):
                return f"{peer} is stopping"
            if seen.msg.get("pid") is not None and seen.msg.get("epoch") != epoch:
                return f"{peer} still runs the engine of the last start"
        return None

    def answer(self, method: str, path: str, msg: dict[str, Any]) -> dict[str, Any] | None:
        if path == proto.LEAVE:
            r = msg.get("rank")
            if isinstance(r, int) and r in self.ranks:
                self._leave(r, str(msg.get("reason", "stopped")))
                return {"ok": True}
        return super().answer(method, path, msg)

    def _leave(self, r: int, reason: str) -> None:
        if self.owner.wanted:
            self._left = r
            why = f"{self.rank.peer(r)} left the group ({reason}): the group stops"
            self.log.warning("group stops", model=self.group, rank=r, why=why)
            self.owner.post(ev.Deactivate(reason=why, stop=True))

    def sync_body(self) -> dict[str, Any]:
        own = self.owner
        return {
            "epoch": self.epoch_of(own.gen),
            "state": own.state.value,
            "held": own.held,
            "want": own.wanted and self.leaving_reason is None,
            "reason": self.leaving_reason or "",
        }

    async def _loop(self) -> None:
        polls = [asyncio.ensure_future(self._poll(r)) for r in self.ranks]
        try:
            while True:
                self.judge()
                await asyncio.sleep(proto.POLL / 2)
        finally:
            for p in polls:
                p.cancel()

    async def _poll(self, r: int) -> None:
        host, port = self.rank.nodes.hosts[r], self.rank.nodes.link_port
        seen = self.ranks[r]
        while True:
            started = self.clock()
            try:
                msg = await proto.call(
                    host,
                    port,
                    self.key,
                    self.group,
                    "POST",
                    proto.SYNC,
                    self.sync_body(),
                    proto.ANSWER_TIMEOUT,
                )
                if msg.get("state") != seen.msg.get("state"):
                    seen.since = time.time()
                seen.at, seen.msg = self.clock(), msg
            except TimeoutError:
                seen.error = f"no answer within {proto.ANSWER_TIMEOUT:g} s"
            except proto.Refused as exc:
                seen.error = f"refused the link: {exc}"
            except OSError as exc:
                seen.error = f"link unreachable ({exc.strerror or exc})"
            self.judge()
            await asyncio.sleep(max(0.0, proto.POLL - (self.clock() - started)))

    def judge(self) -> None:
        own, now = self.owner, self.clock()
        gen = own.gen
        if gen is None:
            return
        if own.held:
            self._judge_hold(gen)
            return
        epoch = self.epoch_of(gen)
        for r, seen in self.ranks.items():
            if seen.msg.get("leaving") and seen.fresh(now, proto.LOST_AFTER):
                self._leave(r, "its service is stopping")
            lost = None
            spawned = gen.engine is not None and own.state in RUNNING
            if not spawned:
                continue
            if not seen.fresh(now, proto.LOST_AFTER):
                ago = f"{now - seen.at:.1f} s" if seen.at is not None else "ever"
                lost = f"no answer for {ago} ({seen.error})"
            elif seen.msg.get("pid") is not None and seen.msg.get("epoch") == epoch:
                seen.ran = epoch
            elif seen.ran == epoch:
                how = seen.msg.get("last_exit") or seen.msg.get("state")
                lost = f"its engine is gone (engine {how})"
            if lost is not None and self._lost_reported != gen.number:
                self._lost_reported = gen.number
                why = f"{self.rank.peer(r)}: {lost}"
                self.log.error("group restarts: a rank failed", model=self.group, rank=r, why=why)
                own.post(ev.EngineDead(gen.number, why))
        if self._left is not None and own.state is State.INACTIVE and not own.wanted:
            seen = self.ranks[self._left]
            if seen.fresh(now, proto.LOST_AFTER) and not seen.msg.get("leaving"):
                why = f"{self.rank.peer(self._left)} is back: the group starts again"
                self._left = None
                own.post(ev.Activate(reason=why))

    def view(self) -> dict[str, Any]:
        now, wall = self.clock(), time.time()
        ranks = [
            {
                "rank": 0,
                "host": self.rank.address,
                "state": self.owner.state.value,
                "pid": self.report()["pid"],
                "answered": 0.0,
            }
        ]
        epoch = self.epoch_of(self.owner.gen)
        for r, seen in self.ranks.items():
            m, fresh = seen.msg, seen.fresh(now, proto.LOST_AFTER)
            # Why a rank that answers has not joined this start (a rank that never joins
            # leaves rank 0 loading in silence: its own reason says why).
            behind = fresh and m.get("epoch") != epoch and m.get("state") != State.INACTIVE
            ranks.append(
                {
                    "rank": r,
                    "host": self.rank.nodes.hosts[r],
                    "state": m.get("state", "unknown") if fresh else "unreachable",
                    "since": seen.since,
                    "pid": m.get("pid"),
                    "answered": None if seen.at is None else now - seen.at,
                    "error": seen.error if not fresh else (m.get("reason") if behind else None),
                }
            )
        return {"rank": 0, "head": self.rank.address, "ranks": ranks, "at": wall}


class WorkerLink(Link):
    """Any other rank's end: follows rank 0's syncs, tells it when this rank leaves."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.head = Seen()
        self._epochs: dict[int, str] = {}  # generation -> the epoch of rank 0 it runs
        self._last_epoch: str | None = None  # the epoch this rank last started for
        self._posted: tuple[int, str] | None = None  # (generation, what was posted)
        self._activated: str | None = None

    def epoch_of(self, gen: Generation | None) -> str | None:
        return self._epochs.get(gen.number) if gen is not None else None

    def hold(self, gen: int) -> str | None:
        h, now = self.head.msg, self.clock()
        if not self.head.fresh(now, proto.HEAD_LOST_AFTER):
            return f"no word from rank 0 ({self.rank.nodes.head})"
        if not h.get("want") or h.get("state") not in RUNNING:
            return f"rank 0 is {h.get('state')}"
        if h.get("epoch") == self._last_epoch:
            return "rank 0 has not started the group again yet"
        self._epochs[gen] = self._last_epoch = str(h.get("epoch"))
        return None

    def answer(self, method: str, path: str, msg: dict[str, Any]) -> dict[str, Any] | None:
        if path == proto.SYNC:
            self.head.at, self.head.msg = self.clock(), msg
            self.judge()
            return self.report()
        return super().answer(method, path, msg)

    def leaving(self, reason: str) -> None:
        super().leaving(reason)
        self._tasks.append(asyncio.ensure_future(self._say_leaving(reason)))

    async def _say_leaving(self, reason: str) -> None:
        body = {"rank": self.rank.rank, "reason": reason}
        try:
            await proto.call(
                self.rank.nodes.head,
                self.rank.nodes.link_port,
                self.key,
                self.group,
                "POST",
                proto.LEAVE,
                body,
                1.0,
            )
        except (OSError, TimeoutError) as exc:  # rank 0 sees it in the next sync's answer
            self.log.warning(
                "could not tell rank 0 this rank leaves", model=self.group, error=str(exc)
            )

    def _post_once(self, gen: Generation, what: str, event: ev.Event) -> None:
        if self._posted != (gen.number, what):
            self._posted = (gen.number, what)
            self.log.info("group: rank 0 decides", model=self.group, order=what)
            self.owner.post(event)

    def judge(self) -> None:
        own, h = self.owner, self.head.msg
        gen = own.gen
        fresh = self.head.fresh(self.clock(), proto.HEAD_LOST_AFTER)
        if self.leaving_reason is not None:
            return
        if own.held and gen is not None:
            self._judge_hold(gen)
            return
        head_runs = fresh and h.get("want") and h.get("state") in RUNNING
        if gen is not None and gen.engine is not None and own.state in RUNNING:
            mine = self._epochs.get(gen.number)
            if not fresh:
                why = f"rank 0 ({self.rank.nodes.head}) silent for {proto.HEAD_LOST_AFTER:g} s"
                self._post_once(gen, "restart", ev.Restart(reason=why))
            elif not h.get("want"):
                why = f"rank 0 stopped the group ({h.get('reason') or h.get('state')})"
                self._post_once(gen, "stop", ev.Deactivate(reason=why, stop=True))
            elif h.get("epoch") != mine:
                why = f"rank 0 restarted the group (it is {h.get('state')})"
                self._post_once(gen, "restart", ev.Restart(reason=why))
        elif own.state is State.INACTIVE and head_runs and self._activated != h.get("epoch"):
            self._activated = str(h.get("epoch"))
            own.post(ev.Activate(reason="rank 0 started the group"))

    async def _loop(self) -> None:
        """Rank 0 silent: judge() sees it on this clock, as no sync comes to call it."""
        while True:
            await asyncio.sleep(proto.POLL / 2)
            self.judge()

    def view(self) -> dict[str, Any]:
        now = self.clock()
        fresh = self.head.fresh(now, proto.HEAD_LOST_AFTER)
        return {
            "rank": self.rank.rank,
            "head": self.rank.nodes.head,
            "head_state": self.head.msg.get("state") if fresh else "unreachable",
            "head_heard": None if self.head.at is None else now - self.head.at,
        }


class HeadProber:
    """A headless rank's readiness and liveness: rank 0's, for this rank's epoch. It has no
    HTTP server; rank 0 cannot answer /health before every rank joined its process group."""

    def __init__(self, link: WorkerLink) -> None:
        self.link = link

    def _head(self) -> tuple[bool, str]:
        link, gen = self.link, self.link.owner.gen
        h = link.head.msg
        same = h.get("epoch") == link.epoch_of(gen)
        fresh = link.head.fresh(link.clock(), proto.HEAD_LOST_AFTER)
        return fresh and same, str(h.get("state"))

    def aim(self, address: Any) -> None:
        return None

    async def health(self, timeout: float) -> int | str:
        ok, state = self._head()
        return 200 if ok and state in SERVING else "refused"

    async def _until_ready(self, timeout: float) -> str | None:
        deadline = self.link.clock() + timeout
        while self.link.clock() < deadline:
            ok, state = self._head()
            if ok and state in (State.READY, State.DRAINING):
                return None
            await asyncio.sleep(0.2)
        return f"rank 0 not ready within {timeout:g} s"

    async def models(self, timeout: float) -> str | None:
        return await self._until_ready(timeout)

    async def one_token(self, timeout: float) -> str | None:
        return await self._until_ready(timeout)

    async def running_requests(self, timeout: float) -> float | None:
        return 0.0

    async def dev(
        self, method: str, path: str, timeout: float, body: dict[str, Any] | None = None
    ) -> tuple[int, str]:
        return 404, "a headless rank has no HTTP server"

    async def metrics_text(self, timeout: float) -> str:
        return ""
