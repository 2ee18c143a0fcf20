"""gateway/relay.py, where the engine link writes each read to the client itself: the gateway
in one event loop with a raw engine that streams as uvicorn does (one event per HTTP chunk),
and clients that test what a relay must keep. A client that stops reading holds the engine
back, and gets every byte once it reads again. A client that leaves mid-stream closes the
engine's connection. Events split anywhere by the engine arrive whole and in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp import web
from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.gateway.engine_http import EnginePool
from vllm_supervisor.gateway.errors import QuietLog
from vllm_supervisor.gateway.http_server import Runner
from vllm_supervisor.gateway.service import build

from tests.e2e.engine_proc import free_port
from tests.gateway.test_front_properties import Ready
from tests.helpers import write_config


class Engine:
    """Streams EVENTS numbered events of PAD bytes, written PIECE bytes at a time (each
    followed by a drain, so a gateway that stops reading stops it), then [DONE]. `sent`
    counts the bytes written; `ended` is set when its connection is gone."""

    def __init__(self, events: int, pad: int = 0, piece: int = 0, pace: float = 0.0) -> None:
        self.events, self.pad, self.piece, self.pace = events, pad, piece, pace
        self.sent = 0
        self.ended = asyncio.Event()

    def event(self, i: int) -> bytes:
        data = b'data: {"i": %d, "pad": "%s"}\n\n' % (i, b"x" * self.pad)
        return b"%x\r\n%s\r\n" % (len(data), data)

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
            size = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await r.readexactly(size)
            await self.write(w, b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
            for i in range(self.events):
                await self.write(w, self.event(i))
                if self.pace:
                    await asyncio.sleep(self.pace)
            await self.write(w, b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
            await r.read()  # until the gateway closes or reuses it
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.ended.set()
            w.close()

    async def write(self, w: asyncio.StreamWriter, data: bytes) -> None:
        step = self.piece or len(data)
        for at in range(0, len(data), step):
            w.write(data[at : at + step])
            self.sent += len(data[at : at + step])
            await w.drain()


@asynccontextmanager
async def house(tmp: Path, engine: Engine) -> AsyncIterator[str]:
    """The gateway's URL, in this loop, with ENGINE as model m's engine."""
    engine_port, port = free_port(), free_port()
    cfg = write_config(tmp, f"""
        gateway: {{listen: "127.0.0.1:{port}"}}
        models:
          m: {{model: org/m, port: {engine_port}}}
        """)  # fmt: skip
    server = await asyncio.start_server(engine.handle, "127.0.0.1", engine_port)
    engines = EnginePool()
    parts = build(load_registry(cfg), Ready(), engines, QuietLog())
    owner = asyncio.ensure_future(parts.router.run())
    runner = Runner(parts.app, QuietLog(), access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        engines.close()
        owner.cancel()
        server.close()


BODY = json.dumps({"model": "m", "prompt": "x", "stream": True})


def events_of(text: bytes) -> list[bytes]:
    return [e for e in text.split(b"\n\n") if e]


async def test_a_client_that_stops_reading_holds_the_engine_back_and_loses_nothing(
    tmp_path: Path,
) -> None:
    total = 48 << 20  # 48 MiB of events: past every socket buffer on the way, many times
    engine = Engine(events=total // 1024, pad=1000)
    async with (
        house(tmp_path, engine) as url,
        aiohttp.ClientSession() as client,
        client.post(url + "/v1/completions", data=BODY) as resp,
    ):
        assert resp.status == 200
        await asyncio.sleep(1.5)  # reads nothing meanwhile
        held = engine.sent
        await asyncio.sleep(0.5)
        assert engine.sent == held  # the engine is held, not running on
        # socket buffers on the way (a few MiB each, autotuned) plus the relay's 1 MiB
        assert held < total // 2, held
        got = await resp.read()
    events = events_of(got)
    assert events[-1] == b"data: [DONE]"
    assert [json.loads(e[6:])["i"] for e in events[:-1]] == list(range(engine.events))


async def test_a_client_that_leaves_mid_stream_closes_the_engines_connection(
    tmp_path: Path,
) -> None:
    engine = Engine(events=100000, pace=0.01)
    async with house(tmp_path, engine) as url, aiohttp.ClientSession() as client:
        resp = await client.post(url + "/v1/completions", data=BODY)
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b'data: {"i": 0')
        resp.close()  # the client goes away
        await asyncio.wait_for(engine.ended.wait(), 5)  # its request aborted, not run on
        assert engine.sent < 100000 * 40


async def test_events_the_engine_splits_anywhere_arrive_whole_and_in_order(
    tmp_path: Path,
) -> None:
    for piece in (1, 7, 150, 4096):
        engine = Engine(events=300, pad=50, piece=piece)
        async with (
            house(tmp_path / str(piece), engine) as url,
            aiohttp.ClientSession() as client,
            client.post(url + "/v1/completions", data=BODY) as resp,
        ):
            got = await resp.read()
        events = events_of(got)
        assert events[-1] == b"data: [DONE]", piece
        assert [json.loads(e[6:])["i"] for e in events[:-1]] == list(range(300)), piece


async def test_an_http_10_client_gets_the_stream_unchunked_to_the_connections_end(
    tmp_path: Path,
) -> None:
    """No chunks for HTTP/1.0: aiohttp writes the whole stream, and its end is the end of
    the connection (RFC 9112 section 6.3)."""
    engine = Engine(events=200, pad=20)
    async with house(tmp_path, engine) as url:
        port = int(url.rsplit(":", 1)[1])
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /v1/completions HTTP/1.0\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY.encode()))  # fmt: skip
        got = await asyncio.wait_for(r.read(), 10)  # to EOF
        w.close()
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower()
    events = events_of(body)
    assert events[-1] == b"data: [DONE]"
    assert [json.loads(e[6:])["i"] for e in events[:-1]] == list(range(200))
