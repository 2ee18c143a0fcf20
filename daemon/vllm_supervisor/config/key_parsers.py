"""Parsers of single keys: each takes the problem scope, the YAML node and the key, and
returns the value or reports a problem (file, line, key) and returns a placeholder.

The supervision blocks (startup, health, restart, stop) are parsed here too, field by field,
from the dataclasses in config/settings.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

from vllm_supervisor.config.limits import PORT_RANGE
from vllm_supervisor.config.problems import ProblemScope, did_you_mean
from vllm_supervisor.config.settings import BLOCKS
from vllm_supervisor.config.yamltree import YNode
from vllm_supervisor.engine import flags

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NAME = re.compile(r"^[^\s/]\S*$")  # served names and aliases (reference/schema.py uses the same)
# gpu_group names: they name a lock file (runtime/group.py), so a plain slug.
GROUP = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# The smallest sane value of each number: a 0 s timeout or a 0 budget is a typo.
MINIMUM = {"failures": 1, "budget": 0, "backoff_factor": 1.0}


def parse_block(ctx: ProblemScope, name: str, node: YNode, current: object) -> object:
    """One block (over the defaults' block, so defaults: and models can both set parts)."""
    if node.mapping is None:
        ctx.err(node, name, "expected a mapping")
        return current
    known = {f.name: f for f in fields(BLOCKS[name])}
    changes: dict[str, object] = {}
    for key, vnode in node.mapping.items():
        line = node.key_lines[key]
        f = known.get(key)
        if f is None:
            ctx.err(vnode, f"{name}.{key}", "unknown key" + did_you_mean(key, known), line)
            continue
        v = vnode.scalar
        default = getattr(BLOCKS[name](), key)
        if isinstance(default, bool):
            if not isinstance(v, bool):
                ctx.err(vnode, f"{name}.{key}", f"expected true or false, got {v!r}", line)
                continue
        elif isinstance(default, int):
            if isinstance(v, bool) or not isinstance(v, int) or v < MINIMUM.get(key, 1):
                ctx.err(
                    vnode,
                    f"{name}.{key}",
                    f"expected a whole number >= {MINIMUM.get(key, 1)}, got {v!r}",
                    line,
                )
                continue
        else:
            low = MINIMUM.get(key, 0.0)
            num = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
            # generation_interval 0 means "off"; every other duration must be positive.
            if num is None or num < low or (num == 0 and key != "generation_interval"):
                ctx.err(vnode, f"{name}.{key}", f"expected seconds > 0, got {v!r}", line)
                continue
            v = num
        changes[key] = v
    return replace(current, **changes)  # type: ignore[type-var]


def string(ctx: ProblemScope, node: YNode, key: str) -> object:
    if isinstance(node.scalar, str) and node.scalar.strip():
        return node.scalar
    ctx.err(node, key, f"expected a non-empty string, got {node.kind}")
    return None


def group_name(ctx: ProblemScope, node: YNode, key: str) -> object:
    if isinstance(node.scalar, str) and GROUP.match(node.scalar):
        return node.scalar
    ctx.err(
        node, key, f"expected a name of a-z, 0-9, '.', '_', '-' (like gpu0), got {node.scalar!r}"
    )
    return None


def sleep_level(ctx: ProblemScope, node: YNode, key: str) -> object:
    v = node.scalar
    if isinstance(v, int) and not isinstance(v, bool) and v in (1, 2):
        return v
    ctx.err(node, key, f"expected 1 or 2 (vLLM's sleep levels), got {v!r}")
    return None


def boolean(ctx: ProblemScope, node: YNode, key: str) -> object:
    if isinstance(node.scalar, bool):
        return node.scalar
    ctx.err(node, key, f"expected true or false, got {node.plain()!r}")
    return None


def port(ctx: ProblemScope, node: YNode, key: str) -> object:
    v = node.scalar
    low, high = PORT_RANGE
    if isinstance(v, int) and not isinstance(v, bool) and low <= v <= high:
        return v
    ctx.err(node, key, f"expected a TCP port {low}-{high}, got {node.plain()!r}")
    return None


def choice(choices: tuple[str, ...]) -> Callable[[ProblemScope, YNode, str], object]:
    def conv(ctx: ProblemScope, node: YNode, key: str) -> object:
        if node.scalar in choices:
            return node.scalar
        ctx.err(
            node,
            key,
            f"expected one of {', '.join(choices)}; got {node.plain()!r}"
            + did_you_mean(str(node.scalar), choices),
        )
        return None

    return conv


def str_list(choices: tuple[str, ...] | None) -> Callable[[ProblemScope, YNode, str], object]:
    def conv(ctx: ProblemScope, node: YNode, key: str) -> object:
        items = node.sequence if node.sequence is not None else None
        if items is None:
            ctx.err(node, key, f"expected a list of strings, got {node.kind}")
            return None
        out: list[str] = []
        for item in items:
            if not isinstance(item.scalar, str):
                ctx.err(item, key, f"expected a string, got {item.kind}")
            elif choices is not None and item.scalar not in choices:
                ctx.err(
                    item,
                    key,
                    f"unknown value '{item.scalar}'"
                    + did_you_mean(item.scalar, choices)
                    + f"; known: {', '.join(choices)}",
                )
            else:
                out.append(item.scalar)
        return tuple(out)

    return conv


def names(ctx: ProblemScope, node: YNode, key: str) -> object:
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


def path_in(base: Path) -> Callable[[ProblemScope, YNode, str], object]:
    def conv(ctx: ProblemScope, node: YNode, key: str) -> object:
        if node.scalar is None and key == "api_key_file":
            return None
        s = string(ctx, node, key)
        if not isinstance(s, str):
            return None
        p = Path(s).expanduser()
        # Relative paths are relative to the file that names them, not to whatever cwd the
        # service happens to start in.
        return p if p.is_absolute() else (base / p)

    return conv


def path(ctx: ProblemScope, node: YNode, key: str) -> object:
    """A path; relative to the file of the model that names it."""
    return path_in(Path(ctx.file).parent)(ctx, node, key)


def local_path(model: str, base: Path) -> str:
    if model.startswith(("./", "../")):
        return str((base / model).resolve())
    return str(Path(model).expanduser()) if model.startswith("~") else model


# An NVIDIA GPU or MIG UUID as nvidia-smi -L prints it (CUDA_VISIBLE_DEVICES takes it too).
GPU_UUID = re.compile(r"^(GPU|MIG)-[0-9A-Za-z/-]{8,}$")


def gpus(ctx: ProblemScope, node: YNode | None) -> tuple[int | str, ...] | None:
    if node is None or (node.scalar is None and node.sequence is None and node.mapping is None):
        return None
    items = [node] if node.sequence is None else node.sequence
    if not items:
        # An empty CUDA_VISIBLE_DEVICES hides every GPU: never what an operator means.
        ctx.err(node, "gpus", "is empty; list GPU indexes, or remove the key to use all GPUs")
        return None
    out: list[int | str] = []
    bad = False
    for item in items:
        v = item.scalar
        uuid = isinstance(v, str) and GPU_UUID.match(v)
        if not uuid and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            ctx.err(
                item,
                "gpus",
                "expected GPU indexes (whole numbers >= 0) or UUIDs (GPU-..., as "
                f"nvidia-smi -L prints them), got {item.plain()!r}",
            )
            bad = True
        elif v in out:
            ctx.err(item, "gpus", f"GPU {v} is listed twice")
            bad = True
        elif isinstance(v, int | str):
            out.append(v)
    return None if bad else tuple(out)


def deprecated(ctx: ProblemScope, node: YNode, key: str) -> object:
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


def extra_args(ctx: ProblemScope, node: YNode, key: str) -> object:
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


ENTRY_HEADS = ("{python}", "{venv}/")


def entrypoint(ctx: ProblemScope, node: YNode, key: str) -> object:
    """The argv that starts the OpenAI server, before the model's flags (Cortex #5: a wrapper
    such as numactl or a site launcher). Its program is an absolute path or the venv's
    ({python}, {venv}/...): the service runs with no shell and no PATH lookup to trust."""
    if node.sequence is None or not node.sequence:
        ctx.err(node, key, "expected a non-empty list, e.g. ['{python}', '-m', "
                "'vllm.entrypoints.openai.api_server']")  # fmt: skip
        return None
    out: list[str] = []
    for item in node.sequence:
        if not isinstance(item.scalar, str) or not item.scalar:
            ctx.err(item, key, f"expected a non-empty string, got {item.kind}")
            return None
        out.append(item.scalar)
    if not (out[0].startswith("/") or out[0].startswith(ENTRY_HEADS)):
        ctx.err(node.sequence[0], key, f"the program {out[0]!r} must be an absolute path or "
                "{python} / {venv}/...: the engine starts with no PATH lookup")  # fmt: skip
        return None
    return tuple(out)


def as_tuple(v: object) -> tuple[str, ...]:
    return tuple(x for x in v if isinstance(x, str)) if isinstance(v, tuple) else ()
