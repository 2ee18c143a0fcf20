"""Forwarding one client route (gateway/routes.py) to its model's engine: read the body
whole (gateway/body.py), find the model it names, swap an alias for the served name, take
tools out for a model that calls none (gateway/tools.py), wait for the router's Lease
(showing a streamed chat the load, gateway/progress.py), and relay the engine's answer
chunk by chunk, within the model's request_timeout.

The body is forwarded as the same bytes unless the gateway changed it (an alias, tools).
Streams are relayed as they come (`X-Accel-Buffering: no` tells nginx-like proxies in front
not to buffer either). An engine that dies mid-stream ends the client's stream with an
error event, and so does a chat or completions stream that ends without vLLM's closing
`data: [DONE]`; nothing waits on a dead connection. Every error answer is logged once, with
the operator's fix (gateway/errors.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from vllm_supervisor.gateway import body, errors, progress, relay, routes, tools
from vllm_supervisor.gateway.catalogue import Catalogue, EngineKeys, Route
from vllm_supervisor.gateway.chat import ChatFallback
from vllm_supervisor.gateway.engine_http import EngineGone, EnginePool, EngineResponse
from vllm_supervisor.gateway.metrics import GatewayMetrics
from vllm_supervisor.gateway.router import Router
from vllm_supervisor.gateway.slots import Denial, Lease

# Request headers the engine gets from the client; the rest (its Authorization above all:
# a gateway key is not an engine key) stay here.
# Not Accept-Encoding: the engine's answers are relayed as they are, uncompressed.
FORWARDED = ("Content-Type", "Accept", "User-Agent", "OpenAI-Organization")
HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}
# vLLM ends these streams with `data: [DONE]` (gateway/relay.py checks it)
DONE_PATHS = ("/v1/chat/completions", "/v1/completions")
CHAT = "/v1/chat/completions"
OUT, ENGINE_DIED = errors.OUT, errors.ENGINE_DIED


class Proxy:
    def __init__(
        self,
        catalogue: Catalogue,
        router: Router,
        engines: EnginePool,
        load_timeout: float,
        max_body: int,
        metrics: GatewayMetrics | None = None,
        engine_keys: EngineKeys | None = None,
        log: Any = None,
    ) -> None:
        self.catalogue, self.router, self.engines = catalogue, router, engines
        self.load_timeout, self.max_body, self.metrics = load_timeout, max_body, metrics
        self.engine_keys = engine_keys
        self.log = log if log is not None else errors.QuietLog()

    def fail(
        self,
        status: int,
        message: str,
        code: str,
        model: str | None = None,
        fix: str | None = None,
        retry_after: float | None = None,
    ) -> web.Response:
        """An error answer of the gateway's own, logged once for the operator."""
        errors.log_answer(self.log, status, code, model, message, fix)
        return errors.answer(status, message, code, retry_after)

    async def prepare(self, request: web.Request, out: web.StreamResponse) -> None:
        """Send OUT's headers, and remember that they went (a timeout or an error after this
        point can only end the stream with an error event)."""
        await out.prepare(request)
        request[OUT] = out

    # ---- one client request ----------------------------------------------------------------
    async def forward(self, request: web.Request, croute: routes.ClientRoute) -> web.StreamResponse:
        try:
            raw = await body.read(request, self.max_body)
            parsed = body.parse(raw, croute, request.headers.get("Content-Type", ""))
        except body.Refusal as exc:
            resp = self.fail(exc.status, exc.message, exc.code)
            if exc.status == 413:
                resp.force_close()  # the rest of the body is not read: end the connection
            return resp
        route = self.catalogue.find(parsed.model)
        if route is None:
            known = ", ".join(self.catalogue.known())
            return self.fail(404, f"model '{parsed.model[:200]}' does not exist here; known: "
                             f"{known}", "model_not_found")  # fmt: skip
        marks = {"X-Vllm-Supervisor-Model": route.model}
        changed = parsed.model in route.aliases
        if changed:
            raw = body.renamed(raw, parsed, route.served)
        if croute.tools and parsed.json is not None and route.tool_support != "native":
            try:
                n = tools.removed(parsed.json, route.model, route.tool_support,
                                  route.unsupported_tools)  # fmt: skip
            except body.Refusal as exc:
                return self.fail(exc.status, exc.message, exc.code, route.model)
            if n is not None:
                raw = json.dumps(parsed.json).encode()
                marks[tools.HEADER] = f"{n} (tool_support: {route.tool_support})"
                if self.metrics is not None:
                    self.metrics.tools_removed.labels(route.model).inc()
        started = time.monotonic()
        using = self.catalogue.using
        using[route.base] = using.get(route.base, 0) + 1
        try:
            out = await self._serve(request, croute, route, raw, parsed, marks)
        finally:
            using[route.base] -= 1
        if self.metrics is not None:
            self.metrics.answered(route.model, out.status, time.monotonic() - started)
        return out

    async def _serve(
        self,
        request: web.Request,
        croute: routes.ClientRoute,
        route: Route,
        raw: bytes,
        parsed: body.Parsed,
        marks: dict[str, str],
    ) -> web.StreamResponse:
        lease = self.router.lease_now(route.model)
        if lease is not None:  # ready, under its cap, nobody waiting: no wait, no timer
            try:
                return await self._answer(request, croute, route, raw, parsed, marks)
            finally:
                self.router.release(lease)
        acquire = asyncio.ensure_future(self.router.acquire(route.model))
        show = (
            route.load_progress
            and croute.path == CHAT
            and parsed.json is not None
            and parsed.json.get("stream") is True
            and not self.router.serving(route.model)
        )
        got: Lease | Denial | None = None
        try:
            if show:
                out = web.StreamResponse(headers={
                    "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no", **marks})  # fmt: skip
                got = await progress.wait_showing(request, out, self.prepare, self.router,
                                                  route.model, parsed.model, acquire,
                                                  self.load_timeout)  # fmt: skip
            else:
                got = await asyncio.wait_for(asyncio.shield(acquire), self.load_timeout)
        except TimeoutError:
            # Answered in the moment since the timeout fired: that answer stands.
            got = acquire.result() if acquire.done() and not acquire.cancelled() else None
        finally:
            if not acquire.done():
                acquire.cancel()  # the client left, or waited out the load: leave the queue
            elif got is None and not acquire.cancelled():
                # Answered as the client left: a lease granted then must go back, or the
                # model counts a request in flight for ever.
                late = acquire.result()
                if isinstance(late, Lease):
                    self.router.release(late)
        if not isinstance(got, Lease):
            return await self._refused(request, route, got)
        try:
            return await self._answer(request, croute, route, raw, parsed, marks)
        finally:
            self.router.release(got)

    async def _refused(
        self, request: web.Request, route: Route, got: Denial | None
    ) -> web.StreamResponse:
        if got is None:
            state = self.router.snapshot()[route.model]["state"]
            got = Denial(
                503,
                f"model {route.model} is still loading after {self.load_timeout:g} s. Try "
                "again in a minute.",
                "load_timeout",
                30.0,
                fix=f"not ready within gateway.load_timeout ({self.load_timeout:g} s); it "
                f"is {state}",
            )
        return await self.late_or_now(request, route.model, got.status, got.message, got.code,
                                      got.fix, got.retry_after)  # fmt: skip

    async def late_or_now(
        self,
        request: web.Request,
        model: str,
        status: int,
        message: str,
        code: str,
        fix: str | None = None,
        retry_after: float | None = None,
    ) -> web.StreamResponse:
        """An error answer, or, once a stream's headers went out, its closing error event."""
        out: web.StreamResponse | None = request.get(OUT)
        if out is None:
            return self.fail(status, message, code, model, fix, retry_after)
        errors.log_answer(self.log, status, code, model, message, fix)
        await progress.end_with_error(out, status, message, code)
        return out

    async def _answer(
        self,
        request: web.Request,
        croute: routes.ClientRoute,
        route: Route,
        raw: bytes,
        parsed: body.Parsed,
        marks: dict[str, str],
    ) -> web.StreamResponse:
        """The engine's answer within the model's request_timeout (0: none). Past it the
        engine's connection is closed, which aborts its request (vLLM's with_cancellation)."""
        limit = route.request_timeout
        if not limit:  # none: no timer to set and cancel for every request
            return await self._reply(request, croute, route, raw, parsed, marks)
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                return await self._reply(request, croute, route, raw, parsed, marks)
        except TimeoutError:
            if not deadline.expired():
                raise
            return await self.late_or_now(
                request, route.model, 504,
                f"model {route.model} took longer than {limit:g} s to answer, the most this "
                "server allows, so the answer was stopped. Try a shorter request.",
                "request_timeout", fix="request_timeout (per model, or in the gateway block)",
            )  # fmt: skip

    async def _reply(
        self,
        request: web.Request,
        croute: routes.ClientRoute,
        route: Route,
        raw: bytes,
        parsed: body.Parsed,
        marks: dict[str, str],
    ) -> web.StreamResponse:
        """The engine's answer: through chat_fallback, or relayed as it is."""
        if croute.path == CHAT and route.chat_fallback != "off" and parsed.json:
            resp = await ChatFallback(self).serve(request, route, raw, parsed.json)
            if isinstance(resp, web.Response):  # not a stream: maybe an error
                return await self.late(request, route.model, resp)
            return resp
        path = croute.path + routes.query(request.raw_path)
        upstream = await self.open(route, "POST", path, raw, request.headers)
        if isinstance(upstream, web.Response):
            return await self.late(request, route.model, upstream)
        return await self.relay(request, route, upstream, marks=marks,
                                watch_done=croute.path in DONE_PATHS)  # fmt: skip

    async def late(
        self, request: web.Request, model: str, resp: web.Response
    ) -> web.StreamResponse:
        """RESP, an error answer: as it is, or as the end of a stream already started."""
        if request.get(OUT) is None:
            return resp
        status, message, code = progress.error_of(resp)
        return await self.late_or_now(request, model, status, message, code)

    # ---- the engine side ---------------------------------------------------------------------
    async def open(
        self, route: Route, method: str, path: str, raw: bytes, given: Mapping[str, str]
    ) -> EngineResponse | web.Response:
        """The engine's answer to one request (its headers read, its body not yet), or the
        gateway's own error when the engine cannot be reached."""
        headers = {h: given[h] for h in FORWARDED if h in given}
        keys = self.engine_keys
        key = await keys.get(route) if keys is not None else None
        upstream = await self._send(route, method, path, raw, headers, key)
        if keys is not None and isinstance(upstream, EngineResponse) and upstream.status == 401:
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
    ) -> EngineResponse | web.Response:
        if key:
            headers = {**headers, "Authorization": f"Bearer {key}"}
        started = time.monotonic()
        try:
            upstream = await self.engines.request(route.base, method, path, raw, headers)
        except ValueError as exc:  # a target with a space or CTL (aiohttp's parser refuses
            # them first; this is the last guard against a request split in two)
            return self.fail(400, f"the request cannot be forwarded: {exc}", "invalid_request")
        except (EngineGone, OSError) as exc:
            self.router.stale(route.model)  # it was ready a moment ago: look again
            return self.fail(
                502, f"model {route.model} did not answer. Try again in a moment.",
                "engine_unreachable", route.model,
                fix=f"its engine at {route.base} is unreachable ({exc}); the instance restarts "
                f"a dead engine: vllmctl status {route.model}",
            )  # fmt: skip
        if self.metrics is not None:
            self.metrics.first_byte(route.model, time.monotonic() - started)
        return upstream

    async def relay(
        self,
        request: web.Request,
        route: Route,
        upstream: EngineResponse,
        head: bytes = b"",
        marks: dict[str, str] | None = None,
        watch_done: bool = True,
    ) -> web.StreamResponse:
        """The engine's answer to the client: whole when its length is known, else chunk by
        chunk as it comes. HEAD: the start of a stream already read (gateway/chat.py). When a
        stream was started already (load progress), the engine's events follow in it."""
        out: web.StreamResponse | None = request.get(OUT)
        async with upstream:
            headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP}
            headers.update({"X-Accel-Buffering": "no", "X-Vllm-Supervisor-Model": route.model,
                            **(marks or {})})  # fmt: skip
            sse = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
            if not sse and not head and (upstream.content_length is not None or out):
                # A whole answer of known length (most non-streamed ones): one read, one
                # write, no chunked framing: the cheapest relay (scripts/bench/gateway.py).
                try:
                    data = await upstream.read()
                except EngineGone as exc:
                    self.router.stale(route.model)
                    return await self.late_or_now(request, route.model, 502,
                                                  f"model {route.model} {ENGINE_DIED}",
                                                  "engine_failed", fix=str(exc))  # fmt: skip
                resp = web.Response(body=data, status=upstream.status, reason=upstream.reason,
                                    headers=headers)  # fmt: skip
                if upstream.status >= 400 and out is None:  # the engine's own error answer
                    # (late() logs one that ends a started stream)
                    status, message, _ = progress.error_of(resp)
                    errors.log_answer(self.log, status, "engine_error", route.model,
                                      message[:300])  # fmt: skip
                return await self.late(request, route.model, resp) if out else resp
            if out is None:
                out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                out.headers.update(headers)
                await self.prepare(request, out)
            copy = relay.Copy(sse, watch=sse and upstream.status == 200 and watch_done)
            try:
                await relay.stream(request, out, upstream, copy, head)
            except EngineGone as exc:
                # The engine died mid-answer: tell a streaming client, and end the answer.
                self.router.stale(route.model)
                errors.log_answer(self.log, 502, "engine_failed", route.model,
                                  f"model {route.model} {ENGINE_DIED}", str(exc))  # fmt: skip
                if not sse:  # a cut connection, not a short answer that looks whole
                    if request.transport is not None:
                        request.transport.close()
                    return out
                await out.write(errors.sse_event(502, f"model {route.model} {ENGINE_DIED}",
                                                 "engine_failed"))  # fmt: skip
            else:
                if not copy.done:  # a clean end, but short: the client must not take it whole
                    self.router.stale(route.model)
                    msg = f"model {route.model} {ENGINE_DIED}"
                    errors.log_answer(self.log, 502, "engine_failed", route.model, msg,
                                      "the engine's stream ended without [DONE]")  # fmt: skip
                    await out.write(errors.sse_event(502, msg, "engine_failed"))
                elif copy.cut.pending:  # after [DONE], or a stream no [DONE] ends: as it came
                    await out.write(copy.cut.pending)
            await out.write_eof()
        return out
