"""A chat request under `chat_fallback` (gateway/fallback.py holds the rules and reshaping):
ask chat first (`on_failure`) and fall back when the engine's answer calls for it, or go to
completions at once (`always`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

from vllm_supervisor.gateway import errors, fallback
from vllm_supervisor.gateway.catalogue import Route
from vllm_supervisor.gateway.engine_http import EngineGone, EngineResponse

HEADER = "X-Vllm-Supervisor-Chat-Fallback"

HOLD_MAX = 1 << 20  # bytes of an answerless stream held back before it is relayed anyway


class Forwarder(Protocol):  # gateway/proxy.py's Proxy
    metrics: Any
    log: Any

    def fail(
        self, status: int, message: str, code: str, model: str | None = None
    ) -> web.Response: ...

    async def prepare(self, request: web.Request, out: web.StreamResponse) -> None: ...

    async def open(
        self, route: Route, method: str, path: str, raw: bytes, given: Mapping[str, str]
    ) -> EngineResponse | web.Response: ...

    async def relay(
        self,
        request: web.Request,
        route: Route,
        upstream: EngineResponse,
        head: bytes = b"",
        marks: dict[str, str] | None = None,
        watch_done: bool = True,
    ) -> web.StreamResponse: ...


class ChatFallback:
    def __init__(self, proxy: Forwarder) -> None:
        self.proxy = proxy

    async def serve(
        self, request: web.Request, route: Route, raw: bytes, chat: dict[str, Any]
    ) -> web.StreamResponse:
        reason = "always"
        if route.chat_fallback == "on_failure":
            upstream = await self.proxy.open(route, "POST", "/v1/chat/completions", raw,
                                             request.headers)  # fmt: skip
            if isinstance(upstream, web.Response):
                return upstream
            streamed = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
            if streamed:
                head = await self._held(upstream)
                if head is not None:  # it answers: the client gets every chunk from here on
                    return await self.proxy.relay(request, route, upstream, head)
                upstream.release()
                return await self._through_completions(request, route, chat, "empty")
            async with upstream:
                body = await upstream.read()
                headers = {"Content-Type": upstream.headers.get("Content-Type", "")}
                why = fallback.wants_fallback_after(upstream.status, body)
                if why is None:
                    return web.Response(body=body, status=upstream.status, headers=headers)
            reason = why
        return await self._through_completions(request, route, chat, reason)

    async def _held(self, upstream: EngineResponse) -> bytes | None:
        """The stream's first bytes, read until an event shows an answer
        (fallback.shows_answer), or None when it ended (`[DONE]`) having shown none: an empty
        answer, which the completions fallback replaces. Only what comes before the first
        content is held, so the client's first token is not delayed."""
        held, events = bytearray(), fallback.Events()
        try:
            async for chunk in upstream.chunks():
                held += chunk
                for data in events.feed(chunk):
                    if data.strip() == b"[DONE]":
                        return None
                    if fallback.shows_answer(data):
                        return bytes(held)
                if len(held) > HOLD_MAX:
                    return bytes(held)
        except EngineGone:
            pass  # relay() meets the same error and ends the client's stream with it
        return bytes(held)  # an end without [DONE]: relay() says so

    async def _through_completions(
        self, request: web.Request, route: Route, chat: dict[str, Any], reason: str
    ) -> web.StreamResponse:
        try:
            fallback.check_rewritable(chat)
            prompt = await self._prompt(request, route, chat)
        except fallback.NotRewritable as exc:
            return self.proxy.fail(400, f"model {route.model}: {exc}", "chat_fallback_refused",
                                   route.model)  # fmt: skip
        if isinstance(prompt, web.Response):
            return prompt
        body = json.dumps(fallback.completion_request(chat, prompt)).encode()
        upstream = await self.proxy.open(route, "POST", "/v1/completions", body, request.headers)
        if isinstance(upstream, web.Response):
            return upstream
        if self.proxy.metrics is not None:
            self.proxy.metrics.fallbacks.labels(route.model, reason).inc()
        marks = {HEADER: f"completions ({reason})", "X-Vllm-Supervisor-Model": route.model}
        async with upstream:
            if upstream.status != 200:  # the completion's own error, as the engine gave it
                answer = web.Response(body=await upstream.read(), status=upstream.status,
                                      content_type="application/json")  # fmt: skip
                answer.headers.update(marks)
                return answer
            if not chat.get("stream"):
                data = await upstream.json()
                return web.json_response(fallback.chat_answer(data), headers=marks)
            return await self._stream(request, route.model, upstream, marks)

    async def _prompt(
        self, request: web.Request, route: Route, chat: dict[str, Any]
    ) -> str | list[int] | web.Response:
        """The engine's /tokenize of the messages (its template, exactly), else flatten()."""
        ask = {"model": chat["model"], "messages": chat.get("messages", []),
               "add_generation_prompt": True}  # fmt: skip
        upstream = await self.proxy.open(route, "POST", "/tokenize", json.dumps(ask).encode(),
                                         {"Content-Type": "application/json"})  # fmt: skip
        if isinstance(upstream, web.Response):
            return upstream
        async with upstream:
            data = await upstream.json()
        tokens = data.get("tokens") if upstream.status == 200 and isinstance(data, dict) else None
        if isinstance(tokens, list) and tokens:
            return [int(t) for t in tokens]
        return fallback.flatten(chat.get("messages", []))

    async def _stream(
        self,
        request: web.Request,
        route: str,
        upstream: EngineResponse,
        marks: dict[str, str],
    ) -> web.StreamResponse:
        out = request.get(errors.OUT)  # a stream already started (load progress) goes on
        if out is None:
            out = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no", **marks}
            )
            await self.proxy.prepare(request, out)
        reshape, events, done = fallback.ChunkReshaper(), fallback.Events(), False
        fix = "the engine's stream ended without [DONE]"
        try:
            async for chunk in upstream.chunks():
                for data in events.feed(chunk):
                    done = done or data.strip() == b"[DONE]"
                    await out.write(reshape.event(data))
        except EngineGone as exc:
            done, fix = False, f"the engine failed mid-stream ({exc})"
        if not done:  # cut short (docs/vllm-behaviour.md, "Streams"): not a whole answer
            msg = f"model {route} {errors.ENGINE_DIED}"
            errors.log_answer(self.proxy.log, 502, "engine_failed", route, msg, fix)
            await out.write(errors.sse_event(502, msg, "engine_failed"))
        await out.write_eof()
        return out
