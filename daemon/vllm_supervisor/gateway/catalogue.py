"""What the gateway knows of the configured models: the names clients use (served names and
aliases), where each engine listens, its key, and its routing policy (the per-model keys over
the gateway: block)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vllm_supervisor.config.gateway_keys import GatewaySettings
from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.registry import Registry
from vllm_supervisor.gateway.slots import Policy
from vllm_supervisor.host.locations import http_base, local_host


@dataclass(frozen=True)
class Route:
    model: str  # the instance (systemd) name
    names: tuple[str, ...]  # served names, then aliases
    base: str  # http://host:port of the engine, as this host reaches it
    key_file: Path | None
    deprecated: str | None


def policy(cfg: ModelConfig, gw: GatewaySettings) -> Policy:
    m = cfg.gateway
    return Policy(
        on_demand=m.on_demand,
        ttl=gw.ttl if m.ttl is None else m.ttl,
        max_queue=gw.max_queue if m.max_queue is None else m.max_queue,
        concurrency=gw.concurrency if m.concurrency is None else m.concurrency,
        group=cfg.gpu_group,
    )


class Catalogue:
    def __init__(self, reg: Registry) -> None:
        self.routes = {
            name: Route(
                name,
                cfg.served_model_names + cfg.aliases,
                http_base(local_host(cfg.host), cfg.port),
                cfg.api_key_file,
                cfg.deprecated,
            )
            for name, cfg in reg.models.items()
        }
        self.policies = {name: policy(cfg, reg.gateway) for name, cfg in reg.models.items()}
        self.by_name = {n: r for r in self.routes.values() for n in r.names}

    def find(self, name: str) -> Route | None:
        return self.by_name.get(name)

    def known(self) -> list[str]:
        return sorted(n for r in self.routes.values() if not r.deprecated for n in r.names)

    def engine_key(self, route: Route) -> str | None:
        """The engine's key, read at each request so a rotated file needs no restart; None
        when there is none or it cannot be read (the engine then answers 401 itself)."""
        if route.key_file is None:
            return None
        try:
            return route.key_file.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None
