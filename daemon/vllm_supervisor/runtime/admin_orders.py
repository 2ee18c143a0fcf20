"""The admin socket's orders: activate, restart, reload, deactivate. Each posts one event to
the supervisor (only the supervisor changes state), waits until it was handled, and then,
if asked to wait, follows the states it causes as NDJSON until a terminal one."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from vllm_supervisor.protocol.states import TERMINAL_DOWN, TERMINAL_UP
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime.admin_http import (
    AdminPort,
    BadRequest,
    ack_future,
    gone,
    json_response,
    read_body,
    timeout_of,
)
from vllm_supervisor.runtime.states import State

Order = ev.Activate | ev.Deactivate | ev.Restart | ev.Reload


class Orders:
    def __init__(self, sup: AdminPort, state: Callable[[], dict[str, Any]]) -> None:
        self.sup, self._state = sup, state

    async def activate(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request, {"wait": bool, "timeout": float, "swap": bool})
        swap = bool(body.get("swap", False))
        event = ev.Activate("activate (admin)", swap=swap, ack=ack_future())
        return await self._post_and_follow(request, event, body, TERMINAL_UP, default_wait=False)

    async def restart(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request, {"wait": bool, "timeout": float})
        event = ev.Restart("restart (admin)", ack=ack_future())
        return await self._post_and_follow(request, event, body, TERMINAL_UP, default_wait=False)

    async def reload(self, request: web.Request) -> web.StreamResponse:
        """Re-read the config; with wait, follow a resulting engine restart until ready. This
        is the unit's ExecReload: systemctl reload returns when the reload is done."""
        body = await read_body(request, {"wait": bool, "timeout": float})
        timeout = timeout_of(body)
        q, ack = await self._submit(ev.Reload("reload (admin)", ack=ack_future()))
        try:
            result = ack.reload
            assert result is not None  # a Reload is always answered with its outcome
            if not result.ok:
                return json_response(
                    {
                        "error": "config invalid; the running engine is unchanged",
                        "problems": result.detail,
                    },
                    422,
                )
            if not (result.restart and body.get("wait", True)):
                return json_response({"accepted": True, "seq": ack.seq, **self._state()})
            return await self._follow(
                request, q, self._state(), TERMINAL_UP, timeout, restart_seen=False
            )
        finally:
            self.sup.unfollow_states(q)

    async def deactivate(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(
            request, {"wait": bool, "timeout": float, "drain_timeout": float, "stop": bool}
        )
        drain = float(body.get("drain_timeout", 30.0))
        if drain < 0:
            raise BadRequest("drain_timeout must be >= 0")
        # stop: true stops even a model set to `deactivate: sleep` (and ends a sleep).
        stop = bool(body.get("stop", False))
        event = ev.Deactivate(
            "deactivate (admin)", drain_timeout=drain, stop=stop, ack=ack_future()
        )
        return await self._post_and_follow(request, event, body, TERMINAL_DOWN, default_wait=True)

    async def _post_and_follow(
        self,
        request: web.Request,
        event: ev.Activate | ev.Deactivate | ev.Restart,
        body: dict[str, Any],
        terminal: frozenset[State],
        default_wait: bool,
    ) -> web.StreamResponse:
        wait = bool(body.get("wait", default_wait))
        timeout = timeout_of(body)
        q, ack = await self._submit(event)
        try:
            snap = self._state()
            if ack.refused:  # a gpu_group peer is active: 409, the state names it
                return json_response({"error": ack.refused, **snap}, 409)
            if not wait:
                return json_response({"accepted": True, "seq": ack.seq, **snap}, 202)
            return await self._follow(
                request, q, snap, terminal, timeout, restart_seen=not isinstance(event, ev.Restart)
            )
        finally:
            self.sup.unfollow_states(q)

    async def _submit(self, event: Order) -> tuple[asyncio.Queue[dict[str, Any]], ev.Ack]:
        """Post an event and wait until the supervisor has handled it. The subscription is
        taken first, so no transition it causes can slip past; the caller unsubscribes."""
        q = self.sup.follow_states()
        try:
            self.sup.post(event)
            assert event.ack is not None
            return q, await event.ack  # handled: what follows is this request's doing
        except BaseException:
            self.sup.unfollow_states(q)
            raise

    async def _follow(
        self,
        request: web.Request,
        q: asyncio.Queue[dict[str, Any]],
        snap: dict[str, Any],
        terminal: frozenset[State],
        timeout: float,
        restart_seen: bool,
    ) -> web.StreamResponse:
        """NDJSON: one state snapshot per transition (and load phase) until a terminal state
        or the timeout, so the caller can show progress while it waits."""
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write((json.dumps(snap) + "\n").encode())
        deadline = time.monotonic() + timeout
        while snap["state"] not in terminal or not restart_seen:
            left = deadline - time.monotonic()
            if gone(request):
                break
            if left <= 0:
                await resp.write((json.dumps({"timeout": True, **snap}) + "\n").encode())
                break
            try:
                snap = await asyncio.wait_for(q.get(), timeout=min(left, 5.0))
            except TimeoutError:
                snap = self._state()  # progress tick for the caller
            restart_seen = restart_seen or snap["state"] != State.READY
            await resp.write((json.dumps(snap) + "\n").encode())
        await resp.write_eof()
        return resp
