"""`vllmctl export litellm`: a LiteLLM router model_list for the configured models.

Model names are the served names (and aliases), exactly what vLLM answers to, so the router
and the engines cannot disagree: a router whose names differed from vLLM's broke one of the
deployments this project learned from. Several --host values give one entry per host and
name; LiteLLM then balances across them. API keys are never written: models with an
api_key_file get `os.environ/VLLM_API_KEY_<MODEL>` for the router's environment.

With --via-gateway every entry points at the host gateway (`gateway.listen`) instead of the
model's own port: the story for outgrowing one host is LiteLLM's router spreading requests
over hosts, and each host's gateway placing models on its GPUs. An export that names a host
for an address only that host can reach (a loopback engine or gateway) is warned about:
nothing elsewhere could use it.
"""

from __future__ import annotations

import re
from typing import Any

from vllm_supervisor.config.gateway_keys import GatewaySettings
from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.model_keys import loopback
from vllm_supervisor.host.locations import http_base, local_host
from vllm_supervisor.preflight.gpu_fit import model_card

# LiteLLM's provider for vLLM's OpenAI-compatible server.
PROVIDER = "hosted_vllm"


def key_env(model: str) -> str:
    return "VLLM_API_KEY_" + re.sub(r"[^A-Za-z0-9]", "_", model).upper()


def model_list(
    models: dict[str, ModelConfig], hosts: list[str], gateway: GatewaySettings | None = None
) -> list[dict[str, Any]]:
    """GATEWAY: point every entry at that host gateway rather than at the model's port."""
    out: list[dict[str, Any]] = []
    for name in sorted(models):
        cfg = models[name]
        if cfg.deprecated:
            continue
        served = cfg.served_model_names[0]
        own = local_host(gateway.host if gateway else cfg.host)
        # What LiteLLM's router and its clients route on (litellm's model_info keys).
        card = model_card(cfg)
        facts: dict[str, Any] = {
            "supports_function_calling": card["tool_calling"],
            "supports_vision": card["vision"],
        }
        if card["max_model_len"] is not None:
            facts["max_input_tokens"] = facts["max_tokens"] = card["max_model_len"]
        # A multi-node model's API is on rank 0's host alone (docs/multi-node.md): the first
        # host named, where `export` is run on rank 0 (unreachable() says so).
        for host in (hosts or [own])[: 1 if cfg.nodes is not None else None]:
            port = gateway.port if gateway else cfg.port
            base = http_base(host, port) + "/v1"
            # The gateway adds each engine's key itself: clients never hold engine keys.
            keyed = cfg.api_key_file is not None and gateway is None
            for router_name in (*cfg.served_model_names, *cfg.aliases):
                params: dict[str, Any] = {
                    "model": f"{PROVIDER}/{served}",
                    "api_base": base,
                    "api_key": f"os.environ/{key_env(name)}" if keyed else "none",
                }
                out.append(
                    {
                        "model_name": router_name,
                        "litellm_params": params,
                        "model_info": {
                            "id": f"{name}@{host}:{router_name}",
                            "description": cfg.description,
                            "supervisor_model": name,
                            **facts,
                        },
                    }
                )
    return out


def unreachable(
    models: dict[str, ModelConfig], hosts: list[str], gateway: GatewaySettings | None
) -> list[str]:
    """Warnings for entries no other host can reach: --host names a machine, but what the
    entry points at listens on loopback there."""
    multi = [
        f"model {name} is multi-node: exported for {hosts[0]} only, which must be its rank 0 "
        f"({cfg.nodes.head} on the cluster network); its other hosts serve no API"
        for name, cfg in sorted(models.items())
        if cfg.nodes is not None and len(hosts) > 1 and not cfg.deprecated
    ]
    return multi + _loopback_warnings(models, hosts, gateway)


def _loopback_warnings(
    models: dict[str, ModelConfig], hosts: list[str], gateway: GatewaySettings | None
) -> list[str]:
    if all(loopback(h) for h in hosts):  # none, or this host's own view
        return []
    if gateway is not None:
        if not loopback(gateway.host):
            return []
        return [
            f"the gateway listens on {gateway.listen}: {hosts[0]}:{gateway.port} is unreachable "
            "from other hosts; set gateway.listen to a reachable address (e.g. 0.0.0.0:"
            f"{gateway.port}) behind a firewall"
        ]
    return [
        f"model {name} binds to {cfg.host}: {hosts[0]}:{cfg.port} is unreachable from other "
        "hosts; export --via-gateway (one reachable endpoint per host) instead"
        for name, cfg in sorted(models.items())
        if not cfg.deprecated and loopback(cfg.host)
    ]


def render_yaml(entries: list[dict[str, Any]]) -> str:
    """LiteLLM's config.yaml form, written by PyYAML's own dumper so that no name or
    description can break the file."""
    import yaml  # vllmctl imports it only for this command

    head = "# Generated by `vllmctl export litellm`; model_name = the name vLLM serves.\n"
    return head + yaml.safe_dump({"model_list": entries}, sort_keys=False, allow_unicode=True)
