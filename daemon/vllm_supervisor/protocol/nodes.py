"""The link between the supervisors of one multi-node group, as both ends and `vllmctl check`
use it: the messages, how each is signed with the group's key, and one signed HTTP/1.1
exchange over TCP (docs/multi-node.md).

Every request carries the group's name, a time, a fresh nonce and an HMAC-SHA256 of all of
them with the method, path and body; the answer is signed over the request's nonce, so an old
answer cannot be replayed as a new one. Signatures are compared with hmac.compare_digest
(constant time). A request older or newer than WINDOW seconds, or whose nonce was seen, is
refused: a recorded `leave` cannot be sent again to stop the group. The key never travels.

vLLM's own inter-node traffic (torch.distributed, gloo/NCCL) has no such protection: it is
unencrypted and can execute arbitrary code (vLLM's parallelism docs), so the cluster network
must stay private whatever this link does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from typing import Any

from vllm_supervisor.protocol import jsonbody
from vllm_supervisor.protocol.admin import Answer, Unreachable, _head, _sized
from vllm_supervisor.protocol.states import State

# Timings of the link (runtime/nodelink.py). A rank is lost when it has not answered for
# LOST_AFTER; rank 0 polls every POLL, so a dead worker engine is seen within POLL plus one
# answer, and the group's restart begins within 2 s of a death (issue 21).
POLL = 0.5
ANSWER_TIMEOUT = 0.8
LOST_AFTER = 1.5
HEAD_LOST_AFTER = 2.0  # a worker without a sync this long stops its engine (vllm #32136)
WINDOW = 30.0  # seconds a signed request stays acceptable: hosts' clocks must agree (NTP)
MAX_BODY = 64 * 1024

SYNC = "/v1/group/sync"  # rank 0 -> each rank, every POLL: rank 0's state; the rank's answer
LEAVE = "/v1/group/leave"  # a rank that is stopped (systemctl stop) -> rank 0
FACTS = "/v1/group/facts"  # vllmctl check on rank 0 -> each rank: what must match

H_GROUP, H_TIME, H_NONCE, H_SIG = "x-vsup-group", "x-vsup-time", "x-vsup-nonce", "x-vsup-sig"


def _mac(key: bytes, *parts: str, body: bytes) -> str:
    msg = "\n".join(parts).encode() + b"\n" + body
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def sign_request(
    key: bytes, group: str, method: str, path: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    when = f"{now if now is not None else time.time():.3f}"
    nonce = os.urandom(16).hex()
    sig = _mac(key, method, path, group, when, nonce, body=body)
    return {H_GROUP: group, H_TIME: when, H_NONCE: nonce, H_SIG: sig}


def sign_answer(key: bytes, nonce: str, status: int, body: bytes) -> str:
    return _mac(key, "answer", nonce, str(status), body=body)


def message(path: str, raw: bytes) -> dict[str, Any]:
    """A signed request's body, checked for its path: BadBody (a 400) when a field is
    missing or of another type. Even the key's holders cannot make a rank act on half a
    message (a sync without `want` once read as "the group is not wanted")."""
    body = jsonbody.loads(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise jsonbody.BadBody("the body must be a JSON object")
    need: dict[str, tuple[type, ...]] = {}
    if path == SYNC:
        need = {
            "epoch": (str, type(None)),
            "state": (str,),
            "held": (bool,),
            "want": (bool,),
            "reason": (str,),
        }
    elif path == LEAVE:
        need = {"rank": (int,), "reason": (str,)}
    for key, kinds in need.items():
        value = body.get(key)
        if (
            key not in body
            or not isinstance(value, kinds)
            or (bool not in kinds and isinstance(value, bool))
        ):
            raise jsonbody.BadBody(f"field '{key}' missing or of the wrong type")
    if path == SYNC and body["state"] not in set(State):
        raise jsonbody.BadBody(f"unknown state {body['state']!r}")
    return body


class Verifier:
    """Checks signed requests for one group; remembers the nonces it took for WINDOW."""

    def __init__(self, key: bytes, group: str, clock: Callable[[], float] = time.time) -> None:
        self.key, self.group, self.clock = key, group, clock
        self._seen: dict[str, float] = {}

    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> str | None:
        """None when the request is the group's own and fresh, else why it is refused."""
        group, when = headers.get(H_GROUP, ""), headers.get(H_TIME, "")
        nonce, sig = headers.get(H_NONCE, ""), headers.get(H_SIG, "")
        if not (group and when and nonce and sig):
            return "unsigned request"
        want = _mac(self.key, method, path, group, when, nonce, body=body)
        if not hmac.compare_digest(want.encode(), sig.encode()):
            return "bad signature (not this group's key)"
        if group != self.group:
            return f"signed for group {group!r}"
        now = self.clock()
        try:
            skew = abs(now - float(when))
        except ValueError:
            return "bad time"
        if not skew <= WINDOW:  # `not <=`: a NaN time is refused too
            return f"time off by {skew:.0f} s (more than {WINDOW:g} s: check NTP)"
        for old, t in list(self._seen.items()):
            if now - t > 2 * WINDOW:
                del self._seen[old]
        if nonce in self._seen:
            return "replayed request"
        self._seen[nonce] = now
        return None


class Refused(OSError):
    """The other end answered, but refused the request (its status and reason)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status


async def call(
    host: str,
    port: int,
    key: bytes,
    group: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    timeout: float,
) -> dict[str, Any]:
    """One signed request to a rank's link and its checked JSON answer. OSError when none
    came (refused, unreachable, Unreachable), Refused when it was refused, TimeoutError past
    TIMEOUT."""
    data = json.dumps(body).encode() if body is not None else b""
    signed = sign_request(key, group, method, path, data)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_BODY)
        try:
            head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in signed.items())
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            writer.write(head.encode() + b"\r\n" + data)
            await writer.drain()
            status, headers = await _head(reader)
            size = int(headers.get("content-length", "0") or 0)
            if size > MAX_BODY:
                raise Unreachable(f"answer of {size} bytes")
            raw = b"".join([c async for c in _sized(reader, size)])
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    answer = Answer(status, raw)
    if status == 200 and not hmac.compare_digest(
        headers.get(H_SIG, "").encode(),
        sign_answer(key, signed[H_NONCE], status, raw).encode(),
    ):
        raise Refused(status, "the answer is not signed with this group's key")
    try:
        value = json.loads(answer.body or b"{}")
    except ValueError:
        value = {}
    if status != 200:
        why = value.get("error") if isinstance(value, dict) else None
        raise Refused(status, str(why or answer.body[:200]))
    if not isinstance(value, dict):
        raise Unreachable("the answer is not a JSON object")
    return value
