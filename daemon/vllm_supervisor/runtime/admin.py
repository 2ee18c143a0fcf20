"""The admin socket: aiohttp on a Unix socket, JSON in and out, versioned paths (/v1/...).

Thin by design: it parses, checks the peer, and posts events to the supervisor; it never
touches the engine process. Every peer is checked with SO_PEERCRED (unix(7)): root, the
service's own uid and members of the admin group pass, anyone else gets 403 and is logged.
aiohttp's UnixSite does not unlink its socket file on cleanup, so stop() does
(docs/systemd-behaviour.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from vllm_supervisor.host.peers import peer_allowed, peer_credentials
from vllm_supervisor.runtime import socketdir
from vllm_supervisor.runtime.admin_http import (
    MAX_BODY,
    AdminPort,
    BadRequest,
    answers,
    gone,
    json_response,
)
from vllm_supervisor.runtime.admin_orders import Orders
from vllm_supervisor.runtime.admin_upgrade import Upgrades
from vllm_supervisor.runtime.metrics import engine_key_metrics, supervisor_metrics
from vllm_supervisor.runtime.states import State
from vllm_supervisor.runtime.status import as_dict

DEFAULT_GROUP = "vllm-admin"


class AlreadyServed(Exception):
    """A live supervisor answers on the socket: two must never own one model."""


class Admin:
    def __init__(
        self,
        sup: AdminPort,
        path: Path,
        group: str,
        log: Any,
        config: Callable[[], dict[str, Any]],
        engine_metrics: Callable[[], Awaitable[str | None]],
        gpu_memory: Callable[[int], dict[str, int] | None] = lambda pgid: None,
        group_view: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.sup, self.path, self.log = sup, path, log
        self.config, self.engine_metrics = config, engine_metrics
        self.gpu_memory = gpu_memory
        self.group_view = group_view  # a multi-node model's ranks (runtime/nodelink.py)
        try:
            self.gid: int | None = grp.getgrnam(group).gr_gid
        except KeyError:
            self.gid = None  # no such group here: only root and our own uid get in
        self.group = group
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        self.orders = Orders(sup, self._state)
        self.upgrades = Upgrades(sup, self._state)

    # ---- life ---------------------------------------------------------------------------
    async def start(self) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        socketdir.check_owner(folder)
        os.chmod(folder, 0o750)
        socketdir.share(folder, self.gid, self.group, self.log)
        if self.path.exists() or self.path.is_symlink():
            if await answers(self.path):
                raise AlreadyServed(f"another vllm-supervisor answers on {self.path}")
            self.path.unlink()  # stale: its owner died without cleaning up
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        app.add_routes(
            [
                web.get("/v1/state", self.state),
                web.post("/v1/activate", self.orders.activate),
                web.post("/v1/deactivate", self.orders.deactivate),
                web.post("/v1/restart", self.orders.restart),
                web.post("/v1/reload", self.orders.reload),
                web.get("/v1/logs", self.logs),
                web.get("/v1/metrics", self.metrics),
                web.get("/v1/config", self.show_config),
                web.get("/v1/engine-key", self.engine_key),
                *self.upgrades.routes(),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.path)).start()
        os.chmod(self.path, 0o660)
        socketdir.share(self.path, self.gid, self.group, self.log)

    async def stop(self) -> None:
        for task in list(self._streams):  # followers and waiters: the service is going away
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # ---- every request ------------------------------------------------------------------
    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        sock = request.transport.get_extra_info("socket") if request.transport else None
        pid, uid, gid = peer_credentials(sock) if sock is not None else (0, -1, -1)
        if not peer_allowed(pid, uid, gid, self.gid):
            self.log.warning(
                "admin request refused",
                model=self.sup.name,
                peer_pid=pid,
                peer_uid=uid,
                path=request.path,
            )
            return json_response(
                {"error": f"permission denied: add your user to group {self.group}"}, 403
            )
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            paths = sorted(
                {
                    r.resource.canonical
                    for r in request.app.router.routes()
                    if r.resource is not None
                }
            )
            return json_response(
                {"error": f"unknown path {request.path}; see {', '.join(paths)}"}, 404
            )
        except web.HTTPMethodNotAllowed as exc:
            return json_response(
                {
                    "error": f"{request.method} not allowed on {request.path}; use "
                    f"{', '.join(sorted(exc.allowed_methods))}"
                },
                405,
            )
        except web.HTTPRequestEntityTooLarge:
            return json_response({"error": f"request body over {MAX_BODY} bytes"}, 413)
        finally:
            if task is not None:
                self._streams.discard(task)

    # ---- operations ---------------------------------------------------------------------
    async def state(self, request: web.Request) -> web.Response:
        return json_response(self._state())

    async def logs(self, request: web.Request) -> web.StreamResponse:
        try:
            n = int(request.query.get("n", "100"))
        except ValueError:
            raise BadRequest("n must be a whole number") from None
        if n < 0:
            raise BadRequest("n must be >= 0")
        follow = request.query.get("follow", "0") in ("1", "true", "yes")
        tail = self.sup.log_tail(n)
        if not follow:
            return web.Response(text="".join(ln + "\n" for ln in tail), content_type="text/plain")
        lines_q = self.sup.follow_log()
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
            await resp.prepare(request)
            await resp.write("".join(ln + "\n" for ln in tail).encode())
            # A silent engine never writes, so a client that left is noticed by polling the
            # transport: a handler parked forever would also hold up shutdown.
            while not gone(request):
                try:
                    lines = await asyncio.wait_for(lines_q.get(), timeout=1.0)
                except TimeoutError:
                    continue
                await resp.write("".join(ln + "\n" for ln in lines).encode())
            return resp
        finally:
            self.sup.unfollow_log(lines_q)

    async def metrics(self, request: web.Request) -> web.Response:
        text = supervisor_metrics(self._state())
        if self.sup.state in (State.READY, State.DRAINING):
            engine = await self.engine_metrics()
            if engine:
                text += engine_key_metrics(engine)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def show_config(self, request: web.Request) -> web.Response:
        return json_response(self.config())

    async def engine_key(self, request: web.Request) -> web.Response:
        """The engine's API key, for the host gateway, which adds it to what it forwards (a
        key handed over by LoadCredential= is readable by this unit only). Root and this
        service's own user only: they can read it from the engine's environment anyway;
        vllm-admin members get 403 like anyone else."""
        sock = request.transport.get_extra_info("socket") if request.transport else None
        _, uid, _ = peer_credentials(sock) if sock is not None else (0, -1, -1)
        if uid not in (0, os.getuid()):
            return json_response({"error": "the engine key is for the service's user only"}, 403)
        return json_response({"key": self.sup.engine_key()})

    def _state(self) -> dict[str, Any]:
        """The supervisor's Status, plus the GPU memory its engine's group holds now (NVML;
        None without an NVIDIA GPU or without an engine)."""
        state = as_dict(self.sup.status())
        pid = state.get("pid")
        state["gpu_memory"] = self.gpu_memory(pid) if isinstance(pid, int) else None
        if self.group_view is not None:
            state["nodes"] = self.group_view()
        return state
