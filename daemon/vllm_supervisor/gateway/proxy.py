"""The gateway's HTTP side: find the model a request names, wait for the router's Lease, and
relay the engine's answer chunk by chunk.

The body is read once, bounded by `gateway.max_body` (413 beyond), parsed only to find
`model` (JSON keys have no order, so the whole body is needed), and forwarded as the same
bytes. Streams are relayed as they come (`X-Accel-Buffering: no` tells nginx-like proxies
in front not to buffer either). An engine that dies mid-stream ends the client's stream
with an error event, and so does a chat or completions stream that ends without vLLM's
closing `data: [DONE]`; nothing waits on a dead connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from vllm_supervisor.gateway import errors
from vllm_supervisor.gateway.catalogue import Catalogue, EngineKeys, Route
from vllm_supervisor.gateway.chat import ChatFallback
from vllm_supervisor.gateway.keys import Keys
from vllm_supervisor.gateway.metrics import GatewayMetrics
from vllm_supervisor.gateway.router import Router
from vllm_supervisor.gateway.slots import Denial

# Request headers the engine gets from the client; the rest (its Authorization above all:
# a gateway key is not an engine key) stay here.
# Not Accept-Encoding: the engine's answers are relayed as they are, uncompressed.
FORWARDED = ("Content-Type", "Accept", "User-Agent", "OpenAI-Organization")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HOP = {"Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Content-Encoding"}
# vLLM ends every chat and completions stream with this event, after an error event too
# (docs/vllm-behaviour.md): a stream of these paths that ends without it was cut short.
DONE = b"data: [DONE]"
DONE_PATHS = ("/v1/chat/completions", "/v1/completions")


class Proxy:
    def __init__(
        self,
        catalogue: Catalogue,
        router: Router,
        session: aiohttp.ClientSession,
        load_timeout: float,
        max_body: int,
        metrics: GatewayMetrics | None = None,
        engine_keys: EngineKeys | None = None,
        client_keys: Keys | None = None,
    ) -> None:
        self.catalogue, self.router, self.session = catalogue, router, session
        self.load_timeout, self.max_body, self.metrics = load_timeout, max_body, metrics
        self.engine_keys, self.client_keys = engine_keys, client_keys

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.keyed(self.models))
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_route("*", "/{path:.*}", self.keyed(self.forward))

    def keyed(self, handler: Handler) -> Handler:
        """With gateway.api_keys_file: a client's bearer key, compared in constant time
        (gateway/keys.py); never logged, never forwarded (engines get their own key)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            keys = self.client_keys
            if keys is not None and keys.label(request.headers.get("Authorization")) is None:
                return errors.answer(401, "a valid API key is required (Authorization: "
                                     "Bearer KEY)", "invalid_api_key")  # fmt: skip
            return await handler(request)

        return guarded

    async def prometheus(self, request: web.Request) -> web.Response:
        text = await self.metrics.text() if self.metrics is not None else ""
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        """Every configured, non-deprecated name, with its model's state (an extension)."""
        snap = self.router.snapshot()
        data = [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "vllm-supervisor",
                "x_vllm_supervisor": {"model": r.model, **snap.get(r.model, {})},
            }
            for r in self.catalogue.routes.values()
            if not r.deprecated
            for name in r.names
        ]
        return web.json_response({"object": "list", "data": data})

    async def forward(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/admin/"):  # never an engine's: see gateway/admin.py
            return errors.answer(
                404,
                "the admin paths are served on the gateway's admin socket; set "
                "gateway.admin_keys_file to serve them on this port too",
                "admin_not_here",
            )
        raw = await request.content.read(self.max_body + 1)
        if len(raw) > self.max_body:
            return errors.answer(413, f"request body over {self.max_body} bytes", "body_too_large")
        routed = self._route(raw)
        if isinstance(routed, web.Response):
            return routed
        route, body = routed
        started = time.monotonic()
        out = await self._serve(request, route, raw, body)
        if self.metrics is not None:
            self.metrics.answered(route.model, out.status, time.monotonic() - started)
        return out

    async def _serve(
        self, request: web.Request, route: Route, raw: bytes, body: dict[str, Any]
    ) -> web.StreamResponse:
        try:
            got = await asyncio.wait_for(self.router.acquire(route.model), self.load_timeout)
        except TimeoutError:
            state = self.router.snapshot()[route.model]["state"]
            return errors.answer(
                503,
                f"model {route.model} was not ready within {self.load_timeout:g} s "
                f"(gateway.load_timeout); it is {state}",
                "load_timeout",
            )
        if isinstance(got, Denial):
            return errors.answer(got.status, got.message, got.code, got.retry_after)
        try:
            chat = request.path == "/v1/chat/completions" and request.method == "POST"
            if chat and route.chat_fallback != "off":
                return await ChatFallback(self).serve(request, route, raw, body)
            upstream = await self.open(route, request.method, request.rel_url.path_qs, raw,
                                       request.headers)  # fmt: skip
            if isinstance(upstream, web.Response):
                return upstream
            return await self.relay(request, route, upstream)
        finally:
            self.router.release(got)

    def _route(self, raw: bytes) -> tuple[Route, dict[str, Any]] | web.Response:
        try:
            body: Any = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            return errors.answer(400, f"malformed JSON: {exc}", "invalid_json")
        name = body.get("model") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return errors.answer(400, "the body must be a JSON object naming a 'model'", "no_model")
        route = self.catalogue.find(name)
        if route is None:
            known = ", ".join(self.catalogue.known())
            return errors.answer(
                404, f"model '{name}' does not exist here; known: {known}", "model_not_found"
            )
        return route, body

    async def open(
        self, route: Route, method: str, path: str, raw: bytes, given: Mapping[str, str]
    ) -> aiohttp.ClientResponse | web.Response:
        """The engine's answer to one request (its headers read, its body not yet), or the
        gateway's own error when the engine cannot be reached."""
        headers = {h: given[h] for h in FORWARDED if h in given}
        keys = self.engine_keys
        key = await keys.get(route) if keys is not None else None
        upstream = await self._send(route, method, path, raw, headers, key)
        if (
            keys is not None
            and isinstance(upstream, aiohttp.ClientResponse)
            and upstream.status == 401
        ):
            # A key kept from before a rotation (EngineKeys.KEEP): vLLM's auth middleware
            # refused it before any route ran (docs/vllm-behaviour.md, "Security surface"),
            # so sending the request once more with the key asked anew does nothing twice.
            # The key kept now is the one just asked: a 401 to it repeats this, no more.
            keys.forget(route.model)
            fresh = await keys.get(route)
            if fresh is not None and fresh != key:
                upstream.release()
                upstream = await self._send(route, method, path, raw, headers, fresh)
        return upstream

    async def _send(
        self,
        route: Route,
        method: str,
        path: str,
        raw: bytes,
        headers: dict[str, str],
        key: str | None,
    ) -> aiohttp.ClientResponse | web.Response:
        if key:
            headers = {**headers, "Authorization": f"Bearer {key}"}
        started = time.monotonic()
        try:
            upstream = await self.session.request(
                method, route.base + path, data=raw, headers=headers, allow_redirects=False
            )
        except (aiohttp.ClientError, OSError) as exc:
            self.router.stale(route.model)  # it was ready a moment ago: look again
            return errors.answer(
                502, f"model {route.model}: the engine is unreachable ({exc})", "engine_unreachable"
            )
        if self.metrics is not None:
            self.metrics.upstream_seconds.labels(route.model).observe(time.monotonic() - started)
        return upstream

    async def relay(
        self,
        request: web.Request,
        route: Route,
        upstream: aiohttp.ClientResponse,
        head: bytes = b"",
    ) -> web.StreamResponse:
        """The engine's answer to the client: whole when its length is known, else chunk by
        chunk as it comes. HEAD: the start of a stream already read (gateway/chat.py)."""
        async with upstream:
            headers = {k: v for k, v in upstream.headers.items() if k not in HOP}
            headers["X-Accel-Buffering"] = "no"
            headers["X-Vllm-Supervisor-Model"] = route.model
            sse = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
            if not sse and not head and upstream.content_length is not None:
                # A whole answer of known length (most non-streamed ones): one read, one
                # write, no chunked framing: the cheapest relay (scripts/bench/gateway.py).
                try:
                    body = await upstream.read()
                except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                    self.router.stale(route.model)
                    return errors.answer(502, f"model {route.model}: the engine failed "
                                         f"mid-answer ({exc})", "engine_failed")  # fmt: skip
                return web.Response(
                    body=body, status=upstream.status, reason=upstream.reason, headers=headers
                )
            out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            out.headers.update(headers)
            await out.prepare(request)
            watch = sse and upstream.status == 200 and request.path in DONE_PATHS
            tail = head[-64:]
            done = not watch or DONE in tail
            if head:
                await out.write(head)
            try:
                async for chunk in upstream.content.iter_any():
                    await out.write(chunk)
                    if not done:  # a few bytes copied per chunk, whatever its size
                        tail = (tail + chunk[-64:])[-64:]
                        done = DONE in tail
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                # The engine died mid-answer: tell a streaming client, and end the answer.
                self.router.stale(route.model)
                if not sse:  # a cut connection, not a short answer that looks whole
                    if request.transport is not None:
                        request.transport.close()
                    return out
                msg = f"model {route.model}: the engine failed mid-stream ({exc})"
                await out.write(errors.sse_event(502, msg, "engine_failed"))
            else:
                if not done:  # a clean end, but short: the client must not take it as whole
                    self.router.stale(route.model)
                    msg = f"model {route.model}: the engine's stream ended without [DONE]"
                    await out.write(errors.sse_event(502, msg, "engine_failed"))
            await out.write_eof()
        return out
