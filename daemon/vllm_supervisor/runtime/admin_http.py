"""The admin socket's plumbing: request bodies checked field by field (a bad one is a 400 with
the reason), and JSON answers. Who the peer is: host/peers.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from vllm_supervisor.protocol import jsonbody
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime.events import Ack
from vllm_supervisor.runtime.probes import EngineAddress
from vllm_supervisor.runtime.states import State
from vllm_supervisor.runtime.status import Status

MAX_BODY = 64 * 1024


class AdminPort(Protocol):
    """What the admin socket may see of the supervisor and ask of it (runtime/supervisor.py
    implements it): post an event, read a status, follow states and engine lines. Nothing
    here changes state; only the events it posts do."""

    name: str

    @property
    def state(self) -> State: ...
    def status(self) -> Status: ...
    def post(self, event: ev.Event) -> None: ...
    def engine_key(self) -> str | None: ...
    def addresses(self) -> tuple[EngineAddress | None, EngineAddress | None]: ...
    def log_tail(self, n: int) -> list[str]: ...
    def follow_log(self) -> asyncio.Queue[list[str]]: ...
    def unfollow_log(self, q: asyncio.Queue[list[str]]) -> None: ...
    def follow_states(self) -> asyncio.Queue[dict[str, Any]]: ...
    def unfollow_states(self, q: asyncio.Queue[dict[str, Any]]) -> None: ...


class BadRequest(web.HTTPBadRequest):
    def __init__(self, reason: str) -> None:
        super().__init__(text=json.dumps({"error": reason}), content_type="application/json")


def gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def answers(path: Path) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def read_body(request: web.Request, fields: dict[str, type]) -> dict[str, Any]:
    """The body's fields, each of its type (protocol/jsonbody.py: NaN and inf refused)."""
    try:
        return jsonbody.fields(await request.read(), fields)
    except jsonbody.BadBody as exc:
        raise BadRequest(str(exc)) from None


def timeout_of(body: dict[str, Any]) -> float:
    timeout = float(body.get("timeout", 900.0))
    if timeout <= 0:
        raise BadRequest("timeout must be > 0")
    return timeout


def ack_future() -> asyncio.Future[Ack]:
    return asyncio.get_running_loop().create_future()


def json_response(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")
