"""The gateway's admin paths: `/admin/state`, `/admin/activate`, `/admin/deactivate` with
`{"model": ...}` bodies (what the imageworks chat proxy posts), on the gateway's own Unix
socket (peer credentials: root, the service user, the vllm-admin group, as the instances'
sockets) and, only when `gateway.admin_keys_file` is set, on the HTTP port behind those
bearer keys, each call logged with its key's label. Activations and deactivations go through
the router, so they obey the same rules as requests (swaps wait for in-flight requests; a
busy model is not deactivated).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from vllm_supervisor.gateway import errors
from vllm_supervisor.gateway.catalogue import Catalogue
from vllm_supervisor.gateway.keys import Keys
from vllm_supervisor.gateway.router import Router
from vllm_supervisor.gateway.slots import Denial
from vllm_supervisor.host.peers import peer_allowed, peer_credentials
from vllm_supervisor.protocol import jsonbody
from vllm_supervisor.protocol.admin import Instances

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ADMIN_GROUP = "vllm-admin"


class Admin:
    def __init__(
        self,
        catalogue: Catalogue,
        router: Router,
        instances: Instances,
        log: Any,
        load_timeout: float,
        keys: Keys | None = None,
    ) -> None:
        self.catalogue, self.router, self.instances = catalogue, router, instances
        self.log, self.load_timeout, self.keys = log, load_timeout, keys
        try:
            self.gid: int | None = grp.getgrnam(ADMIN_GROUP).gr_gid
        except KeyError:
            self.gid = None
        self._runner: web.AppRunner | None = None
        self.path: Path | None = None

    def handlers(self, guard: bool) -> dict[str, tuple[str, Handler]]:
        """path -> (method, handler); GUARD: behind the admin keys (the HTTP port)."""
        wrap = self._keyed if guard else (lambda h: h)
        return {
            "/admin/state": ("*", wrap(self.state)),
            "/admin/activate": ("POST", wrap(self.activate)),
            "/admin/deactivate": ("POST", wrap(self.deactivate)),
            "/admin/follow": ("POST", wrap(self.follow)),
        }

    def add_routes(self, router: web.UrlDispatcher, guard: bool) -> None:
        for path, (method, handler) in self.handlers(guard).items():
            router.add_route(method, path, handler)

    # ---- the Unix socket -------------------------------------------------------------------
    async def start(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # one gateway per host: its unit (or the developer) owns the path
        app = web.Application(client_max_size=64 * 1024, middlewares=[self._peers])
        self.add_routes(app.router, guard=False)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(path)).start()
        os.chmod(path, 0o660)
        self.path = path

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    @web.middleware
    async def _peers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        sock = request.transport.get_extra_info("socket") if request.transport else None
        pid, uid, gid = peer_credentials(sock) if sock is not None else (0, -1, -1)
        if not peer_allowed(pid, uid, gid, self.gid):
            return errors.answer(403, f"uid {uid} may not use the gateway's admin socket: "
                                 f"add the user to {ADMIN_GROUP}", "forbidden")  # fmt: skip
        return await handler(request)

    def _keyed(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            label = self.keys.label(request.headers.get("Authorization")) if self.keys else None
            if label is None:
                return errors.answer(401, "a valid admin key is required", "invalid_api_key")
            self.log.info("admin call", path=request.path, key=label)
            return await handler(request)

        return guarded

    # ---- the paths -------------------------------------------------------------------------
    async def _model(
        self, request: web.Request, types: dict[str, type], required: bool
    ) -> str | web.Response | None:
        """The instance named by the body's `model` (a served name, an alias or the instance
        name); the body's other fields, checked by type (protocol/jsonbody.py), are kept in
        request["body"]."""
        try:
            body = jsonbody.fields(await request.read(), {"model": str, **types})
        except jsonbody.BadBody as exc:
            return errors.answer(400, str(exc), "invalid_request")
        request["body"] = body
        name = body.get("model")
        if name is None:
            return (
                errors.answer(400, "the body must name a 'model'", "no_model") if required else None
            )
        if name in self.catalogue.routes:
            return str(name)
        route = self.catalogue.find(name)
        if route is None:
            known = ", ".join(self.catalogue.known())
            return errors.answer(404, f"model '{name}' does not exist here; known: {known}",
                                 "model_not_found")  # fmt: skip
        return route.model

    async def _state_of(self, model: str) -> dict[str, Any]:
        seen = await self.instances.state(model)
        return {
            **seen.extra,
            "model": model,
            "state": seen.state,
            "gateway": self.router.snapshot()[model],
        }

    async def state(self, request: web.Request) -> web.StreamResponse:
        model = await self._model(request, {}, required=False)
        if isinstance(model, web.Response):
            return model
        if model is not None:
            self.router.stale(model)  # asked about it (vllmctl after a direct change): look
            return web.json_response(await self._state_of(model))
        return web.json_response({"models": self.router.snapshot()})

    async def activate(self, request: web.Request) -> web.StreamResponse:
        model = await self._model(request, {}, required=True)
        if not isinstance(model, str):
            return model  # type: ignore[return-value]
        try:
            got = await asyncio.wait_for(self.router.acquire(model), self.load_timeout)
        except TimeoutError:
            return errors.answer(503, f"model {model} was not ready within "
                                 f"{self.load_timeout:g} s", "load_timeout")  # fmt: skip
        if isinstance(got, Denial):
            return errors.answer(got.status, got.message, got.code, got.retry_after)
        self.router.release(got)
        return web.json_response(await self._state_of(model))

    async def deactivate(self, request: web.Request) -> web.StreamResponse:
        """Checked here before anything is asked (a NaN drain_timeout waited out the whole
        load_timeout); a 4xx of the instance itself comes back as it was given."""
        model = await self._model(request, {"drain_timeout": float, "stop": bool}, required=True)
        if not isinstance(model, str):
            return model  # type: ignore[return-value]
        body = request.get("body") or {}
        if body.get("drain_timeout", 0) < 0:
            return errors.answer(400, "drain_timeout must be >= 0 seconds", "invalid_request")
        options = {k: body[k] for k in ("drain_timeout", "stop") if k in body}
        got = await self.router.deactivate(model, options)
        if isinstance(got, Denial):
            return errors.answer(got.status, got.message, got.code)
        if got.rejected is not None:
            status, error = got.rejected
            return errors.answer(status, f"model {model}: its instance refused: {error}",
                                 "instance_refused")  # fmt: skip
        return web.json_response(await self._state_of(model))

    async def follow(self, request: web.Request) -> web.StreamResponse:
        """An upgrade's switch (ctl/upgrade.py): ask the instance where its engine serves
        now, send the model's new requests there, and answer once none of the gateway's
        requests is left on the engine it served before (or after `timeout` seconds)."""
        model = await self._model(request, {"timeout": float}, required=True)
        if not isinstance(model, str):
            return model  # type: ignore[return-value]
        timeout = (request.get("body") or {}).get("timeout", 60.0)
        if not 0 < timeout <= 3600:
            return errors.answer(400, "timeout must be in (0, 3600] seconds", "invalid_request")
        seen = await self.instances.state(model)
        old = self.catalogue.follow(model, seen)
        route = self.catalogue.routes[model]
        started = time.monotonic()
        left = self.catalogue.using.get(old, 0) if old is not None else 0
        while left and time.monotonic() - started < timeout:
            await asyncio.sleep(0.02)
            left = self.catalogue.using.get(old, 0) if old is not None else 0
        if old is not None:
            self.log.info("model moved", model=model, base=route.base, previous=old,
                          left_in_flight=left)  # fmt: skip
        return web.json_response({"model": model, "state": seen.state, "base": route.base,
                                  "previous": old, "in_flight_left": left,
                                  "waited": round(time.monotonic() - started, 3)})  # fmt: skip
