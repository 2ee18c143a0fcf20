"""models.yaml (+ models.d/*.yaml) -> frozen, typed model configs.

Every problem names file, line and key, and all of them are collected before raising, so an
operator fixes a file in one pass. This module reads only YAML: checks that need the host
(paths, engine venv, HF cache, installed vLLM version) live in preflight/model_checks.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vllm_supervisor.config import key_table, model_keys
from vllm_supervisor.config.gateway_keys import GatewaySettings, parse_gateway
from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.problems import ConfigInvalid, Problem, ProblemScope, did_you_mean
from vllm_supervisor.config.yamltree import YNode, load
from vllm_supervisor.host import access
from vllm_supervisor.host import files as bounded

DEFAULT_CONFIG_DIR = Path("/etc/vllm-supervisor")


def default_config_dir() -> Path:
    return Path(os.environ.get("VSUP_CONFIG_DIR") or DEFAULT_CONFIG_DIR)


# systemd instance names: `%I` would turn '-' into '/', so units use `%i` and the name must be
# a plain slug (docs/systemd-behaviour.md).
SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

TOP_KEYS = ("defaults", "models", "gateway")


@dataclass(frozen=True)
class Registry:
    config_dir: Path
    files: tuple[str, ...]
    models: dict[str, ModelConfig]
    warnings: tuple[Problem, ...] = ()
    gateway: GatewaySettings = field(default_factory=GatewaySettings)


def load_registry(config_dir: Path = DEFAULT_CONFIG_DIR) -> Registry:
    """Load and validate every model; raise ConfigInvalid listing all errors."""
    problems: list[Problem] = []
    main = config_dir / "models.yaml"
    files = [main, *sorted((config_dir / "models.d").glob("*.yaml"))]
    if not main.is_file():
        why = _unreadable(main) or (
            f"is {bounded.kind(main.stat().st_mode)}, not a regular file"
            if main.exists()
            else "not found (create it, or pass --config-dir; see etc/ for an example)"
        )
        raise ConfigInvalid([Problem(str(main), 0, "", why)])
    defaults: dict[str, YNode] = {}
    gateway, gateway_at = GatewaySettings(), None
    raw_models: dict[str, tuple[YNode, str, int]] = {}
    for path in files:
        root = _read(path, problems)
        if root is None:
            continue
        if root.mapping is None:
            problems.append(
                Problem(
                    str(path), root.line, "", "expected a mapping with 'models:' at the top level"
                )
            )
            continue
        for key, node in root.mapping.items():
            line = root.key_lines[key]
            if key not in TOP_KEYS:
                problems.append(
                    Problem(
                        str(path), line, key, "unknown top-level key" + did_you_mean(key, TOP_KEYS)
                    )
                )
            elif key in ("defaults", "gateway") and path != main:
                problems.append(
                    Problem(
                        str(path),
                        line,
                        key,
                        f"{key} belong{'s' if key == 'gateway' else ''} in models.yaml "
                        "only, so one file decides " + ("it" if key == "gateway" else "them"),
                    )
                )
            elif key == "gateway":
                gateway = parse_gateway(node, problems)
                listen = node.mapping.get("listen") if node.mapping else None
                gateway_at = (str(path), listen.line if listen else line)
            elif key == "defaults":
                defaults = _defaults(node, problems)
            else:
                _collect_models(node, raw_models, problems)
    models: dict[str, ModelConfig] = {}
    for name, (node, file, line) in raw_models.items():
        cfg = model_keys.build_model(
            ProblemScope(file, f"models.{name}", problems), name, line, node, defaults
        )
        if cfg is not None:
            models[name] = cfg
    _cross_checks(models, problems)
    if gateway_at is not None:  # a host that runs no gateway may use its default port
        _gateway_port(gateway, gateway_at, models, problems)
    reg = Registry(
        config_dir,
        tuple(str(f) for f in files),
        models,
        tuple(p for p in problems if p.severity == "warning"),
        gateway,
    )
    if any(p.severity == "error" for p in problems):
        raise RegistryInvalid(problems, reg)
    return reg


class RegistryInvalid(ConfigInvalid):
    """ConfigInvalid, with the models that parsed on their own (PARTIAL): `check` goes on to
    check those against the host, so one run lists everything (issue 20: a duplicate port
    hid every per-model problem until it was fixed). Nothing may serve from PARTIAL."""

    def __init__(self, problems: list[Problem], partial: Registry) -> None:
        super().__init__(problems)
        self.partial = partial


def _read(path: Path, problems: list[Problem]) -> YNode | None:
    try:
        text = bounded.read_text(path, bounded.CONFIG_CAP)
    except bounded.Refused as exc:
        problems.append(Problem(str(path), 0, "", f"cannot read: it {exc.why}"))
        return None
    except PermissionError:
        problems.append(
            Problem(str(path), 0, "", _unreadable(path) or "cannot read it: permission denied")
        )
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(path), 0, "", f"cannot read: {exc}"))
        return None
    root, found = load(text, str(path))
    problems.extend(found)
    return root


def _unreadable(path: Path) -> str | None:
    """What keeps this process from reading PATH (the folder that cannot be entered, or the
    file's mode) with the fix, or None when nothing does or the file is simply absent."""
    denied = access.check([access.Need(path, access.R, "", "the config file")]) or []
    return denied[0].message(access.Identity.current().name) if denied and denied[0].at else None


def _defaults(node: YNode, problems: list[Problem]) -> dict[str, YNode]:
    if node.mapping is None:
        problems.append(Problem(node.file, node.line, "defaults", "expected a mapping"))
        return {}
    out: dict[str, YNode] = {}
    for key, value in node.mapping.items():
        line = node.key_lines[key]
        if key in key_table.PER_MODEL_ONLY:
            problems.append(
                Problem(
                    node.file, line, f"defaults.{key}", "is per model and cannot have a default"
                )
            )
        elif key not in key_table.BY_NAME:
            problems.append(
                Problem(
                    node.file,
                    line,
                    f"defaults.{key}",
                    "unknown key" + did_you_mean(key, key_table.BY_NAME),
                )
            )
        else:
            out[key] = value
    return out


def _collect_models(
    node: YNode, out: dict[str, tuple[YNode, str, int]], problems: list[Problem]
) -> None:
    if node.mapping is None:
        if node.scalar is not None or node.sequence is not None:
            problems.append(
                Problem(
                    node.file, node.line, "models", "expected a mapping of model name -> settings"
                )
            )
        return
    for name, body in node.mapping.items():
        line = node.key_lines[name]
        if not SLUG.match(name):
            problems.append(
                Problem(
                    node.file,
                    line,
                    f"models.{name}",
                    "model names are systemd instance names: lowercase "
                    "letters, digits, '.', '_', '-', at most 64, no '/'",
                )
            )
            continue
        if name in out:
            first = out[name]
            problems.append(
                Problem(
                    node.file,
                    line,
                    f"models.{name}",
                    f"defined twice (first in {first[1]}:{first[2]})",
                )
            )
            continue
        out[name] = (body, node.file, line)


def _cross_checks(models: dict[str, ModelConfig], problems: list[Problem]) -> None:
    """Ports and names must be unique across models: two engines cannot share a port, and a
    router given two models under one name would send traffic to either. The members of a
    gpu_group must name the same GPUs: the group means "these share those GPUs"."""
    groups: dict[str, ModelConfig] = {}
    for cfg in models.values():
        if cfg.gpu_group is None:
            continue
        first = groups.setdefault(cfg.gpu_group, cfg)
        if first.gpus != cfg.gpus:
            file, line = cfg.locate("gpu_group")
            problems.append(
                Problem(
                    file,
                    line,
                    f"models.{cfg.name}.gpu_group",
                    f"members of gpu_group '{cfg.gpu_group}' must set the same gpus: "
                    f"'{first.name}' has {_gpus(first)}, '{cfg.name}' has {_gpus(cfg)}",
                )
            )
    ports: dict[tuple[str, int], str] = {}
    names: dict[str, str] = {}
    for cfg in models.values():
        file, line = cfg.locate("port")
        if not cfg.port:
            continue  # invalid port: already reported
        key = (cfg.host, cfg.port)
        wildcard = [k for k in ports if k[1] == cfg.port and "0.0.0.0" in (k[0], cfg.host)]
        clash = ports.get(key) or (ports[wildcard[0]] if wildcard else None)
        if clash:
            problems.append(
                Problem(
                    file,
                    line,
                    f"models.{cfg.name}.port",
                    f"port {cfg.port} is already used by model '{clash}'",
                )
            )
        else:
            ports[key] = cfg.name
        for n in cfg.served_model_names + cfg.aliases:
            owner = names.get(n)
            if owner and owner != cfg.name:
                f2, l2 = cfg.locate("served_model_name")
                problems.append(
                    Problem(
                        f2,
                        l2,
                        f"models.{cfg.name}.served_model_name",
                        f"name '{n}' is already served by model '{owner}'",
                    )
                )
            names.setdefault(n, cfg.name)


def _gateway_port(
    gateway: GatewaySettings,
    at: tuple[str, int],
    models: dict[str, ModelConfig],
    problems: list[Problem],
) -> None:
    """The gateway listens beside the engines: it cannot take one's port. Only checked with a
    gateway: block: an invalid listen is reported already, and the default is then used."""
    for cfg in models.values():
        same_host = gateway.host == cfg.host or "0.0.0.0" in (gateway.host, cfg.host)
        if cfg.port == gateway.port and same_host:
            problems.append(
                Problem(
                    at[0],
                    at[1],
                    "gateway.listen",
                    f"port {gateway.port} is model '{cfg.name}''s port",
                )
            )


def _gpus(cfg: ModelConfig) -> str:
    return "none (all visible)" if cfg.gpus is None else str(list(cfg.gpus))
