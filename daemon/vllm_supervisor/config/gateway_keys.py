"""The host gateway's settings: the `gateway:` block of models.yaml (its defaults) and the
per-model keys that override them (on_demand, ttl, max_queue, concurrency).

Validated like every other key: a bad value names file, line and key (gateway/ reads them).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from vllm_supervisor.config.limits import GATEWAY_LISTEN, PORT_RANGE
from vllm_supervisor.config.problems import Problem, ProblemScope, did_you_mean
from vllm_supervisor.config.yamltree import YNode

MIB = 1024**2


@dataclass(frozen=True)
class GatewaySettings:
    listen: str = GATEWAY_LISTEN  # HOST:PORT of the OpenAI front door
    ttl: float = 0.0  # seconds idle (no request in flight) before deactivating; 0: never
    max_queue: int = 64  # requests waiting per model; beyond: 429 with Retry-After
    load_timeout: float = 900.0  # seconds a request waits for its model to be ready: 503
    concurrency: int = 0  # requests in flight per model; 0: no cap (the engine queues)
    max_body: int = 32 * MIB  # bytes of a request body (images as data URIs are large): 413
    # Bearer keys (one a line, with an optional label) that may use /admin/* on the HTTP port;
    # None: the admin paths are served on the gateway's admin socket only.
    admin_keys_file: Path | None = None
    # Bearer keys for clients on the OpenAI paths; None: no key is asked for (loopback use).
    api_keys_file: Path | None = None
    # The defaults of the per-model keys below (ModelGateway), for every model:
    unsupported_tools: str = "drop"  # drop | refuse: tools sent to a model that calls none
    load_progress: bool = True  # a streamed chat that waits for a load is shown its phases
    request_timeout: float = 0.0  # seconds from forward to the answer's end; 0: none

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


@dataclass(frozen=True)
class ModelGateway:
    """One model's gateway keys; None: the gateway block's value."""

    on_demand: bool = True  # a request for the model activates it
    # off | on_failure | always: answer chat through /v1/completions (gateway/fallback.py)
    chat_fallback: str = "off"
    ttl: float | None = None
    max_queue: int | None = None
    concurrency: int | None = None
    unsupported_tools: str | None = None
    load_progress: bool | None = None
    request_timeout: float | None = None


MODEL_KEYS = tuple(f.name for f in fields(ModelGateway))
ZERO_OK = {"ttl", "concurrency", "max_queue", "request_timeout"}  # 0: never / no cap / none
CHAT_FALLBACK = ("off", "on_failure", "always")
UNSUPPORTED_TOOLS = ("drop", "refuse")


def split_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); ValueError when it is neither."""
    host, sep, port = listen.rpartition(":")
    low, high = PORT_RANGE
    if not sep or not host or not port.isdigit() or not low <= int(port) <= high:
        raise ValueError(listen)
    return host.strip("[]"), int(port)


def parse_gateway(node: YNode, problems: list[Problem]) -> GatewaySettings:
    ctx = ProblemScope(node.file, "gateway", problems)
    if node.mapping is None:
        problems.append(Problem(node.file, node.line, "gateway", "expected a mapping"))
        return GatewaySettings()
    known = {f.name for f in fields(GatewaySettings)}
    out = GatewaySettings()
    for key, vnode in node.mapping.items():
        line = node.key_lines[key]
        if key not in known:
            ctx.err(vnode, key, "unknown key" + did_you_mean(key, known), line)
            continue
        if key in ("admin_keys_file", "api_keys_file"):
            v = vnode.scalar
            if not isinstance(v, str) or not v.strip():
                ctx.err(vnode, key, f"expected a path, got {vnode.plain()!r}", line)
                continue
            out = replace(out, **{key: Path(node.file).parent / v})  # type: ignore[arg-type]
            continue
        if key in ("unsupported_tools", "load_progress"):
            value = parse_model_key(ctx, vnode, key)
            if value is not None:
                out = replace(out, **{key: value})  # type: ignore[arg-type]
            continue
        if key == "listen":
            try:
                split_listen(str(vnode.scalar))
            except ValueError:
                ctx.err(vnode, key, f"expected HOST:PORT, got {vnode.plain()!r}", line)
                continue
            out = replace(out, listen=str(vnode.scalar))
            continue
        value = number(ctx, vnode, key, line, isinstance(getattr(out, key), int))
        if value is not None:
            out = replace(out, **{key: value})  # type: ignore[arg-type]
    return out


def parse_model_key(ctx: ProblemScope, node: YNode, key: str) -> object:
    """One per-model gateway key (config/model_keys.py calls this for MODEL_KEYS)."""
    if key == "on_demand":
        if isinstance(node.scalar, bool):
            return node.scalar
        ctx.err(node, key, f"expected true or false, got {node.plain()!r}")
        return None
    if key == "load_progress":
        if isinstance(node.scalar, bool):
            return node.scalar
        ctx.err(node, key, f"expected true or false, got {node.plain()!r}")
        return None
    if key == "unsupported_tools":
        if node.scalar in UNSUPPORTED_TOOLS:
            return node.scalar
        ctx.err(node, key, f"expected drop or refuse; got {node.plain()!r}")
        return None
    if key == "chat_fallback":
        if node.scalar is False:  # YAML 1.1 reads a bare `off` as false
            return "off"
        if node.scalar in CHAT_FALLBACK:
            return node.scalar
        ctx.err(node, key, f"expected one of {', '.join(CHAT_FALLBACK)}; got {node.plain()!r}")
        return None
    return number(ctx, node, key, 0, key not in ("ttl", "request_timeout"))


def number(ctx: ProblemScope, node: YNode, key: str, line: int, whole: bool) -> float | None:
    v = node.scalar
    num = v if isinstance(v, int | float) and not isinstance(v, bool) else None
    if whole and not isinstance(num, int):
        num = None
    if num is None or num < 0 or (num == 0 and key not in ZERO_OK):
        want = "a whole number" if whole else "seconds"
        floor = ">= 0" if key in ZERO_OK else "> 0"
        ctx.err(node, key, f"expected {want} {floor}, got {node.plain()!r}", line)
        return None
    return int(num) if whole else float(num)


def model_gateway(ctx: ProblemScope, merged: dict[str, YNode]) -> ModelGateway:
    out = ModelGateway()
    for key in MODEL_KEYS:
        node = merged.get(key)
        if node is not None and (value := parse_model_key(ctx, node, key)) is not None:
            out = replace(out, **{key: value})  # type: ignore[arg-type]
    return out
