"""gateway/engine_http.py and engine_link.py, the gateway's client for its engines, against
what an engine may send: answers in any number of reads split anywhere, chunk extensions
and trailers, an engine that dies mid-answer, framing that is not HTTP, a connection closed
while idle, a client slower than the engine. Real sockets where the connection's life
matters; the decoder alone, fed by hand, where only the bytes do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vllm_supervisor.gateway import engine_http, engine_link
from vllm_supervisor.gateway.engine_http import EngineGone, EnginePool
from vllm_supervisor.gateway.engine_link import Link


class Transport:
    """What Link asks of its transport, recorded."""

    def __init__(self) -> None:
        self.paused = self.closed = False
        self.written: list[bytes] = []

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def writelines(self, parts: list[bytes]) -> None:
        self.written.extend(parts)


def fed(reads: list[bytes]) -> tuple[Link, Transport]:
    """A Link that sent a request and got READS, one data_received each."""
    link, t = Link(), Transport()
    link.connection_made(t)  # type: ignore[arg-type]
    link.send([b"POST / HTTP/1.1\r\n\r\n"], head_only=False)
    for data in reads:
        link.data_received(data)
    return link, t


def body_of(link: Link) -> bytes:
    out = b"".join(link.pieces)
    link.pieces = []
    return out


def chunked(payloads: list[bytes], ext: str = "", trailers: str = "") -> bytes:
    framed = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext.encode(), p) for p in payloads)
    return framed + b"0\r\n" + trailers.encode() + b"\r\n"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


def in_loop(fn: Callable[[], None]) -> None:
    async def run() -> None:
        fn()

    asyncio.run(run())


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=300), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=30),
    ext=st.sampled_from(["", ";x=1", ' ;name="v"']),
    trailers=st.sampled_from(["", "x-trailer: 1\r\n", "a: 1\r\nb: 2\r\n"]),
)
def test_a_chunked_answer_split_anywhere_decodes_to_its_payload(
    payloads: list[bytes], cuts: list[int], ext: str, trailers: str
) -> None:
    def check() -> None:
        link, t = fed(split(HEAD + chunked(payloads, ext, trailers), cuts))
        assert link.error is None
        assert link.done and link.keep_alive and not t.closed
        assert body_of(link) == b"".join(payloads)

    in_loop(check)


def test_every_event_of_a_read_goes_on_as_one_piece() -> None:
    def check() -> None:
        events = [b"data: %d\n\n" % i for i in range(500)]
        link, _ = fed([HEAD + chunked(events)[:-5]])  # all but the end
        assert len(link.pieces) == 1 and link.pieces[0] == b"".join(events)
        assert not link.done

    in_loop(check)


@pytest.mark.parametrize(
    ("reads", "why"),
    [
        ([b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nab\r\n"], "hexadecimal"),
        ([b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-1\r\n"], "hexadecimal"),
        ([b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0x2\r\nab\r\n"], "hexadecimal"),
        ([HEAD + b"11111111111111111\r\n"], "hexadecimal"),  # 2**68: past any size
        ([HEAD + b"2\r\nabcd\r\n"], "CRLF"),  # more data than its size said
        ([HEAD + b"1" * 5000], "hexadecimal"),  # a size line that never ends
        ([HEAD + b"0\r\n" + b"x" * 5000], "trailer line"),
        ([b"SPDY/3 200 OK\r\n\r\n"], "not HTTP/1.1"),
        ([b"HTTP/1.1 2000 OK\r\n\r\n"], "not HTTP/1.1"),
        ([b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"], "not HTTP/1.1"),
        ([b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"], "not HTTP"),
        ([b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"], "not HTTP/1.1"),
        ([b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"], "not HTTP/1.1"),
        ([b"HTTP/1.1 200 OK\r\nx: " + b"a" * (70 * 1024)], "over 65536"),
    ],
)
def test_framing_that_is_not_http_ends_the_answer_with_a_reason(
    reads: list[bytes], why: str
) -> None:
    def check() -> None:
        link, t = fed(reads)
        assert link.error is not None and why in str(link.error), link.error
        assert t.closed and not link.reusable()

    in_loop(check)


def test_a_whole_answer_with_bytes_after_it_is_not_reused() -> None:
    def check() -> None:
        link, _ = fed([b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA"])
        assert link.done and body_of(link) == b"ok"
        assert not link.reusable()

    in_loop(check)


def test_an_interim_100_continue_is_skipped() -> None:
    def check() -> None:
        link, _ = fed([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n",
                       b"content-length: 2\r\n\r\nok"])  # fmt: skip
        assert link.head is not None and link.head.result()[0] == 201
        assert body_of(link) == b"ok" and link.done

    in_loop(check)


def test_a_client_slower_than_the_engine_pauses_its_reading_until_it_takes() -> None:
    async def check() -> None:
        piece = b"x" * 4096
        link, t = fed([HEAD])
        for _ in range(engine_link.HIGH // 4096 + 2):
            link.data_received(chunked([piece])[:-5])
        assert t.paused
        assert len(await link.take() or b"") > engine_link.HIGH
        assert not t.paused

    asyncio.run(check())


# ---- over real sockets ---------------------------------------------------------------------
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def served(
    script: Script, pool: EnginePool | None = None
) -> AsyncIterator[tuple[str, list[int], EnginePool]]:
    """(base URL, connections made, pool): a server running SCRIPT per connection, and a
    pool to reach it; both closed at the end."""
    conns: list[int] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conns.append(1)
        try:
            await script(r, w)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = pool or EnginePool()
    try:
        yield f"http://127.0.0.1:{port}", conns, pool
    finally:
        pool.close()
        server.close()


async def read_request(r: asyncio.StreamReader) -> bytes:
    head = await r.readuntil(b"\r\n\r\n")
    size = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            size = int(line.split(b":")[1])
    return head + await r.readexactly(size)


async def test_a_connection_is_reused_only_after_a_whole_answer() -> None:
    seen: list[bytes] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(r))
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await w.drain()

    async with served(script) as (base, conns, pool):
        for _ in range(3):
            async with await pool.request(base, "POST", "/v1/x?a=1", b"{}", {}) as resp:
                assert (resp.status, resp.content_length, await resp.read()) == (200, 2, b"ok")
        assert len(conns) == 1 and pool.opened == 1
        assert seen[0].startswith(b"POST /v1/x?a=1 HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"Content-Length: 2\r\n\r\n{}" in seen[0]
        # an answer left unread closes its connection: the engine aborts its request
        resp = await pool.request(base, "POST", "/", b"", {})
        resp.release()
        async with await pool.request(base, "POST", "/", b"", {}) as resp:
            await resp.read()
        assert len(conns) == 2


async def test_an_idle_connection_older_than_the_engines_keep_alive_is_not_reused() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")

    now = [0.0]
    async with served(script, EnginePool(clock=lambda: now[0])) as (base, _, pool):
        for gap in (0.0, engine_http.IDLE_FOR + 0.1):
            now[0] += gap
            async with await pool.request(base, "POST", "/", b"", {}) as resp:
                await resp.read()
        assert pool.opened == 2


async def test_a_reused_connection_the_engine_closed_unanswered_is_tried_once_more() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await w.drain()
        await read_request(r)  # the next request on it: closed without a byte (its keep-alive
        # ran out as the request came)

    async with served(script) as (base, conns, pool):
        for _ in range(2):
            async with await pool.request(base, "POST", "/", b"", {}) as resp:
                assert resp.status == 200
        assert len(conns) == 2


async def test_a_new_connection_the_engine_closes_unanswered_is_an_error() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)

    async with served(script) as (base, conns, pool):
        with pytest.raises(EngineGone, match="before its answer was whole"):
            await pool.request(base, "POST", "/", b"", {})
        assert len(conns) == 1  # no second try: this one may have taken the request


async def test_an_engine_that_dies_mid_stream_gives_what_came_then_engine_gone() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(HEAD + b"9\r\ndata: 1\n\n\r\n5\r\ndat")  # dies inside the second event
        await w.drain()

    async with served(script) as (base, _, pool):
        resp = await pool.request(base, "POST", "/", b"", {})
        assert resp.content_length is None
        got = []
        with pytest.raises(EngineGone):
            async for piece in resp.chunks():
                got.append(piece)
        assert b"".join(got) == b"data: 1\n\ndat"
        resp.release()
        assert not pool.idle.get(pool.where(base)[:2])


async def test_a_body_without_length_ends_with_its_connection_and_is_whole() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of ")
        await w.drain()
        w.write(b"it")

    async with (
        served(script) as (base, _, pool),
        await pool.request(base, "POST", "/", b"", {}) as resp,
    ):
        assert await resp.read() == b"all of it"
        assert resp.headers.get("Content-Type") == "text/plain"


async def test_a_cancelled_wait_closes_the_connection_so_the_engine_aborts() -> None:
    closed = asyncio.Event()

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        await r.read()  # EOF: the gateway closed it
        closed.set()

    async with served(script) as (base, _, pool):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await pool.request(base, "POST", "/", b"", {})
        await asyncio.wait_for(closed.wait(), 5)


async def test_headers_are_never_split_and_a_target_with_spaces_is_refused() -> None:
    seen: list[bytes] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(r))
            w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await w.drain()

    async with served(script) as (base, _, pool):
        headers = {"User-Agent": "x\r\nX-Injected: 1", "Accept": "text/event-stream"}
        async with await pool.request(base, "POST", "/", b"", headers) as resp:
            assert resp.status == 204 and await resp.read() == b""
        assert b"X-Injected" not in seen[0] and b"Accept: text/event-stream" in seen[0]
        async with await pool.request(base, "POST", "/v1/x?q=é", b"", {}) as resp:
            await resp.read()  # a query of any script goes as the client sent it (UTF-8)
        assert seen[1].startswith("POST /v1/x?q=é HTTP/1.1".encode())
        for target in ("/a b", "/a\r\nX: 1", "a", "/\x7f"):
            with pytest.raises(ValueError, match="not a request target"):
                await pool.request(base, "POST", target, b"", {})
        with pytest.raises(ValueError, match="not an http:// base"):
            await pool.request("https://127.0.0.1:1", "POST", "/", b"", {})


async def test_an_unreachable_engine_is_an_os_error() -> None:
    async with served(read_request) as (base, _, _):  # type: ignore[arg-type]
        pass  # closed: nothing listens on its port now
    with pytest.raises(OSError):
        await EnginePool().request(base, "POST", "/", b"", {})


async def test_bytes_from_an_idle_connection_close_it() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"HTTP/1.1 200 OK\r\n")  # answers nothing it was asked
        await w.drain()
        await r.read()

    async with served(script) as (base, _, pool):
        async with await pool.request(base, "POST", "/", b"", {}) as resp:
            await resp.read()
        await asyncio.sleep(0.3)
        assert pool._take(pool.where(base)[:2]) is None
