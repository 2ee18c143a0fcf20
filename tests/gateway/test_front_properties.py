"""Property-based: the gateway's request handling against what hypothesis sends (issue 18).

The real gateway app (gateway/service.build: router, front, proxy) serves on a real port in
a thread of its own, in front of a recording stand-in engine; instances are always ready.
Requests go out as raw bytes on a socket, so nothing is tidied on the way:
- any path: never a 500, and only the table's routes (gateway/routes.py) reach the engine,
  under their own name;
- any body bytes: a 4xx in OpenAI's shape, or forwarded;
- a body split anywhere, with Content-Length or chunked: the engine gets every byte.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import string
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.gateway import routes
from vllm_supervisor.gateway.engine_http import EnginePool
from vllm_supervisor.gateway.errors import QuietLog
from vllm_supervisor.gateway.http_server import Runner
from vllm_supervisor.gateway.service import build
from vllm_supervisor.protocol.admin import Seen

from tests.e2e.engine_proc import free_port
from tests.e2e.test_front_door import status_and_json
from tests.helpers import write_config


class Ready:
    """Instances that are always ready."""

    async def state(self, model: str, timeout: float = 3.0) -> Seen:
        return Seen("ready")

    async def activate(self, model: str, swap: bool, timeout: float, on_state: Any = None) -> Seen:
        return Seen("ready")

    async def deactivate(self, model: str, timeout: float, options: Any = None) -> Seen:
        return Seen("inactive")

    async def call(self, *a: Any, **kw: Any) -> None:
        return None

    async def text(self, model: str, path: str, timeout: float) -> str | None:
        return None


class Stand:
    """The gateway and a stand-in engine that records (method, path, body) and answers a
    small JSON completion, in one event loop on a thread."""

    def __init__(self, tmp: Path) -> None:
        self.engine_port, self.port = free_port(), free_port()
        self.seen: list[tuple[str, str, bytes]] = []
        cfg = write_config(
            tmp,
            f"""
            gateway: {{listen: "127.0.0.1:{self.port}", max_body: 65536}}
            models:
              m: {{model: org/m, port: {self.engine_port}, served_model_name: m-served,
                   aliases: [m-alias]}}
            """,
        )
        self.reg = load_registry(cfg)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), self.loop).result(30)

    async def engine(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path_qs, await request.read()))
        return web.json_response({"id": "x", "object": "text_completion", "choices": []})

    async def start(self) -> None:
        eng = web.Application()
        eng.router.add_route("*", "/{tail:.*}", self.engine)
        self.eng_runner = web.AppRunner(eng)
        await self.eng_runner.setup()
        await web.TCPSite(self.eng_runner, "127.0.0.1", self.engine_port).start()
        self.engines = EnginePool()
        parts = build(self.reg, Ready(), self.engines, QuietLog())
        self.owner = asyncio.ensure_future(parts.router.run())
        self.runner = Runner(parts.app, QuietLog(), access_log=None, handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.eng_runner.cleanup()
        self.engines.close()
        self.owner.cancel()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def send(self, head: bytes, pieces: list[bytes] = (), pause: float = 0.0) -> bytes:  # type: ignore[assignment]
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(head)
            for piece in pieces:
                if pause:
                    time.sleep(pause)
                s.sendall(piece)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out


@pytest.fixture(scope="module")
def stand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    s = Stand(tmp_path_factory.mktemp("stand"))
    yield s
    s.close()


FEW = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SEGMENTS = st.sampled_from(
    [
        "v1", "chat", "completions", "..", ".", "", "%2e%2e", "%2E", "%2f", "sleep",
        "collective_rpc", "wake_up", "admin", "state", "models", "tokenize", "%73leep",
        "responses", "render", "inference", "generate", "health", "metrics", "%00", "x",
    ]
)  # fmt: skip
PATHS = st.one_of(
    st.lists(SEGMENTS, max_size=7).map(lambda segs: "/" + "/".join(segs)),
    st.text(string.ascii_letters + string.digits + "/.%-_~", max_size=40).map(lambda t: "/" + t),
)


def head(method: str, path: str, length: int | None, extra: str = "") -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{size}{extra}Connection: close\r\n\r\n").encode()  # fmt: skip


@FEW
@given(path=PATHS, query=st.sampled_from(["", "?level=1", "?a=%2e%2e"]))
def test_any_path_gets_no_500_and_only_table_routes_reach_the_engine(
    stand: Stand, path: str, query: str
) -> None:
    body = json.dumps({"model": "m-served", "prompt": "x", "method": "sleep"}).encode()
    before = len(stand.seen)
    status, data = status_and_json(stand.send(head("POST", path + query, len(body)), [body]))
    assert status != 500 and status < 600
    reached = stand.seen[before:]
    if status == 200 and "error" not in data:
        assert routes.normalise(path) in routes.ROUTES or routes.normalise(path) in (
            "/models/load", "/health", "/metrics", "/v1/models", "/models",
        ) or routes.normalise(path).startswith("/v1/models/")  # fmt: skip
    else:
        assert data["error"]["type"] and data["error"]["message"], data
    for method, got_path, _ in reached:
        assert method == "POST" and got_path.split("?")[0] in routes.ROUTES, got_path


@FEW
@given(raw=st.binary(max_size=2048))
def test_any_body_gets_a_4xx_in_openais_shape_or_is_forwarded(stand: Stand, raw: bytes) -> None:
    status, data = status_and_json(stand.send(head("POST", "/v1/completions", len(raw)), [raw]))
    assert status in (200, 400, 404, 413), (status, data)
    if status != 200:
        assert set(data["error"]) == {"message", "type", "param", "code"}, data


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@FEW
@given(
    prompt=st.text(max_size=3000),
    cuts=st.lists(st.integers(min_value=0), max_size=6),
    chunked=st.booleans(),
)
def test_a_body_split_anywhere_reaches_the_engine_whole(
    stand: Stand, prompt: str, cuts: list[int], chunked: bool
) -> None:
    body = json.dumps({"model": "m-served", "prompt": prompt}).encode()
    pieces = split(body, cuts)
    if chunked:
        pieces = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces] + [b"0\r\n\r\n"]
        first = head("POST", "/v1/completions", None, "Transfer-Encoding: chunked\r\n")
    else:
        first = head("POST", "/v1/completions", len(body))
    before = len(stand.seen)
    status, data = status_and_json(stand.send(first, pieces, pause=0.002))
    assert status == 200, data
    assert stand.seen[before:] == [("POST", "/v1/completions", body)]


@FEW
@given(prompt=st.text(max_size=500), cuts=st.lists(st.integers(min_value=0), max_size=4))
def test_an_alias_reaches_the_engine_as_the_served_name_with_the_rest_unchanged(
    stand: Stand, prompt: str, cuts: list[int]
) -> None:
    sent = {"model": "m-alias", "prompt": prompt, "max_tokens": 3}
    body = json.dumps(sent).encode()
    before = len(stand.seen)
    status, _ = status_and_json(stand.send(head("POST", "/v1/completions", len(body)),
                                           split(body, cuts)))  # fmt: skip
    assert status == 200
    [(_, _, got)] = stand.seen[before:]
    assert json.loads(got) == {**sent, "model": "m-served"}


@settings(max_examples=300, deadline=None)
@given(path=PATHS)
def test_normalise_leaves_no_dot_or_empty_segment(path: str) -> None:
    """Escapes are decoded once (a double-encoded `%252e` stays `%2e`, a name no route
    has); the table's own path is what is forwarded, never this one."""
    once = routes.normalise(path)
    assert once.startswith("/") and "?" not in once
    assert once == "/" or all(seg not in ("", ".", "..") for seg in once.split("/")[1:])
    if "%" not in path:
        assert routes.normalise(once) == once


def test_an_audio_upload_is_routed_by_its_form_field_with_the_openai_client(
    stand: Stand,
) -> None:
    """Multipart routes find their model in the form (issue 18, item 2); an alias there is
    swapped for the served name, and the file's bytes reach the engine untouched."""
    import openai

    audio = os.urandom(3000)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{stand.port}/v1", api_key="x",
                           max_retries=0)  # fmt: skip
    before = len(stand.seen)
    client.audio.transcriptions.create(model="m-alias", file=("a.wav", audio, "audio/wav"))
    [(method, path, raw)] = stand.seen[before:]
    assert (method, path) == ("POST", "/v1/audio/transcriptions")
    assert b'name="model"\r\n\r\nm-served\r\n' in raw and audio in raw
    # No model field: a 400 that says so; not a form at all: a 400 that says what it takes.
    status, data = status_and_json(stand.send(head("POST", "/v1/audio/translations", 2), [b"{}"]))
    assert status == 400 and "multipart/form-data" in data["error"]["message"]
