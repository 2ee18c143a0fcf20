"""One keep-alive connection to an engine, and the answer read on it (gateway/engine_http.py
keeps them in a pool): an asyncio Protocol that decodes each socket read at once (issue 23).

aiohttp's client spent 38% of the gateway's CPU on a burst stream in per-event bookkeeping
(one `feed_data`, one `begin/end_http_chunk_receiving`, one `_read_nowait_chunk` and one
`resume_reading` per HTTP chunk; vLLM's uvicorn writes every event as its own chunk). Here
the chunked framing of everything a read brought is stripped in one loop and the payload
handed on as one piece: kept for `take()`, or written on by the relay's sink
(gateway/relay.py) from `data_received` itself.

The answer is HTTP/1.1 from the gateway's own engines (uvicorn). What is guarded against is
an engine that dies or sends nonsense: a head over HEAD_MAX, a chunk size that is not hex,
a connection that ends mid-answer. Each is an EngineGone, with what came before it handed
on first.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, ItemsView
from typing import cast

HEAD_MAX = 64 * 1024  # bytes of status line and headers
LINE_MAX = 1024  # a chunk-size line (with extensions) or a trailer line
HIGH = 1 << 20  # bytes decoded and not yet taken: reading stops until they are (backpressure)
NO_BODY = (204, 304)
# A chunk-size line: hex digits (16 at most: no size past 2**64), optional extensions.
_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")


class Headers:
    """A response's header fields by lower-case name (names are case-insensitive, RFC 9110
    section 5.1); a field that comes twice is one, its values joined by ", " (5.3)."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        key = name.lower()
        had = self.fields.get(key)
        self.fields[key] = value if had is None else f"{had}, {value}"

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name.lower(), default)

    def items(self) -> ItemsView[str, str]:
        return self.fields.items()


class EngineGone(Exception):
    """The engine's connection ended, or it sent what is not HTTP, before its answer was
    whole."""


class Link(asyncio.Protocol):
    """One connection and the answer being read on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.head: asyncio.Future[tuple[int, str, Headers]] | None = None
        self.waiter: asyncio.Future[None] | None = None
        # Set while the relay lets the link write each read itself (gateway/relay.py): it
        # takes a decoded piece and says whether reading may go on.
        self.sink: Callable[[bytes], bool] | None = None
        self.used_at = 0.0
        self._reset(head_only=False)

    def _reset(self, head_only: bool) -> None:
        self.raw_head = bytearray()
        self.head_done = False
        self.head_only = head_only  # HEAD: no body, whatever the headers say
        self.got_any = False  # a byte of this answer came
        self.pieces: list[bytes] = []
        self.size = 0  # bytes in pieces
        self.paused = False
        self.done = False  # the body is whole
        self.error: EngineGone | None = None
        self.keep_alive = False
        self.mode = ""  # "none", "length", "chunked", "close"
        self.length: int | None = None  # Content-Length, as the head said
        self.left = 0  # bytes left: of the body ("length") or of the chunk ("chunked")
        self.carry = b""  # a chunked read's unfinished line, or half of a chunk's CRLF
        self.crlf = False  # a chunk's data ended: its CRLF comes next
        self.trailers = False  # the last chunk came: trailer lines until an empty one

    # ---- the request -----------------------------------------------------------------------
    def send(self, parts: list[bytes], head_only: bool) -> None:
        assert self.transport is not None
        self._reset(head_only)
        self.head = asyncio.get_running_loop().create_future()
        self.transport.writelines(parts)

    # ---- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a TCP transport (uvloop's is not an asyncio.Transport subclass, but acts as one)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.head is None:
            self._fail("the engine sent bytes that answer no request")  # idle in the pool
            return
        if self.done or self.error is not None:
            self.close()  # bytes past the answer's end: this connection's framing is lost
            return
        self.got_any = True
        if self.head_done:
            self._body(data)
            return
        self.raw_head += data
        end = self.raw_head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.raw_head) > HEAD_MAX:
                self._fail(f"the engine's response head is over {HEAD_MAX} bytes")
            return
        head, rest = bytes(self.raw_head[:end]), bytes(self.raw_head[end + 4 :])
        self.raw_head = bytearray()
        try:
            status, reason, headers = self._parse_head(head)
        except ValueError as exc:
            self._fail(f"the engine's response head is not HTTP/1.1: {exc}")
            return
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self.raw_head += rest
            if rest:
                self.data_received(b"")
            return
        self.head_done = True
        if not self.head.done():
            self.head.set_result((status, reason, headers))
        if (self.mode == "length" and self.left == 0) or self.mode == "none":
            self._finish(rest)
        elif rest:
            self._body(rest)

    def _parse_head(self, head: bytes) -> tuple[int, str, Headers]:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise ValueError(f"status line {lines[0][:80]!r}")
        headers = Headers()
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise ValueError(f"header line {line[:80]!r}")
            headers.add(name, value.strip())
        status = int(code)
        connection = headers.get("Connection", "").lower()
        self.keep_alive = version == "HTTP/1.1" and "close" not in connection
        coding = headers.get("Transfer-Encoding", "").lower()
        length = headers.get("Content-Length")
        if self.head_only or status in NO_BODY or 100 <= status < 200:
            self.mode, self.length = "none", 0
        elif coding:
            if coding.rsplit(",", 1)[-1].strip() != "chunked":
                raise ValueError(f"transfer-encoding {coding[:40]!r}")
            self.mode = "chunked"
        elif length:
            if not (length.isascii() and length.isdigit()) or len(length) > 18:  # "5, 6"
                raise ValueError(f"content-length {length[:40]!r}")
            self.mode, self.left = "length", int(length)
            self.length = self.left
        else:
            self.mode, self.keep_alive = "close", False  # the body ends with the connection
        return status, reason, headers

    def _body(self, data: bytes) -> None:
        if self.mode == "chunked":
            self._chunked(data)
        elif self.mode == "length":
            if len(data) >= self.left:
                piece, rest = data[: self.left], data[self.left :]
                self.left = 0
                self._push(piece)
                self._finish(rest)
            else:
                self.left -= len(data)
                self._push(data)
        else:  # "close"
            self._push(data)

    def _chunked(self, data: bytes) -> None:
        """Strip the chunked framing (RFC 9112 section 7.1) of one read: one pass, one piece
        handed on, however many chunks the read holds. A whole chunk in the read (uvicorn
        writes an event as one) costs one regex match and one slice."""
        buf = self.carry + data if self.carry else data
        self.carry = b""
        view, out, i, n = memoryview(buf), [], 0, len(buf)
        size_line = _SIZE.match
        while i < n:
            if self.left:  # inside a chunk's data, begun in an earlier read
                take = min(self.left, n - i)
                out.append(view[i : i + take])
                i += take
                self.left -= take
                self.crlf = self.left == 0
                continue
            if self.crlf:
                if n - i < 2:
                    self.carry = buf[i:]
                    break
                if buf[i : i + 2] != b"\r\n":
                    self._push(b"".join(out))
                    self._fail("a chunk's data does not end with CRLF")
                    return
                i, self.crlf = i + 2, False
                continue
            m = None if self.trailers else size_line(buf, i)
            if m is None:
                j = buf.find(b"\r\n", i, i + LINE_MAX)
                if j < 0 and n - i < LINE_MAX:
                    self.carry = buf[i:]  # the line goes on in the next read
                    break
                self._push(b"".join(out))
                if not self.trailers:
                    line = bytes(buf[i : i + 40])
                    self._fail(f"chunk size line {line!r} is not hexadecimal and CRLF")
                    return
                if j < 0:
                    self._fail(f"a trailer line is over {LINE_MAX} bytes")
                    return
                if j == i:  # the empty line after the last chunk: the answer is whole
                    self._finish(buf[j + 2 :])
                    return
                i, out = j + 2, []  # a trailer field: nothing the gateway relays
                continue
            size, start = int(m.group(1), 16), m.end()
            if size == 0:
                self.trailers, i = True, start
                continue
            end = start + size
            if end + 2 <= n:  # the whole chunk is here
                if buf[end : end + 2] != b"\r\n":
                    self._push(b"".join(out))
                    self._fail("a chunk's data does not end with CRLF")
                    return
                out.append(view[start:end])
                i = end + 2
                continue
            self.left, i = size, start  # the rest of it comes in the next reads
        self._push(b"".join(out))

    def _push(self, piece: bytes) -> None:
        if not piece:
            return
        if self.sink is not None:
            if not self.sink(piece) and not self.paused:
                self._pause()  # the client is behind: the relay waits for it, then resume()
            return
        self.pieces.append(piece)
        self.size += len(piece)
        if self.size > HIGH and not self.paused:
            self._pause()  # the client is slower than the engine
        self._wake()

    def _pause(self) -> None:
        self.paused = True
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._wake()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def _finish(self, rest: bytes) -> None:
        self.done = True
        if rest:  # bytes past the answer's end: this connection's framing is lost
            self.keep_alive = False
        self._wake()

    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = EngineGone(why)
        self.keep_alive = False
        if self.head is not None and not self.head.done():
            self.head.set_exception(self.error)
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def eof_received(self) -> bool | None:
        return False  # close: the engine sends nothing more on it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_done and self.mode == "close" and not self.done and self.error is None:
            self._finish(b"")  # a body without length ends with its connection
        elif self.head is not None and not self.done:
            why = "the engine closed the connection before its answer was whole"
            self._fail(f"{why} ({exc})" if exc else why)
        self._wake()

    # ---- what the response reads --------------------------------------------------------------
    async def take(self) -> bytes | None:
        """What came since the last take, joined; None at the body's end."""
        while True:
            if self.pieces:
                data = self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)
                self.pieces, self.size = [], 0
                self.resume()
                return data
            if self.error is not None:
                raise self.error
            if self.done:
                return None
            await self._next()

    def attach(self, sink: Callable[[bytes], bool] | None) -> None:
        """Hand every read to SINK as it is decoded (None: keep them for take()). What was
        kept so far goes to it at once."""
        self.sink = sink
        if sink is not None and self.pieces:
            kept, self.pieces, self.size = self.pieces, [], 0
            self._push(b"".join(kept))

    async def follow(self) -> bool:
        """While a sink takes the reads: True at the body's end, False once reading paused
        for the sink (resume() when it may go on); EngineGone when the engine ended it
        early."""
        while True:
            if self.error is not None:
                raise self.error
            if self.done:
                return True
            if self.paused:
                return False
            await self._next()

    async def _next(self) -> None:
        """Until the next read, the end, an error or a pause (_wake)."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def reusable(self) -> bool:
        return self.done and self.keep_alive and not self.closed and not self.pieces

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None and not self.closed:
            self.transport.close()
