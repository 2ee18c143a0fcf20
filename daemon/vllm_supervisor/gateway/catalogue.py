"""What the gateway knows of the configured models: the names clients use (served names and
aliases), where each engine listens, its key, and its routing policy (the per-model keys over
the gateway: block)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vllm_supervisor.config.gateway_keys import GatewaySettings
from vllm_supervisor.config.model import ModelConfig, ToolSupport
from vllm_supervisor.config.registry import Registry
from vllm_supervisor.gateway.slots import Policy
from vllm_supervisor.host import files
from vllm_supervisor.host.locations import http_base, local_host
from vllm_supervisor.preflight.gpu_fit import model_card
from vllm_supervisor.protocol.admin import Seen
from vllm_supervisor.protocol.states import State


@dataclass(frozen=True)
class Route:
    model: str  # the instance (systemd) name
    names: tuple[str, ...]  # served names, then aliases
    base: str  # http://host:port of the engine, as this host reaches it
    key_file: Path | None
    deprecated: str | None
    chat_fallback: str = "off"  # off | on_failure | always (gateway/chat.py)
    served: str = ""  # the name the engine answers to first (an alias is swapped for it)
    aliases: tuple[str, ...] = ()
    tool_support: ToolSupport = "none"  # gateway/tools.py
    unsupported_tools: str = "drop"  # drop | refuse
    load_progress: bool = True  # gateway/progress.py
    request_timeout: float = 0.0  # 0: none
    card: dict[str, object] = field(default_factory=dict)  # preflight/gpu_fit.model_card


def policy(cfg: ModelConfig, gw: GatewaySettings) -> Policy:
    m = cfg.gateway
    return Policy(
        on_demand=m.on_demand,
        ttl=gw.ttl if m.ttl is None else m.ttl,
        max_queue=gw.max_queue if m.max_queue is None else m.max_queue,
        concurrency=gw.concurrency if m.concurrency is None else m.concurrency,
        group=cfg.gpu_group,
    )


def route(cfg: ModelConfig, gw: GatewaySettings) -> Route:
    m = cfg.gateway
    return Route(
        cfg.name,
        cfg.served_model_names + cfg.aliases,
        http_base(local_host(cfg.host), cfg.port),
        cfg.api_key_file,
        cfg.deprecated,
        m.chat_fallback,
        served=cfg.served_model_names[0],
        aliases=cfg.aliases,
        tool_support=cfg.tool_support,
        unsupported_tools=m.unsupported_tools or gw.unsupported_tools,
        load_progress=gw.load_progress if m.load_progress is None else m.load_progress,
        request_timeout=gw.request_timeout if m.request_timeout is None else m.request_timeout,
        card=model_card(cfg),
    )


class Catalogue:
    def __init__(self, reg: Registry) -> None:
        self.routes = {name: route(cfg, reg.gateway) for name, cfg in reg.models.items()}
        self.policies = {name: policy(cfg, reg.gateway) for name, cfg in reg.models.items()}
        self.by_name = {n: r for r in self.routes.values() for n in r.names}
        # Requests under way per engine base: an upgrade's switch waits for the old base's
        # to end before its engine is stopped (gateway/admin.py, /admin/follow).
        self.using: dict[str, int] = {}

    def aim(self, model: str, host: str, port: int) -> str | None:
        """Send MODEL's new requests to HOST:PORT (where its instance says its engine serves:
        an upgrade's candidate, promoted). Requests under way keep their Route, so their
        base. The base replaced, or None when it was already this one."""
        old = self.routes.get(model)
        base = http_base(local_host(host), port)
        if old is None or old.base == base:
            return None
        new = self.routes[model] = replace(old, base=base)
        self.by_name.update({n: new for n in new.names})
        return old.base

    def follow(self, model: str, seen: Seen) -> str | None:
        """An instance's answer (router.py, every Outcome): a ready one says its port."""
        host, port = seen.extra.get("host"), seen.extra.get("port")
        if seen.state != State.READY or not isinstance(host, str) or type(port) is not int:
            return None
        return self.aim(model, host, port)

    def find(self, name: str) -> Route | None:
        return self.by_name.get(name)

    def known(self) -> list[str]:
        return sorted(n for r in self.routes.values() if not r.deprecated for n in r.names)

    def key_from_file(self, route: Route) -> str | None:
        """The engine's key from its api_key_file, where this process can read it."""
        if route.key_file is None:
            return None
        try:
            return files.read_text(route.key_file, files.SECRET_CAP).strip() or None
        except (OSError, ValueError):
            return None


class EngineKeys:
    """Each engine's API key, asked of its instance (`GET /v1/engine-key`: the instance holds
    it even when systemd's LoadCredential= handed it over, which the gateway could not read)
    and kept briefly; an engine's 401 makes the proxy forget it and ask again at once
    (proxy.open), so a rotated key costs no client a 401. An instance that cannot say (not
    running, an older version) leaves the api_key_file to read."""

    KEEP = 10.0

    def __init__(self, catalogue: Catalogue, instances: Any, clock: Callable[[], float]) -> None:
        self.catalogue, self.instances, self.clock = catalogue, instances, clock
        self._known: dict[str, tuple[float, str | None]] = {}

    async def get(self, route: Route) -> str | None:
        if route.key_file is None:
            return None
        now = self.clock()
        cached = self._known.get(route.model)
        if cached is not None and now - cached[0] < self.KEEP:
            return cached[1]
        got = await self.instances.call(route.model, "GET", "/v1/engine-key", None, 3.0)
        if got is not None and got[0] == 200 and got[1]:
            key = got[1][-1].get("key")
            value = key if isinstance(key, str) and key else None
        else:
            value = self.catalogue.key_from_file(route)
        self._known[route.model] = (now, value)
        return value

    def forget(self, model: str) -> None:
        """The engine refused the key (401): ask again next time."""
        self._known.pop(model, None)
