"""The admin socket's plumbing: who the peer is (SO_PEERCRED, unix(7)), request bodies
checked field by field (a bad one is a 400 with the reason), and JSON answers."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import socket
import struct
from pathlib import Path
from typing import Any

from aiohttp import web

from vllm_supervisor.runtime.events import Ack

MAX_BODY = 64 * 1024


class BadRequest(web.HTTPBadRequest):
    def __init__(self, reason: str) -> None:
        super().__init__(text=json.dumps({"error": reason}), content_type="application/json")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the connected peer: unix(7) SO_PEERCRED."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def process_groups(pid: int) -> set[int]:
    """The peer process's real supplementary groups (/proc/PID/status `Groups:`)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()


def peer_allowed(pid: int, uid: int, gid: int, admin_gid: int | None) -> bool:
    """Root, the service's own uid, and members of the admin group (primary, supplementary
    as the peer process holds them, or listed in /etc/group) may use the socket."""
    if uid in (0, os.getuid()):
        return True
    if admin_gid is None:
        return False
    if gid == admin_gid or admin_gid in process_groups(pid):
        return True
    with contextlib.suppress(KeyError):
        return pwd.getpwuid(uid).pw_name in grp.getgrgid(admin_gid).gr_mem
    return False


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
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    for key, value in body.items():
        want = fields.get(key)
        if want is None:
            raise BadRequest(f"unknown field '{key}'; known: {', '.join(sorted(fields))}")
        ok = (
            isinstance(value, bool)
            if want is bool
            else (isinstance(value, int | float) and not isinstance(value, bool))
        )
        if not ok:
            raise BadRequest(f"field '{key}' must be {want.__name__}, got {value!r}")
    return body


def timeout_of(body: dict[str, Any]) -> float:
    timeout = float(body.get("timeout", 900.0))
    if timeout <= 0:
        raise BadRequest("timeout must be > 0")
    return timeout


def ack_future() -> asyncio.Future[Ack]:
    return asyncio.get_running_loop().create_future()


def json_response(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")
