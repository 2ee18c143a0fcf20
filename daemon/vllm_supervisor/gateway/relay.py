"""An engine's streamed answer relayed to the client read by read, at a proxy's cost (issue
23).

The first bytes go through aiohttp's response writer, which sends the response's headers
with them. After that, when the client's answer is chunked (HTTP/1.1), the engine link writes
each read itself, the moment it is decoded: one `writelines` of one HTTP chunk on the
client's transport, called from the link's `data_received`. There is no future, no task
switch and no second loop pass per read. With hundreds of paced streams each read holds one
event, so that per-read cost is the gateway's cost (scripts/bench/relay.py, "paced
streams"). aiohttp's writer still writes what the relay writes itself: an error event, the
held tail, and the closing chunk (`write_eof`). Its chunked framing and ours are the same
bytes (RFC 9112 section 7.1), and neither buffers, so their writes stay in order.

Kept from the pull relay: events go out whole (Whole; an error event never follows half of
one), the `[DONE]` check, backpressure, and the client's disconnect. Backpressure: past
HIGH bytes waiting in the client's transport, the link stops reading the engine. The relay
task then waits for the buffer to fall below LOW, polling every DRAIN_POLL s (a slow
client's stream only), and reading resumes. A client that went away closes its transport.
The link stops, and aiohttp cancels the handler.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from vllm_supervisor.gateway.engine_http import EngineResponse

# vLLM ends every chat and completions stream with this event, after an error event too
# (docs/vllm-behaviour.md): a stream of these paths that ends without it was cut short.
DONE = b"data: [DONE]"
HIGH = 1 << 20  # bytes waiting for the client: stop reading the engine ...
LOW = 1 << 18  # ... until they are below this
DRAIN_POLL = 0.005


class Whole:
    """Server-sent events relayed whole: what a read returns up to the last event's blank
    line goes out, the rest waits for the next read. An error event written after half an
    event merged with it: a request_timeout that cut an n=32 stream mid-event left the
    client a line it could not parse (seen in CI). One rfind per read, no copy when a read
    ends on an event's end (vLLM writes whole events). Bytes that are not SSE pass as they
    come; a run of 1 MiB with no blank line goes out anyway."""

    LIMIT = 1 << 20

    def __init__(self, sse: bool) -> None:
        self.sse, self.pending = sse, b""

    def feed(self, chunk: bytes) -> bytes:
        if not self.sse:
            return chunk
        data = self.pending + chunk if self.pending else chunk
        lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
        end = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
        if end == 0 and len(data) < self.LIMIT:
            self.pending = data
            return b""
        if end == 0:
            end = len(data)
        self.pending = data[end:]
        return data if end == len(data) else data[:end]


class Copy:
    """What of each read goes to the client (Whole), and whether `[DONE]` went by (when
    WATCH: a 200 chat or completions stream)."""

    def __init__(self, sse: bool, watch: bool) -> None:
        self.cut, self.tail, self.done = Whole(sse), b"", not watch

    def feed(self, chunk: bytes) -> bytes:
        data = self.cut.feed(chunk)
        if data and not self.done:  # a few bytes copied per write, whatever its size
            self.tail = (self.tail + data[-64:])[-64:]
            self.done = DONE in self.tail
        return data


async def stream(
    request: web.Request,
    out: web.StreamResponse,
    upstream: EngineResponse,
    copy: Copy,
    head: bytes = b"",
) -> None:
    """UPSTREAM's body to OUT (prepared), HEAD first, until the body's end. EngineGone when
    the engine ends it early (what came before it was relayed)."""
    chunk = head or await upstream.take()
    while chunk is not None:  # the first bytes, through aiohttp: the headers go with them
        data = copy.feed(chunk)
        if data:
            await out.write(data)
            break
        chunk = await upstream.take()
    else:
        return
    transport = request.transport
    if transport is None or out.headers.get("Transfer-Encoding", "").lower() != "chunked":
        # An HTTP/1.0 client (no chunks: the body ends with the connection): aiohttp writes.
        while (chunk := await upstream.take()) is not None:
            if data := copy.feed(chunk):
                await out.write(data)
        return

    def write(piece: bytes) -> bool:
        """One read, decoded, to the client as one chunk; False: stop reading for now."""
        if transport.is_closing():
            return False
        data = copy.feed(piece)
        if data:
            transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        return transport.get_write_buffer_size() <= HIGH

    link = upstream.link
    link.attach(write)
    try:
        while not await link.follow():  # paused: the client is behind, or gone
            while transport.get_write_buffer_size() > LOW and not transport.is_closing():
                await asyncio.sleep(DRAIN_POLL)
            if transport.is_closing():
                raise ConnectionResetError("the client went away")
            link.resume()
    finally:
        link.attach(None)
