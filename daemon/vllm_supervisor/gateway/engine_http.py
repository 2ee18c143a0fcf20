"""The gateway's HTTP/1.1 client for its engines: a pool of keep-alive loopback connections
(gateway/engine_link.py reads each answer), and the answer as the proxy uses it (issue 23).

aiohttp's client cost about a quarter of a plain request in building and sending it, and
decoded a stream's chunks one by one (docs/performance.md, "The gateway's relay against
nginx"). This is a client for the gateway's own engines, not a general one: the request is
written here in one write (no redirects, no cookies, no compression: `Accept-Encoding` is
not forwarded), and its target and headers can never split it in two.

Reuse: a connection goes back to the pool only when its answer was read whole and neither
side said `Connection: close`. One idle for IDLE_FOR or more is closed, not reused: uvicorn
closes an idle keep-alive connection after 5 s (vLLM's VLLM_HTTP_TIMEOUT_KEEP_ALIVE), and a
request written as it closes would be lost. Should that race still happen, a reused
connection that ends before a byte of its answer came is tried once more on a new one: the
engine closed it idle, so it never took the request (docs/design.md, "The host gateway").
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from vllm_supervisor.gateway.engine_link import EngineGone, Headers, Link

__all__ = ["EngineGone", "EnginePool", "EngineResponse"]

IDLE_FOR = 2.0  # seconds: an idle connection older than this is closed, not reused
CONNECT_TIMEOUT = 10.0
# A request target as the gateway forwards it: a path, and its query, without space or CTL.
_TARGET = re.compile(r"/[^\x00-\x20\x7f]*")


class EngineResponse:
    """An engine's answer, its head read and its body not yet: aiohttp's ClientResponse as
    far as the gateway used it (status, reason, headers, read, json, release, async with),
    and `chunks()` for the body piece by piece."""

    def __init__(
        self,
        pool: EnginePool,
        key: tuple[str, int],
        link: Link,
        head: tuple[int, str, Headers],
    ) -> None:
        self.pool, self.key, self.link = pool, key, link
        self.status, self.reason, self.headers = head
        self.content_length = link.length
        self.released = False
        # What came since the last take (one piece per socket read, or more joined); None at
        # the body's end; EngineGone when the engine ended it early. The link's own method:
        # no coroutine between the relay and the socket.
        self.take: Callable[[], Awaitable[bytes | None]] = link.take

    async def chunks(self) -> AsyncIterator[bytes]:
        while (data := await self.link.take()) is not None:
            yield data

    async def read(self) -> bytes:
        # take() itself, not chunks(): no async generator on every plain answer's path
        pieces = []
        while (data := await self.link.take()) is not None:
            pieces.append(data)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def json(self) -> Any:
        return json.loads(await self.read())

    def release(self) -> None:
        """Done with it: the connection back to the pool when the answer was read whole,
        else closed (the engine aborts a request whose connection closes)."""
        if self.released:
            return
        self.released = True
        if self.link.reusable():
            self.pool.give_back(self.key, self.link)
        else:
            self.link.close()

    async def __aenter__(self) -> EngineResponse:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class EnginePool:
    """Keep-alive connections to each engine, most recently used first."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_idle: int = 256) -> None:
        self.clock, self.max_idle = clock, max_idle
        self.idle: dict[tuple[str, int], list[Link]] = {}
        self._where: dict[str, tuple[str, int, bytes]] = {}
        self.opened = 0  # connections opened (tests, the benchmark)

    def where(self, base: str) -> tuple[str, int, bytes]:
        """(host, port, Host header) of a base URL (http://127.0.0.1:8000)."""
        got = self._where.get(base)
        if got is None:
            url = urlsplit(base)
            if url.scheme != "http" or url.hostname is None:
                raise ValueError(f"not an http:// base URL: {base!r}")
            port = url.port or 80
            got = self._where[base] = (url.hostname, port, url.netloc.encode("latin-1"))
        return got

    async def request(
        self, base: str, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> EngineResponse:
        """Send one request, and read its answer's head. OSError (TimeoutError included)
        when the engine cannot be reached, EngineGone when it ends the connection first."""
        host, port, netloc = self.where(base)
        if not _TARGET.fullmatch(path):
            raise ValueError(f"not a request target: {path[:80]!r}")
        lines = [f"{method} {path} HTTP/1.1\r\nHost: ".encode(), netloc, b"\r\n"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                continue  # never a header split in two (aiohttp's parser refuses them too)
            lines.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        if body or method not in ("GET", "HEAD"):
            lines.append(b"Content-Length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        parts = [b"".join(lines), body] if body else [b"".join(lines)]
        key = (host, port)
        for _ in range(2):
            link, reused = self._take(key), True
            if link is None:
                link, reused = await self._connect(host, port), False
            link.send(parts, head_only=method == "HEAD")
            assert link.head is not None
            try:
                head = await link.head
            except EngineGone:
                link.close()
                if reused and not link.got_any:
                    continue  # closed idle by the engine as it was reused: it took nothing
                raise
            except BaseException:
                link.close()  # cancelled (the client left, a timeout): the engine aborts
                raise
            return EngineResponse(self, key, link, head)
        raise EngineGone("the engine closed two connections in a row before answering")

    def _take(self, key: tuple[str, int]) -> Link | None:
        links = self.idle.get(key)
        now = self.clock()
        while links:
            link = links.pop()
            if not link.closed and link.error is None and now - link.used_at < IDLE_FOR:
                return link
            link.close()
        return None

    async def _connect(self, host: str, port: int) -> Link:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            _, link = await loop.create_connection(Link, host, port)
        self.opened += 1
        return link

    def give_back(self, key: tuple[str, int], link: Link) -> None:
        link.head, link.used_at = None, self.clock()
        links = self.idle.setdefault(key, [])
        links.append(link)
        if len(links) > self.max_idle:
            links.pop(0).close()

    def close(self) -> None:
        for links in self.idle.values():
            for link in links:
                link.close()
        self.idle.clear()
