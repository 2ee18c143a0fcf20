"""The instances' admin sockets, as every side that asks them uses them: where a socket is,
one HTTP/1.1 exchange over it (the standard library's asyncio streams: vllmctl may not
import aiohttp, and one client serves all three programs), and what an answer says.

The server side is runtime/admin.py (aiohttp). An answer is JSON, or NDJSON lines for an
order followed until it ends (one state per line); a streamed answer comes chunked.
A socket that is absent or refuses means the instance's service is not running: DOWN.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm_supervisor.protocol.states import DOWN

LineSink = Callable[[dict[str, Any]], None]
RawSink = Callable[[bytes], None]
MAX_HEAD = 64 * 1024  # status line and headers


def socket_path(base: Path, model: str) -> Path:
    """MODEL's admin socket under a runtime folder (host/locations.py says which)."""
    return base / model / "admin.sock"


class Unreachable(OSError):
    """The socket is absent, refuses, or answered nothing an HTTP client can read."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def lines(self) -> list[dict[str, Any]]:
        """Every JSON object line of the answer (one, or an NDJSON follow)."""
        out = []
        for line in self.body.splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    out.append(value)
        return out


async def exchange(
    sock: Path,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    timeout: float | None,
    on_line: RawSink | None = None,
) -> Answer:
    """One request and its whole answer. ON_LINE: each line of a successful answer as it
    comes (an order's states while it is followed, `logs -f`), the newline kept. OSError
    (FileNotFoundError, ConnectionRefusedError, PermissionError, Unreachable) when no answer
    could be had; TimeoutError past TIMEOUT."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(str(sock), limit=MAX_HEAD)
        try:
            data = json.dumps(body).encode() if body is not None else b""
            head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            if body is not None:
                head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            writer.write(head.encode() + b"\r\n" + data)
            await writer.drain()
            status, headers = await _head(reader)
            chunks = _chunked(reader) if "chunked" in headers.get("transfer-encoding", "") else (
                _sized(reader, int(headers["content-length"]))
                if "content-length" in headers
                else _to_eof(reader)
            )  # fmt: skip
            received, pending = bytearray(), b""
            sink = on_line if status < 400 else None
            async for chunk in chunks:
                received += chunk
                if sink is not None:
                    *done, pending = (pending + chunk).split(b"\n")
                    for line in done:
                        sink(line + b"\n")
            if sink is not None and pending:
                sink(pending)
            return Answer(status, bytes(received))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def json_lines(sink: LineSink) -> RawSink:
    """A line sink that hands SINK each line that is a JSON object."""

    def feed(line: bytes) -> None:
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                sink(value)

    return feed


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise Unreachable(f"no HTTP answer on the admin socket ({exc})") from None
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise Unreachable(f"not an HTTP answer on the admin socket: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _sized(reader: asyncio.StreamReader, size: int) -> AsyncIterator[bytes]:
    if size:
        yield await reader.readexactly(size)


async def _to_eof(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(65536):
        yield chunk


async def _chunked(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """RFC 9112 chunked transfer coding: size line, data, CRLF; a zero size ends it."""
    while True:
        line = await reader.readline()
        try:
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        except ValueError:
            raise Unreachable(f"bad chunk size on the admin socket: {line[:40]!r}") from None
        if size == 0:
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)  # the CRLF after the data


@dataclass(frozen=True)
class Seen:
    """An instance's state as its admin socket last answered it."""

    state: str  # protocol/states.py's value, or DOWN
    reason: str = ""
    diagnosis: dict[str, Any] | None = None
    refused: str | None = None  # a 409: the gpu_group peer that holds the group
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    # Another 4xx: the instance refused the call itself (a bad option, a newer protocol),
    # which the gateway's admin passes on as it is, never as a state.
    rejected: tuple[int, str] | None = None

    @classmethod
    def of(cls, status: int, answers: list[dict[str, Any]]) -> Seen:
        last = answers[-1] if answers else {}
        error = str(last.get("error") or f"HTTP {status}")
        return cls(
            str(last.get("state") or DOWN),
            str(last.get("reason") or ""),
            last.get("diagnosis") if isinstance(last.get("diagnosis"), dict) else None,
            error if status == 409 else None,
            last,
            (status, error) if 400 <= status < 500 and status != 409 else None,
        )


class Instances:
    """The instances of this host, by name, through their admin sockets: what the gateway
    uses them by, and what an instance uses to see its gpu_group peers (runtime/group.py)."""

    def __init__(self, runtime_bases: Path | list[Path]) -> None:
        # Where to look, in order (host/locations.runtime_dirs: the user's, then the system's).
        self.bases = [runtime_bases] if isinstance(runtime_bases, Path) else runtime_bases

    async def request(
        self,
        model: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        timeout: float,
        on_line: LineSink | None = None,
    ) -> Answer | None:
        """The answer, or None when the service is down (no socket, refused, timed out)."""
        sock = next((p for b in self.bases if (p := socket_path(b, model)).exists()), None)
        if sock is None:
            return None
        raw = json_lines(on_line) if on_line is not None else None
        try:
            return await exchange(sock, method, path, body, timeout, raw)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return None

    async def call(
        self,
        model: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        timeout: float,
        on_line: LineSink | None = None,
    ) -> tuple[int, list[dict[str, Any]]] | None:
        """(HTTP status, every JSON line of the answer), or None when the service is down."""
        got = await self.request(model, method, path, body, timeout, on_line)
        return None if got is None else (got.status, got.lines())

    async def text(self, model: str, path: str, timeout: float) -> str | None:
        """A plain-text answer (`/v1/metrics`), or None when down or not 200."""
        got = await self.request(model, "GET", path, None, timeout)
        if got is None or got.status != 200:
            return None
        return got.body.decode("utf-8", errors="replace")

    async def state(self, model: str, timeout: float = 3.0) -> Seen:
        got = await self.call(model, "GET", "/v1/state", None, timeout)
        return Seen(DOWN) if got is None else Seen.of(*got)

    async def activate(
        self, model: str, swap: bool, timeout: float, on_state: LineSink | None = None
    ) -> Seen:
        """Activate and wait until ready (or failed, or refused): the last state seen.
        ON_STATE: each state the instance reports on the way."""
        body = {"wait": True, "timeout": timeout, "swap": swap}
        got = await self.call(model, "POST", "/v1/activate", body, timeout + 10, on_state)
        return Seen(DOWN) if got is None else Seen.of(*got)

    async def deactivate(
        self, model: str, timeout: float, options: dict[str, Any] | None = None
    ) -> Seen:
        """Deactivate (its drain, then stop or sleep as configured) and wait until it ends.
        OPTIONS: the admin call's drain_timeout and stop, as an operator gave them."""
        body = {"wait": True, "timeout": timeout, **(options or {})}
        got = await self.call(model, "POST", "/v1/deactivate", body, timeout + 10)
        return Seen(DOWN) if got is None else Seen.of(*got)
