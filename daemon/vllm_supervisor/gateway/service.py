"""`vllm-supervisor gateway`: load the config, serve the OpenAI front door on uvloop, tell
systemd READY once it listens, and stop on SIGTERM without touching any instance (restarting
the gateway never disturbs a serving engine: the engines are the instances' children)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from vllm_supervisor import exitcodes
from vllm_supervisor.config.gateway_keys import split_listen
from vllm_supervisor.config.problems import ConfigInvalid
from vllm_supervisor.config.registry import Registry, default_config_dir, load_registry
from vllm_supervisor.gateway.admin import Admin
from vllm_supervisor.gateway.catalogue import Catalogue, EngineKeys
from vllm_supervisor.gateway.engine_http import EnginePool
from vllm_supervisor.gateway.front import Front
from vllm_supervisor.gateway.http_server import Runner
from vllm_supervisor.gateway.keys import Keys
from vllm_supervisor.gateway.metrics import GatewayMetrics
from vllm_supervisor.gateway.proxy import Proxy
from vllm_supervisor.gateway.router import Router
from vllm_supervisor.host import locations
from vllm_supervisor.preflight import nodes
from vllm_supervisor.protocol.admin import Instances
from vllm_supervisor.systemd import logs
from vllm_supervisor.systemd.notify import Notifier

STOP_GRACE = 30.0  # seconds in-flight requests get to finish on SIGTERM


def run(
    config_dir: Path | None,
    listen: str | None,
    runtime_dir: Path | None,
    admin_socket: Path | None = None,
) -> int:
    config_dir = config_dir or default_config_dir()
    try:
        reg = load_registry(config_dir)
        host, port = split_listen(listen or reg.gateway.listen)
    except ConfigInvalid as exc:
        for problem in exc.problems:
            print(f"<3>{problem}", file=sys.stderr)
        print("<3>vllm-supervisor gateway: config invalid; nothing started", file=sys.stderr)
        return exitcodes.CONFIG
    except ValueError:
        print(
            f"<3>vllm-supervisor gateway: --listen {listen!r}: expected HOST:PORT", file=sys.stderr
        )
        return exitcodes.USAGE
    logs.setup()
    # A multi-node model is served on its rank 0's host only (docs/multi-node.md): a gateway
    # elsewhere would route to a headless rank, which has no HTTP server.
    away = {name: why for name, cfg in reg.models.items() if (why := nodes.api_elsewhere(cfg))}
    for name, why in away.items():
        logs.get().info("not routed here", model=name, why=why)
    reg = replace(reg, models={n: c for n, c in reg.models.items() if n not in away})
    bases = [runtime_dir] if runtime_dir else locations.runtime_dirs()
    sock = admin_socket or locations.gateway_sockets()[0]
    return uvloop.run(serve(reg, host, port, bases, sock))


@dataclass
class Gateway:
    """The gateway's parts, wired: the router (its owner task is the caller's to run), the
    admin, and the HTTP app every client reaches."""

    app: web.Application
    router: Router
    admin: Admin
    keys: Keys | None
    client_keys: Keys | None


def build(reg: Registry, instances: Any, engines: EnginePool, log: Any) -> Gateway:
    catalogue = Catalogue(reg)
    gw = reg.gateway
    router = Router(catalogue.policies, instances, time.monotonic, gw.load_timeout, log=log)
    router.on_seen = catalogue.follow
    # The body is read by gateway/body.py, bounded by max_body; aiohttp's own cap applies
    # only to request.read(), which the admin paths use.
    app = web.Application(client_max_size=gw.max_body + 1)
    metrics = GatewayMetrics(router, instances, list(catalogue.routes))
    keys = Keys(gw.admin_keys_file) if gw.admin_keys_file else None
    client_keys = Keys(gw.api_keys_file) if gw.api_keys_file else None
    engine_keys = EngineKeys(catalogue, instances, time.monotonic)
    admin = Admin(catalogue, router, instances, log, gw.load_timeout, keys)
    proxy = Proxy(
        catalogue, router, engines, gw.load_timeout, gw.max_body, metrics, engine_keys, log
    )
    Front(
        catalogue, router, proxy.forward, log, metrics, client_keys,
        # the admin paths on the HTTP port only behind admin keys
        admin.handlers(guard=True) if keys is not None else None,
        gw.load_timeout,
    ).routes(app)  # fmt: skip
    return Gateway(app, router, admin, keys, client_keys)


async def serve(reg: Registry, host: str, port: int, bases: list[Path], sock: Path) -> int:
    log = logs.get()
    notifier = Notifier()
    instances = Instances(bases)
    # No total timeout: a long generation streams for as long as it takes (a model's
    # request_timeout bounds it); connecting is bounded (engine_http.CONNECT_TIMEOUT). No cap
    # on connections: concurrency is the router's to cap.
    engines = EnginePool()
    try:
        parts = build(reg, instances, engines, log)
        router, admin, keys, client_keys = parts.router, parts.admin, parts.keys, parts.client_keys
        owner = asyncio.ensure_future(router.run())
        models = list(router.slots)
        # handler_cancellation: a client that goes away cancels its handler, so a queued
        # request leaves the queue (router.acquire) and a relay stops at once.
        runner = Runner(
            parts.app, log, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, shutdown_timeout=STOP_GRACE).start()
            await admin.start(sock)
        except OSError as exc:
            # A file name in the error: the admin socket's folder, not the port.
            fix = (
                locations.xdg_runtime_fix(sock, "VSUP_GATEWAY_SOCKET")
                or "set VSUP_GATEWAY_SOCKET (or --admin-socket) to a path of your own"
                if exc.filename
                else None
            )
            log.error("cannot listen; nothing started", listen=f"{host}:{port}",
                      socket=str(sock), error=str(exc), fix=fix)  # fmt: skip
            await runner.cleanup()
            owner.cancel()
            return exitcodes.FAILED
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def reread() -> None:  # SIGHUP: rotated key files need no restart
            for name, k in (("admin", keys), ("client", client_keys)):
                if k is not None:
                    log.info("keys re-read", which=name, keys=k.load())

        loop.add_signal_handler(signal.SIGHUP, reread)
        log.info("gateway listening", listen=f"{host}:{port}", admin=str(sock),
                 models=", ".join(models) or "none")  # fmt: skip
        notifier.ready(f"listening on {host}:{port} for {len(models)} model(s)")
        await stop.wait()
        notifier.stopping("stopping: no new requests; in-flight ones may finish")
        log.info("gateway stopping")
        await admin.stop()
        await runner.cleanup()
        owner.cancel()
        await asyncio.gather(owner, return_exceptions=True)
    finally:
        engines.close()
    return exitcodes.OK
