"""The gateway's one HTTP entry: every request's path normalised once (gateway/routes.py),
then answered by the gateway itself, forwarded to an engine (the client route table), or
refused with a 404/405 in OpenAI's shape. Nothing else reaches an engine.

The gateway's own paths:
- `GET /health`, `GET /metrics` (open, like vLLM's);
- `GET /v1/models`, `GET /v1/models/{name}`, and `GET /models` (the list Open WebUI's
  llama.cpp connection reads at the server's root): every configured name, with what a
  client routes on (context length, tool calling, vision) and its load state in llama.cpp's
  `status` object, which Open WebUI 0.12 reads (`routers/openai.py`,
  get_provider_model_loaded_state);
- `POST /models/load` `{"model"}` (llama.cpp's, Open WebUI's "load" action): activates it
  as a request would; `POST /models/unload` is refused (403): unloading is the operator's;
- `/admin/*` behind admin keys (gateway/admin.py), only with `gateway.admin_keys_file`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from vllm_supervisor.gateway import errors, routes
from vllm_supervisor.gateway.catalogue import Catalogue, Route
from vllm_supervisor.gateway.keys import Keys
from vllm_supervisor.gateway.metrics import GatewayMetrics
from vllm_supervisor.gateway.router import Router
from vllm_supervisor.gateway.slots import Busy, Denial
from vllm_supervisor.protocol import jsonbody
from vllm_supervisor.protocol.states import COMING, UNKNOWN, State

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Forward = Callable[[web.Request, routes.ClientRoute], Awaitable[web.StreamResponse]]
# llama.cpp's `status.value` (Open WebUI: loaded/sleeping = loaded; loading/unloaded = not).
LLAMA_STATUS: dict[str, str] = {
    State.READY: "loaded",
    State.SLEEPING: State.SLEEPING,  # llama.cpp's word for it is ours
    State.DRAINING: "loaded",
}
LOADING = COMING | {Busy.ACTIVATING}
LLAMA_FAILED = "failed"  # llama.cpp's flag in its status object


class Front:
    def __init__(
        self,
        catalogue: Catalogue,
        router: Router,
        forward: Forward,
        log: Any,
        metrics: GatewayMetrics | None = None,
        client_keys: Keys | None = None,
        admin: dict[str, tuple[str, Handler]] | None = None,
        load_timeout: float = 900.0,
    ) -> None:
        self.catalogue, self.router, self.forward, self.log = catalogue, router, forward, log
        self.metrics, self.client_keys, self.load_timeout = metrics, client_keys, load_timeout
        keyed = self.keyed
        # path -> (method, handler); GET routes answer HEAD too.
        self.own: dict[str, tuple[str, Handler]] = {
            "/health": ("GET", self.health),
            "/metrics": ("GET", self.prometheus),
            "/v1/models": ("GET", keyed(self.models)),
            "/models": ("GET", keyed(self.models)),
            "/models/load": ("POST", keyed(self.load)),
            "/models/unload": ("POST", keyed(self.unload)),
            **(admin or {}),
        }

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self.dispatch)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = routes.normalise(request.raw_path)
        own = self.own.get(path)
        if own is None and path.startswith("/v1/models/"):
            own = ("GET", self.keyed(self.model))
        if own is not None:
            method, handler = own
            if (
                method != "*"
                and request.method != method
                and not (method == "GET" and request.method == "HEAD")
            ):
                return self.refuse(request, 405, f"{path} takes {method} only",
                                   "method_not_allowed", allow=method)  # fmt: skip
            return await handler(request)
        route = routes.ROUTES.get(path)
        if route is None:
            if path.startswith("/admin/"):
                return self.refuse(
                    request, 404, "the admin paths are served on the gateway's admin socket; "
                    "set gateway.admin_keys_file to serve them on this port too",
                    "admin_not_here",
                )  # fmt: skip
            return self.refuse(
                request, 404, f"{path} is not a path this server answers; see "
                "https://platform.openai.com/docs/api-reference (POST /v1/chat/completions, "
                "/v1/completions, /v1/embeddings, ...; GET /v1/models)", "unknown_path",
            )  # fmt: skip
        if request.method != "POST":
            return self.refuse(request, 405, f"{path} takes POST only", "method_not_allowed",
                               allow="POST")  # fmt: skip
        return await self.keyed(lambda r: self.forward(r, route))(request)

    def refuse(
        self, request: web.Request, status: int, message: str, code: str, allow: str = ""
    ) -> web.Response:
        errors.log_answer(self.log, status, code, None, message)
        resp = errors.answer(status, message, code)
        if allow:
            resp.headers["Allow"] = allow
        return resp

    def keyed(self, handler: Handler) -> Handler:
        """With gateway.api_keys_file: a client's bearer key, compared in constant time
        (gateway/keys.py); never logged, never forwarded (engines get their own key)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            keys = self.client_keys
            if keys is not None and keys.label(request.headers.get("Authorization")) is None:
                return self.refuse(request, 401, "a valid API key is required (Authorization: "
                                   "Bearer KEY)", "invalid_api_key")  # fmt: skip
            return await handler(request)

        return guarded

    # ---- the gateway's own paths -----------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def prometheus(self, request: web.Request) -> web.Response:
        text = await self.metrics.text() if self.metrics is not None else ""
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    def entries(self) -> list[dict[str, Any]]:
        snap = self.router.snapshot()
        return [
            entry(name, r, snap.get(r.model, {}))
            for r in self.catalogue.routes.values()
            if not r.deprecated
            for name in r.names
        ]

    async def models(self, request: web.Request) -> web.Response:
        """Every configured, non-deprecated name, with its model's state (an extension)."""
        return web.json_response({"object": "list", "data": self.entries()})

    async def model(self, request: web.Request) -> web.Response:
        name = routes.normalise(request.raw_path).removeprefix("/v1/models/")
        found = next((e for e in self.entries() if e["id"] == name), None)
        if found is None:
            known = ", ".join(self.catalogue.known())
            return self.refuse(request, 404, f"model '{name}' does not exist here; known: "
                               f"{known}", "model_not_found")  # fmt: skip
        return web.json_response(found)

    async def load(self, request: web.Request) -> web.StreamResponse:
        """llama.cpp's load: activate as a request for the model would (on_demand rules),
        and answer once it is ready."""
        try:
            body = jsonbody.fields(await request.read(), {"model": str})
        except jsonbody.BadBody as exc:
            return self.refuse(request, 400, str(exc), "invalid_request")
        route = self.catalogue.find(str(body.get("model", "")))
        if route is None:
            return self.refuse(request, 404, f"model '{body.get('model')}' does not exist "
                               "here", "model_not_found")  # fmt: skip
        try:
            got = await asyncio.wait_for(self.router.acquire(route.model), self.load_timeout)
        except TimeoutError:
            return self.refuse(request, 503, f"model {route.model} is still loading after "
                               f"{self.load_timeout:g} s", "load_timeout")  # fmt: skip
        if isinstance(got, Denial):
            errors.log_answer(self.log, got.status, got.code, route.model, got.message, got.fix)
            return errors.answer(got.status, got.message, got.code, got.retry_after)
        self.router.release(got)
        return web.json_response({"success": True})

    async def unload(self, request: web.Request) -> web.Response:
        return self.refuse(
            request, 403, "models are unloaded by this server's operator (vllmctl deactivate) "
            "or after they sit idle (gateway.ttl), not by clients", "unload_not_allowed",
        )  # fmt: skip


def entry(name: str, r: Route, snap: dict[str, Any]) -> dict[str, Any]:
    """One /v1/models entry: OpenAI's fields, vLLM's `max_model_len`, the capabilities a
    router reads, llama.cpp's `status`, and ours."""
    state = str(snap.get("state", UNKNOWN))
    status: dict[str, Any] = {"value": LLAMA_STATUS.get(state) or (
        "loading" if state in LOADING else "unloaded")}  # fmt: skip
    if state == State.FAILED:
        status[LLAMA_FAILED] = True
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "vllm-supervisor",
        "max_model_len": r.card.get("max_model_len"),
        "capabilities": {
            "tool_calling": bool(r.card.get("tool_calling")),
            "vision": bool(r.card.get("vision")),
        },
        "status": status,
        "x_vllm_supervisor": {"model": r.model, **snap},
    }
