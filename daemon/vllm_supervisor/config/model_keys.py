"""Per-model keys: their types, defaults, and the rules that span several keys."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from vllm_supervisor.config import settings as supervision
from vllm_supervisor.config.problems import Problem, did_you_mean
from vllm_supervisor.config.yamltree import YNode
from vllm_supervisor.engine import flags
from vllm_supervisor.engine import options as engine_options
from vllm_supervisor.engine.options import OptionValue

if TYPE_CHECKING:
    from vllm_supervisor.config.registry import ModelConfig

TOOL_SUPPORT = ("native", "react", "none")
# Capabilities are read by tools (vllmctl probe sends an image only to `vision` models), so a
# typo must not silently switch a check off.
CAPABILITIES = ("chat", "completion", "vision", "audio", "tools", "structured_output",
                "reasoning", "embedding", "rerank", "code", "long_context")
MODEL_KEYS = ("model", "served_model_name", "host", "port", "venv", "gpus", "env", "offline",
              "api_key_file", "tool_support", "description", "roles", "capabilities",
              "aliases", "deprecated", "engine", "extra_args", "autostart", "startup", "health",
              "restart", "stop")
PER_MODEL_ONLY = frozenset({"model", "served_model_name", "port", "aliases"})
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NAME = re.compile(r"^[^\s/]\S*$")  # served names and aliases (schema.py uses the same)


@dataclass
class Ctx:
    file: str
    prefix: str
    problems: list[Problem]

    def err(self, node: YNode, key: str, message: str, line: int = 0) -> None:
        self.problems.append(Problem(node.file, line or node.line, f"{self.prefix}.{key}", message))

    def warn(self, node: YNode, key: str, message: str, line: int = 0) -> None:
        self.problems.append(Problem(node.file, line or node.line, f"{self.prefix}.{key}",
                                     message, "warning"))


def build_model(ctx: Ctx, name: str, line: int, body: YNode,
                defaults: dict[str, YNode]) -> ModelConfig | None:
    from vllm_supervisor.config.registry import ModelConfig, default_venv

    if body.mapping is None:
        ctx.problems.append(Problem(body.file, line, ctx.prefix, "expected a mapping of settings"))
        return None
    own: dict[str, YNode] = {}
    for key, node in body.mapping.items():
        if key in MODEL_KEYS:
            own[key] = node
        else:
            ctx.err(node, key, "unknown key" + did_you_mean(key, MODEL_KEYS), body.key_lines[key])
    merged = {**defaults, **own}
    where: dict[str, tuple[str, int]] = {k: (n.file, n.line) for k, n in merged.items()}

    def get(key: str, conv: Callable[[Ctx, YNode, str], object], default: object) -> object:
        node = merged.get(key)
        return default if node is None else conv(ctx, node, key)

    model = get("model", _string, None)
    if "model" not in merged:
        ctx.problems.append(Problem(body.file, line, f"{ctx.prefix}.model",
                                    "is required (a local directory or a Hugging Face repo id)"))
    port = get("port", _port, None)
    if "port" not in merged:
        ctx.problems.append(Problem(body.file, line, f"{ctx.prefix}.port", "is required"))
    served = get("served_model_name", _names, (name,))
    engine = _engine(ctx, defaults.get("engine"), own.get("engine"), where)
    env = _env(ctx, defaults.get("env"), own.get("env"))
    extra = get("extra_args", _extra_args, ())
    cfg_dir = Path(body.file).parent
    venv = get("venv", _path_in(cfg_dir), default_venv())
    key_file = get("api_key_file", _path_in(cfg_dir), None)
    deprecated = get("deprecated", _deprecated, None)
    cfg = ModelConfig(
        name=name, file=body.file, line=line,
        model=_local(model, cfg_dir) if isinstance(model, str) else "",
        served_model_names=served if isinstance(served, tuple) else (name,),
        host=str(get("host", _string, "127.0.0.1")),
        port=port if isinstance(port, int) else 0,
        venv=venv if isinstance(venv, Path) else default_venv(),
        gpus=_gpus(ctx, merged.get("gpus")),
        env=env, offline=get("offline", _bool, False) is True,
        api_key_file=key_file if isinstance(key_file, Path) else None,
        tool_support=str(get("tool_support", _choice(TOOL_SUPPORT), "none")),
        description=str(get("description", _string, "")),
        roles=_tuple(get("roles", _str_list(None), ())),
        capabilities=_tuple(get("capabilities", _str_list(CAPABILITIES), ())),
        aliases=_tuple(get("aliases", _names, ())),
        deprecated=deprecated if isinstance(deprecated, str) else None,
        engine=engine, extra_args=_tuple(extra), where=where,
        supervision=_supervision(ctx, defaults, own),
    )
    if cfg.deprecated:
        f, ln = cfg.locate("deprecated")
        ctx.problems.append(Problem(f, ln, f"{ctx.prefix}.deprecated", cfg.deprecated, "warning"))
    _rules(ctx, cfg, body)
    # Returned even when invalid: cross-model checks (ports, names) still run on it, so one
    # pass reports everything; the registry raises before anyone can use it.
    return cfg


def _rules(ctx: Ctx, cfg: ModelConfig, body: YNode) -> None:
    """Rules across keys: each one is a failed engine start we can predict from the file."""
    e = cfg.engine

    def err(key: str, msg: str) -> None:
        f, ln = cfg.locate(key)
        ctx.problems.append(Problem(f, ln, f"{ctx.prefix}.{key}", msg))

    if cfg.tool_support == "native" and not (e.get("tool_call_parser")
                                             and e.get("enable_auto_tool_choice") is True):
        err("tool_support", "native tool calling needs engine.tool_call_parser and "
            "engine.enable_auto_tool_choice: true")
    if e.get("enable_auto_tool_choice") is True and not e.get("tool_call_parser"):
        err("engine.enable_auto_tool_choice", "needs engine.tool_call_parser (vLLM refuses "
            "to start without one)")
    world = 1
    for k in ("tensor_parallel_size", "pipeline_parallel_size"):
        v = e.get(k)
        world *= v if isinstance(v, int) else 1
    if cfg.gpus is not None and world > len(cfg.gpus):
        err("gpus", f"lists {len(cfg.gpus)} GPU(s) but tensor x pipeline parallel needs {world}")
    if "kv_cache_memory_bytes" in e and "gpu_memory_utilization" in e:
        f, ln = cfg.locate("engine.kv_cache_memory_bytes")
        ctx.problems.append(Problem(f, ln, f"{ctx.prefix}.engine.kv_cache_memory_bytes",
                                    "overrides gpu_memory_utilization for the KV cache",
                                    "warning"))


def _engine(ctx: Ctx, dflt: YNode | None, own: YNode | None,
            where: dict[str, tuple[str, int]]) -> dict[str, OptionValue]:
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
                ctx.err(vnode, f"engine.{key}", "unknown engine option"
                        + did_you_mean(key, engine_options.BY_NAME)
                        + "; raw vLLM flags go in extra_args", kline)
                continue
            value, why = engine_options.coerce(opt, vnode.plain())
            if why is not None or value is None:
                ctx.err(vnode, f"engine.{key}", why or "invalid", kline)
                continue
            out[key] = value
            where[f"engine.{key}"] = (vnode.file, kline)
    return out


def _supervision(ctx: Ctx, defaults: dict[str, YNode],
                 own: dict[str, YNode]) -> supervision.Supervision:
    """Blocks merge key by key: defaults' block first, then the model's."""
    sup = supervision.Supervision()
    for layer in (defaults, own):
        auto = layer.get("autostart")
        if auto is not None:
            v = _bool(ctx, auto, "autostart")
            if isinstance(v, bool):
                sup = replace(sup, autostart=v)
        for name in supervision.BLOCKS:
            node = layer.get(name)
            if node is not None:
                block = supervision.parse_block(ctx, name, node, getattr(sup, name))
                sup = replace(sup, **{name: block})  # type: ignore[arg-type]
    return sup


def _env(ctx: Ctx, dflt: YNode | None, own: YNode | None) -> dict[str, str]:
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
            if not ENV_NAME.match(key):
                ctx.err(vnode, f"env.{key}", "not a valid environment variable name", kline)
            elif key in flags.OWNED_ENV:
                ctx.err(vnode, f"env.{key}", f"set by the supervisor: {flags.OWNED_ENV[key]}",
                        kline)
            elif isinstance(v, bool) or v is None or vnode.mapping is not None \
                    or vnode.sequence is not None:
                ctx.err(vnode, f"env.{key}", f"expected a string (quote it: \"{v}\"), got "
                        f"{vnode.kind}", kline)
            else:
                out[key] = str(v)
    return out


def _string(ctx: Ctx, node: YNode, key: str) -> object:
    if isinstance(node.scalar, str) and node.scalar.strip():
        return node.scalar
    ctx.err(node, key, f"expected a non-empty string, got {node.kind}")
    return None


def _bool(ctx: Ctx, node: YNode, key: str) -> object:
    if isinstance(node.scalar, bool):
        return node.scalar
    ctx.err(node, key, f"expected true or false, got {node.plain()!r}")
    return None


def _port(ctx: Ctx, node: YNode, key: str) -> object:
    v = node.scalar
    if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535:
        return v
    ctx.err(node, key, f"expected a TCP port 1-65535, got {node.plain()!r}")
    return None


def _choice(choices: tuple[str, ...]) -> Callable[[Ctx, YNode, str], object]:
    def conv(ctx: Ctx, node: YNode, key: str) -> object:
        if node.scalar in choices:
            return node.scalar
        ctx.err(node, key, f"expected one of {', '.join(choices)}; got {node.plain()!r}"
                + did_you_mean(str(node.scalar), choices))
        return None
    return conv


def _str_list(choices: tuple[str, ...] | None) -> Callable[[Ctx, YNode, str], object]:
    def conv(ctx: Ctx, node: YNode, key: str) -> object:
        items = node.sequence if node.sequence is not None else None
        if items is None:
            ctx.err(node, key, f"expected a list of strings, got {node.kind}")
            return None
        out: list[str] = []
        for item in items:
            if not isinstance(item.scalar, str):
                ctx.err(item, key, f"expected a string, got {item.kind}")
            elif choices is not None and item.scalar not in choices:
                ctx.err(item, key, f"unknown value '{item.scalar}'"
                        + did_you_mean(item.scalar, choices) + f"; known: {', '.join(choices)}")
            else:
                out.append(item.scalar)
        return tuple(out)
    return conv


def _names(ctx: Ctx, node: YNode, key: str) -> object:
    items = [node] if node.scalar is not None else node.sequence
    if not items:
        ctx.err(node, key, "expected a name or a non-empty list of names")
        return None
    out: list[str] = []
    for item in items:
        if not isinstance(item.scalar, str) or not NAME.match(item.scalar):
            ctx.err(item, key, f"expected a name without spaces, got {item.plain()!r}")
        elif item.scalar in out:
            ctx.err(item, key, f"'{item.scalar}' is listed twice")
        else:
            out.append(item.scalar)
    return tuple(out)


def _path_in(base: Path) -> Callable[[Ctx, YNode, str], object]:
    def conv(ctx: Ctx, node: YNode, key: str) -> object:
        if node.scalar is None and key == "api_key_file":
            return None
        s = _string(ctx, node, key)
        if not isinstance(s, str):
            return None
        p = Path(s).expanduser()
        # Relative paths are relative to the file that names them, not to whatever cwd the
        # service happens to start in.
        return p if p.is_absolute() else (base / p)
    return conv


def _local(model: str, base: Path) -> str:
    if model.startswith(("./", "../")):
        return str((base / model).resolve())
    return str(Path(model).expanduser()) if model.startswith("~") else model


def _gpus(ctx: Ctx, node: YNode | None) -> tuple[int, ...] | None:
    if node is None or (node.scalar is None and node.sequence is None and node.mapping is None):
        return None
    items = [node] if node.sequence is None else node.sequence
    if not items:
        # An empty CUDA_VISIBLE_DEVICES hides every GPU: never what an operator means.
        ctx.err(node, "gpus", "is empty; list GPU indexes, or remove the key to use all GPUs")
        return None
    out: list[int] = []
    bad = False
    for item in items:
        v = item.scalar
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            ctx.err(item, "gpus",
                    f"expected GPU indexes (whole numbers >= 0), got {item.plain()!r}")
            bad = True
        elif v in out:
            ctx.err(item, "gpus", f"GPU {v} is listed twice")
            bad = True
        else:
            out.append(v)
    return None if bad else tuple(out)


def _deprecated(ctx: Ctx, node: YNode, key: str) -> object:
    if node.mapping is not None or node.sequence is not None:
        ctx.err(node, key, f"expected true, false or a message, got {node.kind}")
        return None
    if node.scalar is True:
        return "model is marked deprecated"
    if node.scalar is False or node.scalar is None:
        return None
    if isinstance(node.scalar, str):
        return f"model is deprecated: {node.scalar}"
    ctx.err(node, key, f"expected true, false or a message, got {node.kind}")
    return None


def _extra_args(ctx: Ctx, node: YNode, key: str) -> object:
    if node.sequence is None:
        ctx.err(node, key, "expected a list of strings, e.g. ['--max-num-partial-prefills', '2']")
        return None
    out: list[str] = []
    for item in node.sequence:
        if not isinstance(item.scalar, str | int | float) or isinstance(item.scalar, bool):
            ctx.err(item, key, f"expected a string, got {item.kind}")
            continue
        token = str(item.scalar)
        flag = flags.flag_of(token)
        why = flags.extra_arg_problem(flag) if flag else None
        if why:
            ctx.err(item, key, why)
        out.append(token)
    return tuple(out)


def _tuple(v: object) -> tuple[str, ...]:
    return tuple(x for x in v if isinstance(x, str)) if isinstance(v, tuple) else ()
