"""The admin socket's upgrade paths (vllmctl upgrade and rollback drive them, step by step:
ctl/upgrade.py). Each order posts one event and waits until the supervisor handled it; the
slow parts (the candidate's start, the old engine's drain) are followed on the state feed.

  POST /v1/upgrade/candidate {venv, reason, timeout}  check + start; NDJSON until ready/failed
  POST /v1/upgrade/golden                             the same requests to both engines
  POST /v1/upgrade/promote                            the candidate serves from now on
  POST /v1/upgrade/retire {drain_timeout, timeout}    drain and stop the replaced engine
  POST /v1/upgrade/discard {outcome, why, timeout}    stop the candidate
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime import golden
from vllm_supervisor.runtime.admin_http import (
    AdminPort,
    BadRequest,
    ack_future,
    gone,
    json_response,
    read_body,
    timeout_of,
)

REASONS = ("upgrade", "rollback")
OUTCOMES = ("golden-failed", "aborted")
Snap = dict[str, Any]


def candidate_of(snap: Snap) -> dict[str, Any] | None:
    up = snap.get("upgrade") or {}
    c = up.get("candidate")
    return c if isinstance(c, dict) else None


class Upgrades:
    def __init__(self, sup: AdminPort, state: Callable[[], Snap]) -> None:
        self.sup, self._state = sup, state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/upgrade/candidate", self.candidate),
            web.post("/v1/upgrade/golden", self.golden),
            web.post("/v1/upgrade/promote", self.promote),
            web.post("/v1/upgrade/retire", self.retire),
            web.post("/v1/upgrade/discard", self.discard),
        ]

    async def _order(self, event: ev.Order) -> str | None:
        self.sup.post(event)
        assert event.ack is not None
        return (await event.ack).refused

    async def _until(self, done: Callable[[Snap], bool], timeout: float) -> Snap:
        q = self.sup.follow_states()
        try:
            deadline = time.monotonic() + timeout
            while not done(snap := self._state()) and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(q.get(), timeout=min(1.0, timeout))
            return snap
        finally:
            self.sup.unfollow_states(q)

    async def candidate(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request, {"venv": str, "reason": str, "timeout": float})
        venv, reason = body.get("venv"), body.get("reason", "upgrade")
        if not venv:
            raise BadRequest("venv is required: the engine venv to upgrade to")
        if reason not in REASONS:
            raise BadRequest(f"reason must be one of {', '.join(REASONS)}")
        timeout = timeout_of(body)
        refused = await self._order(ev.StartCandidate(venv, reason, ack=ack_future()))
        if refused is not None:
            last = (self._state().get("upgrade") or {}).get("last") or {}
            outcome = str(last.get("outcome"))
            step = {"check-failed": "check", "no-room": "room"}.get(outcome, "state")
            status = 422 if step == "check" else 409
            return json_response({"error": refused, "step": step, **self._state()}, status)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        q = self.sup.follow_states()
        try:
            deadline = time.monotonic() + timeout
            while True:
                snap = self._state()
                c = candidate_of(snap)
                await resp.write((json.dumps({"candidate": c}) + "\n").encode())
                if c is None or c["phase"] != "starting" or gone(request):
                    break
                if time.monotonic() >= deadline:
                    await self._order(ev.Discard("aborted", f"not ready within {timeout:g} s",
                                                 ack=ack_future()))  # fmt: skip
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(q.get(), timeout=5.0)
        finally:
            self.sup.unfollow_states(q)
        await resp.write_eof()
        return resp

    async def golden(self, request: web.Request) -> web.Response:
        await read_body(request, {})
        serving, cand = self.sup.addresses()
        if serving is None:
            raise BadRequest("the model has no engine address")
        tools = bool(self._state().get("tool_parser"))
        async with aiohttp.ClientSession() as session:
            both = await asyncio.gather(
                golden.answers(session, serving, tools),
                golden.answers(session, cand, tools) if cand is not None else _none(),
            )
        return json_response({"serving": both[0], "candidate": both[1]})

    async def promote(self, request: web.Request) -> web.Response:
        await read_body(request, {})
        refused = await self._order(ev.Promote(ack=ack_future()))
        if refused is not None:
            return json_response({"error": refused, **self._state()}, 409)
        return json_response(self._state())

    async def retire(self, request: web.Request) -> web.Response:
        body = await read_body(request, {"drain_timeout": float, "timeout": float})
        drain = float(body.get("drain_timeout", 30.0))
        if drain < 0:
            raise BadRequest("drain_timeout must be >= 0")
        refused = await self._order(ev.Retire(drain, ack=ack_future()))
        if refused is not None:
            return json_response({"error": refused, **self._state()}, 409)
        snap = await self._until(lambda s: not (s.get("upgrade") or {}).get("retiring"),
                                 timeout_of(body))  # fmt: skip
        return json_response(snap)

    async def discard(self, request: web.Request) -> web.Response:
        body = await read_body(request, {"outcome": str, "why": str, "timeout": float})
        outcome = body.get("outcome", "aborted")
        if outcome not in OUTCOMES:
            raise BadRequest(f"outcome must be one of {', '.join(OUTCOMES)}")
        why = str(body.get("why", ""))[:500]
        refused = await self._order(ev.Discard(outcome, why, ack=ack_future()))
        if refused is not None:
            return json_response({"error": refused, **self._state()}, 409)
        snap = await self._until(lambda s: (candidate_of(s) or {"gone": True})["gone"],
                                 timeout_of(body))  # fmt: skip
        return json_response(snap)


async def _none() -> None:
    return None
