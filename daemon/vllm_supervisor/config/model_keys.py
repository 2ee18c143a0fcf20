"""A model's config from its keys (the table: config/key_table.py), and the rules that span
several keys."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from vllm_supervisor.config import gateway_keys, key_table, nodes_keys, settings
from vllm_supervisor.config import key_parsers as p
from vllm_supervisor.config.key_table import CAPABILITIES, MODEL_KEYS, PER_MODEL_ONLY, TOOL_SUPPORT
from vllm_supervisor.config.limits import LOOPBACK
from vllm_supervisor.config.model import ModelConfig, ToolSupport, default_venv
from vllm_supervisor.config.problems import Problem, ProblemScope, did_you_mean
from vllm_supervisor.config.yamltree import YNode
from vllm_supervisor.engine import flags
from vllm_supervisor.engine import options as engine_options
from vllm_supervisor.engine.options import OptionValue

__all__ = ["CAPABILITIES", "MODEL_KEYS", "PER_MODEL_ONLY", "TOOL_SUPPORT", "build_model"]


def build_model(
    ctx: ProblemScope, name: str, line: int, body: YNode, defaults: dict[str, YNode]
) -> ModelConfig | None:
    if body.mapping is None:
        ctx.problems.append(Problem(body.file, line, ctx.prefix, "expected a mapping of settings"))
        return None
    own: dict[str, YNode] = {}
    for key, node in body.mapping.items():
        if key in key_table.BY_NAME:  # read at each call: the table is the one place
            own[key] = node
        else:
            known = key_table.BY_NAME
            ctx.err(node, key, "unknown key" + did_you_mean(key, known), body.key_lines[key])
    merged = {**defaults, **own}
    where: dict[str, tuple[str, int]] = {k: (n.file, n.line) for k, n in merged.items()}
    # The keys the table parses (key_table.ModelKey.parse): the value, or its fallback.
    v: dict[str, object] = {}
    for mk in key_table.KEYS:
        if mk.parse is None:
            continue
        found = merged.get(mk.name)
        if found is None:
            if mk.required:
                ctx.problems.append(
                    Problem(body.file, line, f"{ctx.prefix}.{mk.name}", mk.required)
                )
            v[mk.name] = mk.fallback()
            continue
        got = mk.parse(ctx, found, mk.name)
        v[mk.name] = got if got is not None else mk.fallback()
    model, served, port, deprecated = v["model"], v["served_model_name"], v["port"], v["deprecated"]
    cfg = ModelConfig(
        name=name,
        file=body.file,
        line=line,
        model=p.local_path(model, Path(body.file).parent) if isinstance(model, str) else "",
        served_model_names=served if isinstance(served, tuple) else (name,),
        host=str(v["host"]),
        port=port if isinstance(port, int) else 0,
        venv=_path(v["venv"]) or default_venv(),
        gpus=p.gpus(ctx, merged.get("gpus")),
        gpu_group=group if isinstance(group := v["gpu_group"], str) else None,
        env=_env(ctx, defaults.get("env"), own.get("env")),
        offline=v["offline"] is True,
        api_key_file=_path(v["api_key_file"]),
        tool_support=_tool_support(v["tool_support"]),
        description=str(v["description"]),
        roles=p.as_tuple(v["roles"]),
        capabilities=p.as_tuple(v["capabilities"]),
        aliases=p.as_tuple(v["aliases"]),
        deprecated=deprecated if isinstance(deprecated, str) else None,
        engine=_engine(ctx, defaults.get("engine"), own.get("engine"), where),
        extra_args=p.as_tuple(v["extra_args"]),
        entrypoint=p.as_tuple(v["entrypoint"]) or None,
        where=where,
        supervision=_supervision(ctx, defaults, own),
        gateway=gateway_keys.model_gateway(ctx, merged),
        nodes=nodes_keys.parse(ctx, own.get("nodes")),
        previous_venv=_path(v["previous_venv"]),
    )
    if cfg.deprecated:
        f, ln = cfg.locate("deprecated")
        ctx.problems.append(Problem(f, ln, f"{ctx.prefix}.deprecated", cfg.deprecated, "warning"))
    _rules(ctx, cfg, body)
    # Returned even when invalid: cross-model checks (ports, names) still run on it, so one
    # pass reports everything; the registry raises before anyone can use it.
    return cfg


def _tool_support(value: object) -> ToolSupport:
    for known in TOOL_SUPPORT:  # the parser took one of these, else reported it
        if value == known:
            return known
    return "none"


def _path(value: object) -> Path | None:
    return value if isinstance(value, Path) else None


def _rules(ctx: ProblemScope, cfg: ModelConfig, body: YNode) -> None:
    """Rules across keys: each one is a failed engine start we can predict from the file."""
    e = cfg.engine

    def err(key: str, msg: str) -> None:
        f, ln = cfg.locate(key)
        ctx.problems.append(Problem(f, ln, f"{ctx.prefix}.{key}", msg))

    if cfg.tool_support == "native" and not (
        e.get("tool_call_parser") and e.get("enable_auto_tool_choice") is True
    ):
        err(
            "tool_support",
            "native tool calling needs engine.tool_call_parser and "
            "engine.enable_auto_tool_choice: true",
        )
    if cfg.tool_support != "native" and e.get("tool_call_parser"):
        f, ln = cfg.locate("engine.tool_call_parser")
        ctx.problems.append(
            Problem(
                f,
                ln,
                f"{ctx.prefix}.tool_support",
                f"is {cfg.tool_support}, so the host gateway drops the tools clients send "
                "(unsupported_tools), though the engine has a tool parser: set tool_support: "
                "native",
                "warning",
            )
        )
    if e.get("enable_auto_tool_choice") is True and not e.get("tool_call_parser"):
        err(
            "engine.enable_auto_tool_choice",
            "needs engine.tool_call_parser (vLLM refuses to start without one)",
        )
    _sleep_rules(ctx, cfg)
    if not loopback(cfg.host) and cfg.api_key_file is None:
        # vLLM serves every client that reaches the port when it has no --api-key; a
        # wildcard or LAN address makes that the whole network (issue 20).
        f, ln = cfg.locate("host")
        ctx.problems.append(
            Problem(
                f,
                ln,
                f"{ctx.prefix}.host",
                f"{cfg.host!r} lets other hosts reach the engine, and no api_key_file is set: "
                "anyone who reaches the port may use the model. Set api_key_file, or bind to "
                f"{LOOPBACK} and serve clients through the host gateway",
                "warning",
            )
        )
    world = 1
    for k in ("tensor_parallel_size", "pipeline_parallel_size"):
        v = e.get(k)
        world *= v if isinstance(v, int) else 1
    if cfg.gpus is not None and world > len(cfg.gpus):
        err("gpus", f"lists {len(cfg.gpus)} GPU(s) but tensor x pipeline parallel needs {world}")
    if cfg.nodes is not None:
        _nodes_rules(ctx, cfg, err)
    if "kv_cache_memory_bytes" in e and "gpu_memory_utilization" in e:
        f, ln = cfg.locate("engine.kv_cache_memory_bytes")
        ctx.problems.append(
            Problem(
                f,
                ln,
                f"{ctx.prefix}.engine.kv_cache_memory_bytes",
                "overrides gpu_memory_utilization for the KV cache",
                "warning",
            )
        )


def _nodes_rules(ctx: ProblemScope, cfg: ModelConfig, err: Callable[[str, str], None]) -> None:
    """What vLLM's arg_utils.py would refuse at the start of every rank, said from the file."""
    nodes, e = cfg.nodes, cfg.engine
    assert nodes is not None
    world = 1
    for k in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
        v = e.get(k)
        world *= v if isinstance(v, int) else 1
    if world % len(nodes.hosts):
        err(
            "nodes.hosts",
            f"{len(nodes.hosts)} hosts do not evenly divide the world size {world} (tensor x "
            "pipeline x data parallel size): vLLM refuses to start (--nnodes must divide it)",
        )
    if cfg.supervision.deactivate == "sleep":
        err("deactivate", "sleep is not supported for a multi-node model: use stop")
    for key in ("master_port", "link_port"):
        if getattr(nodes, key) == cfg.port:
            err(f"nodes.{key}", f"is the engine's port {cfg.port}")
    if "engine.data_parallel_size" in cfg.where and e.get("data_parallel_size", 1) != 1:
        err(
            "engine.data_parallel_size",
            "multi-node groups run tensor and pipeline parallel ranks (data_parallel_size "
            "1): a data-parallel group is not supervised yet",
        )


def _sleep_rules(ctx: ProblemScope, cfg: ModelConfig) -> None:
    """Sleep mode needs VLLM_SERVER_DEV_MODE=1, which also serves /collective_rpc and
    /reset_prefix_cache to anyone who can reach the port, with no key (docs/vllm-behaviour.md,
    "Security surface"): only an engine bound to loopback may have it."""
    sup = cfg.supervision
    if sup.deactivate == "sleep" and not loopback(cfg.host):
        f, ln = cfg.locate("deactivate")
        ctx.problems.append(
            Problem(
                f,
                ln,
                f"{ctx.prefix}.deactivate",
                f"sleep needs vLLM's dev mode, which serves unauthenticated admin endpoints "
                f"(/sleep, /collective_rpc) on the engine's port: host {cfg.host!r} is not "
                f"loopback. Bind the engine to {LOOPBACK} (the host gateway or a proxy serves "
                "clients), or use deactivate: stop",
            )
        )
    if sup.sleep_level != 1 and sup.deactivate != "sleep" and "sleep_level" in cfg.where:
        f, ln = cfg.locate("sleep_level")
        ctx.problems.append(
            Problem(
                f,
                ln,
                f"{ctx.prefix}.sleep_level",
                "has no effect without deactivate: sleep",
                "warning",
            )
        )


def loopback(host: str) -> bool:
    """An address only this host can reach (not a wildcard: that binds every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _engine(
    ctx: ProblemScope, dflt: YNode | None, own: YNode | None, where: dict[str, tuple[str, int]]
) -> dict[str, OptionValue]:
    out: dict[str, OptionValue] = {}
    for node in (dflt, own):
        if node is None:
            continue
        if node.mapping is None:
            ctx.err(node, "engine", "expected a mapping of vLLM options")
            continue
        for key, vnode in node.mapping.items():
            kline = node.key_lines[key]
            opt = engine_options.BY_NAME.get(key)
            if opt is None:
                ctx.err(
                    vnode,
                    f"engine.{key}",
                    "unknown engine option"
                    + did_you_mean(key, engine_options.BY_NAME)
                    + "; raw vLLM flags go in extra_args",
                    kline,
                )
                continue
            value, why = engine_options.coerce(opt, vnode.plain())
            if why is not None or value is None:
                ctx.err(vnode, f"engine.{key}", why or "invalid", kline)
                continue
            out[key] = value
            where[f"engine.{key}"] = (vnode.file, kline)
    return out


def _supervision(
    ctx: ProblemScope, defaults: dict[str, YNode], own: dict[str, YNode]
) -> settings.Supervision:
    """Blocks merge key by key: defaults' block first, then the model's."""
    sup = settings.Supervision()
    for layer in (defaults, own):
        auto = layer.get("autostart")
        if auto is not None:
            v = p.boolean(ctx, auto, "autostart")
            if isinstance(v, bool):
                sup = replace(sup, autostart=v)
        how = layer.get("deactivate")
        if how is not None:
            v = p.choice(settings.DEACTIVATE)(ctx, how, "deactivate")
            for known in settings.DEACTIVATE:
                if v == known:
                    sup = replace(sup, deactivate=known)
        level = layer.get("sleep_level")
        if level is not None:
            v = p.sleep_level(ctx, level, "sleep_level")
            if isinstance(v, int):
                sup = replace(sup, sleep_level=v)
        for name in settings.BLOCKS:
            node = layer.get(name)
            if node is not None:
                block = p.parse_block(ctx, name, node, getattr(sup, name))
                sup = replace(sup, **{name: block})  # type: ignore[arg-type]
    return sup


def _env(ctx: ProblemScope, dflt: YNode | None, own: YNode | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for node in (dflt, own):
        if node is None:
            continue
        if node.mapping is None:
            ctx.err(node, "env", "expected a mapping of NAME: value")
            continue
        for key, vnode in node.mapping.items():
            kline = node.key_lines[key]
            v = vnode.scalar
            if not p.ENV_NAME.match(key):
                ctx.err(vnode, f"env.{key}", "not a valid environment variable name", kline)
            elif key in flags.OWNED_ENV:
                ctx.err(
                    vnode, f"env.{key}", f"set by the supervisor: {flags.OWNED_ENV[key]}", kline
                )
            elif (
                isinstance(v, bool)
                or v is None
                or vnode.mapping is not None
                or vnode.sequence is not None
            ):
                ctx.err(
                    vnode,
                    f"env.{key}",
                    f'expected a string (quote it: "{v}"), got {vnode.kind}',
                    kline,
                )
            else:
                out[key] = str(v)
    return out
