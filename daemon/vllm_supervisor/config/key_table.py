"""The per-model keys: one table that drives parsing, defaults, the config reference
(docs/configuration.md) and the JSON Schema (docs/models.schema.json), as engine/options.py
does for the `engine:` options.

A key lived in five places (MODEL_KEYS, the unwrapping in build_model, ModelConfig, the
docs' table and the schema's properties; issue 19). Now a key is one ModelKey here, plus,
when code reads it, the ModelConfig field it fills. A key whose `parse` is set is read
generically (config/model_keys.py); the composite ones (engine, env, gpus, the supervision
blocks, the gateway keys) have `parse=None` and a reader of their own, but their docs and
schema still come from here. tests/config/test_key_table.py adds a key here alone and sees
it parsed, documented and in the schema.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, get_args

from vllm_supervisor.config import key_parsers as p
from vllm_supervisor.config import nodes_keys, settings
from vllm_supervisor.config.gateway_keys import CHAT_FALLBACK, UNSUPPORTED_TOOLS
from vllm_supervisor.config.limits import LOOPBACK, PORT_RANGE
from vllm_supervisor.config.model import ToolSupport, default_venv
from vllm_supervisor.config.problems import ProblemScope
from vllm_supervisor.config.yamltree import YNode
from vllm_supervisor.engine import flags
from vllm_supervisor.engine import options as engine_options

Parse = Callable[[ProblemScope, YNode, str], object]

TOOL_SUPPORT: tuple[ToolSupport, ...] = get_args(ToolSupport)
# Capabilities are read by tools (vllmctl probe sends an image only to `vision` models), so a
# typo must not silently switch a check off.
CAPABILITIES = (
    "chat", "completion", "vision", "audio", "tools", "structured_output", "reasoning",
    "embedding", "rerank", "code", "long_context",
)  # fmt: skip


@dataclass(frozen=True)
class ModelKey:
    name: str
    type: str  # the reference's "type" column
    shown_default: str  # the reference's "default" column
    help: str
    schema: dict[str, Any]
    parse: Parse | None = None  # None: read by a rule of its own (config/model_keys.py)
    default: object = None  # the value when absent; a callable is called for it
    per_model_only: bool = False  # no `defaults:` value: it must be unique
    required: str | None = None  # absent: this problem

    def fallback(self) -> object:
        return self.default() if callable(self.default) else self.default


def names_schema() -> dict[str, Any]:
    one = {"type": "string", "pattern": p.NAME.pattern}
    return {"oneOf": [one, {"type": "array", "minItems": 1, "uniqueItems": True, "items": one}]}


def block_schema(cls: type) -> dict[str, Any]:
    """A supervision block's schema, from its dataclass (config/settings.py)."""
    props: dict[str, Any] = {}
    for f in fields(cls):
        default = getattr(cls(), f.name)
        if isinstance(default, bool):
            props[f.name] = {"type": "boolean", "default": default}
        elif isinstance(default, int):
            props[f.name] = {
                "type": "integer",
                "minimum": p.MINIMUM.get(f.name, 1),
                "default": default,
            }
        else:
            props[f.name] = {"type": "number", "minimum": 0, "default": default}
    return {"type": "object", "additionalProperties": False, "properties": props}


_GPU = [
    {"type": "integer", "minimum": 0},
    {"type": "string", "pattern": p.GPU_UUID.pattern},
]
_BLOCK_HELP = {
    "startup": "load timeouts and readiness probes",
    "health": "liveness checks once ready",
    "restart": "backoff and restart budget",
    "stop": "stop grace period",
}


def _keys() -> tuple[ModelKey, ...]:
    K = ModelKey
    gw = "host gateway: "
    return (
        K("model", "string", "required", "local model directory, a single `.gguf` file, or a "
          "Hugging Face repo id (`org/name`); `./` and `../` are relative to the file",
          {"type": "string", "minLength": 1}, p.string, None, True,
          "is required (a local directory or a Hugging Face repo id)"),
        K("served_model_name", "string or list", "the model's name",
          "names clients use in `model`; unique across all models", names_schema(), p.names,
          per_model_only=True),
        K("host", "string", f"`{LOOPBACK}`", "address the engine listens on",
          {"type": "string", "minLength": 1, "default": LOOPBACK}, p.string, LOOPBACK),
        K("port", f"{PORT_RANGE[0]}-{PORT_RANGE[1]}", "required",
          "engine port; unique across models (0.0.0.0 clashes with every address)",
          {"type": "integer", "minimum": PORT_RANGE[0], "maximum": PORT_RANGE[1]}, p.port,
          None, True, "is required"),
        K("venv", "path", "`$VSUP_ENGINE_VENV` or `/opt/vllm-supervisor/engine`",
          "engine venv (made by `scripts/setup-engine`); pin a model to another vLLM by "
          "pointing it at another venv", {"type": "string", "minLength": 1}, p.path,
          default_venv),
        K("previous_venv", "path", "none",
          "the venv the model ran from before its last `vllmctl upgrade`, kept for "
          "`vllmctl rollback`; written by vllmctl, removed by `vllmctl upgrade "
          "--forget-previous`. It never changes what the engine runs",
          {"type": "string", "minLength": 1}, p.path, None, per_model_only=True),
        K("gpus", "list of indexes or UUIDs", "all visible",
          "becomes `CUDA_VISIBLE_DEVICES`; must cover tensor x pipeline parallel size. UUIDs "
          "(`GPU-...`, as `nvidia-smi -L` prints them) name a card whatever the enumeration "
          "order; indexes are NVML's (PCI bus order, as `nvidia-smi` shows them), and the "
          "engine gets `CUDA_DEVICE_ORDER=PCI_BUS_ID` so CUDA counts the same way. Checked "
          "against the machine where NVML answers",
          {"oneOf": [*_GPU, {"type": "null"}, {"type": "array", "minItems": 1,
                                               "uniqueItems": True, "items": {"oneOf": _GPU}}]}),
        K("gpu_group", "name", "none",
          "models that share GPUs: at most one member is active (starting, probing, ready or "
          "draining) at a time; `vllmctl activate --swap` deactivates the active one first. "
          "Members must set the same `gpus`",
          {"type": "string", "pattern": p.GROUP.pattern}, p.group_name),
        K("env", "map of strings", "`{}`",
          "extra environment for the engine; merged over `defaults.env`. Refused: "
          + ", ".join(f"`{k}`" for k in flags.OWNED_ENV),
          {"type": "object", "propertyNames": {"pattern": p.ENV_NAME.pattern},
           "additionalProperties": {"type": ["string", "number"]}}),
        K("offline", "bool", "`false`", "sets `HF_HUB_OFFLINE=1`; a repo id must then be in "
          "the HF cache (checked by `vllmctl check`)", {"type": "boolean", "default": False},
          p.boolean, False),
        K("api_key_file", "path", "none", "file holding the API key; passed as "
          "`VLLM_API_KEY` in the engine's environment, never on its command line",
          {"type": ["string", "null"]}, p.path),
        K("tool_support", "`native`, `react`, `none`", "`none`",
          "what a client that reads the registry may rely on. `native`: the engine parses "
          "tool calls (OpenAI `tools`/`tool_calls`); requires `engine.tool_call_parser` and "
          "`engine.enable_auto_tool_choice: true`, and `vllmctl check` warns when that "
          "parser leaves a forced call's arguments free of the function's schema (see "
          "[vLLM behaviour](vllm-behaviour.md#tool-calling)). `react`: no tool parsing; the "
          "client prompts for ReAct-style text (Thought/Action/Observation) and parses it "
          "itself. `none`: do not offer tools to this model. The host gateway takes tools "
          "out of requests for a model that is not `native` (`unsupported_tools`)",
          {"enum": list(TOOL_SUPPORT), "default": "none"}, p.choice(TOOL_SUPPORT), "none"),
        K("description", "string", '`""`', "free text for operators and routers",
          {"type": "string"}, p.string, ""),
        K("roles", "list of strings", "`[]`", "free labels (chat, code, ...)",
          {"type": "array", "items": {"type": "string"}}, p.str_list(None), ()),
        K("capabilities", "list", "`[]`",
          "one or more of " + ", ".join(f"`{c}`" for c in CAPABILITIES),
          {"type": "array", "items": {"enum": list(CAPABILITIES)}}, p.str_list(CAPABILITIES),
          ()),
        K("aliases", "list of strings", "`[]`", "extra names for routers (the host gateway "
          "swaps one for the first served name); unique across models",
          names_schema()["oneOf"][1], p.names, (), True),
        K("deprecated", "bool or message", "`false`", "`vllmctl check` warns with the "
          "message", {"type": ["boolean", "string"]}, p.deprecated),
        K("engine", "map", "`{}`", "typed vLLM options, below; merged over `defaults.engine`",
          {"type": "object", "additionalProperties": False,
           "properties": {o.name: o.schema() for o in engine_options.OPTIONS}}),
        K("entrypoint", "list of strings", "the engine's own",
          "the argv that starts vLLM's OpenAI server, before the model's flags: e.g. a wrapper "
          "`[/usr/bin/numactl, --cpunodebind=0, --, '{python}', -m, "
          "vllm.entrypoints.openai.api_server]`. `{python}` and `{venv}` name the engine "
          "venv's; `{model}` places the model (else `--model MODEL` follows)",
          {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
          p.entrypoint, None),
        K("nodes", "map", "none", "one engine across several hosts with vLLM's multi-node "
          "mode, one supervisor per host, restarted as one group: `hosts` (each host's "
          "address, rank 0 first; a host finds its rank by the addresses of `interface`), "
          "`interface` (the cluster network's NIC), `key_file` (the group's shared key), "
          f"`master_port` (default {nodes_keys.MASTER_PORT}), `link_port` (default "
          f"{nodes_keys.LINK_PORT}). See [multi-node](multi-node.md)",
          {"type": "object", "additionalProperties": False, "required": ["hosts", "interface",
           "key_file"], "properties": {
              "hosts": {"type": "array", "minItems": 2, "uniqueItems": True,
                        "items": {"type": "string"}},
              "interface": {"type": "string", "pattern": nodes_keys.IFNAME.pattern},
              "key_file": {"type": "string", "minLength": 1},
              "master_port": {"type": "integer", "minimum": PORT_RANGE[0],
                              "maximum": PORT_RANGE[1], "default": nodes_keys.MASTER_PORT},
              "link_port": {"type": "integer", "minimum": PORT_RANGE[0],
                            "maximum": PORT_RANGE[1], "default": nodes_keys.LINK_PORT}}},
          per_model_only=True),
        K("extra_args", "list of strings", "`[]`", "raw vLLM flags for what has no typed "
          "key; checked against the installed vLLM's flag list",
          {"type": "array", "items": {"type": ["string", "number"]}}, p.extra_args, ()),
        K("on_demand", "bool", "`true`", gw + "a request naming the model activates it "
          "(swapping in a `gpu_group`); `false`: the gateway only forwards to it while it is "
          "ready", {"type": "boolean", "default": True}),
        K("chat_fallback", "`off`, `on_failure`, `always`", "`off`",
          gw + "answer chat requests through `/v1/completions`: `on_failure` when the "
          "engine's chat answer is a 400 about the chat template or has neither content nor "
          "tool calls (a stream is held back until it shows content, tool calls or "
          "reasoning, and replaced if it ends without), `always` for every chat request. "
          "The prompt is the engine's own `/tokenize` of the messages (its template), else "
          "a plain-text flattening. Requests with `tools` are refused rather than "
          "rewritten. The answer carries `X-Vllm-Supervisor-Chat-Fallback`",
          {"enum": [*CHAT_FALLBACK, False], "default": "off"}),
        K("ttl", "seconds", "`gateway.ttl`", gw + "deactivate the model after this long "
          "with no request in flight (counted from the end of the last one); 0: never",
          {"type": "number", "minimum": 0}),
        K("max_queue", "whole number", "`gateway.max_queue`", gw + "requests that may wait "
          "for the model; beyond, 429 with `Retry-After`", {"type": "integer", "minimum": 0}),
        K("concurrency", "whole number", "`gateway.concurrency`", gw + "requests in flight "
          "to the model at once; more wait in its queue. 0: no cap",
          {"type": "integer", "minimum": 0}),
        K("unsupported_tools", "`drop`, `refuse`", "`gateway.unsupported_tools`",
          "host gateway, for a model whose `tool_support` is not `native`: `drop` removes "
          "`tools`, "
          "`tool_choice` and `parallel_tool_calls` from a request that lets the model answer "
          "without a call (none, `auto` or `none`) and says so in "
          "`X-Vllm-Supervisor-Tools-Removed`; `refuse` answers it 400. A request that "
          "demands a call (`required`, a named function) is refused either way",
          {"enum": list(UNSUPPORTED_TOOLS)}),
        K("load_progress", "bool", "`gateway.load_progress`", gw + "a streamed chat that "
          "waits for the model to load (or swap in) gets the load's phases at once, as "
          "`reasoning` deltas (Open WebUI shows them as its 'Thinking' block), then the "
          "answer; `false`: nothing is sent until the engine answers", {"type": "boolean"}),
        K("request_timeout", "seconds", "`gateway.request_timeout`", gw + "the most one "
          "request may take from its forward to the engine to the end of the answer; beyond, "
          "504 (or an error event in a stream) and the engine's request is aborted. 0: no "
          "limit", {"type": "number", "minimum": 0}),
        K("autostart", "bool", "`true`", "start the engine with the service; `false`: READY "
          "at once with the engine inactive", {"type": "boolean", "default": True}),
        K("deactivate", "`stop`, `sleep`", "`stop`",
          "what deactivate does after the drain: stop the engine, or put it to sleep with "
          "vLLM's sleep mode (CUDA engines; the engine stays up, its GPU memory is freed, and "
          "activate wakes it in seconds). `sleep` adds `--enable-sleep-mode` and "
          "`VLLM_SERVER_DEV_MODE=1`, so it needs a loopback `host`; refused for vllm-cpu. "
          "`vllmctl deactivate --stop` stops anyway",
          {"enum": list(settings.DEACTIVATE), "default": "stop"}),
        K("sleep_level", "`1`, `2`", "`1`",
          "`1`: the weights move to host RAM (needs free RAM of their size, checked before "
          "each sleep: too little stops instead); `2`: they are discarded and reloaded from "
          "disk at wake (slower wake, no RAM)",
          {"enum": list(settings.SLEEP_LEVELS), "default": 1}),
        *(K(name, "map", "below", _BLOCK_HELP[name], block_schema(cls))
          for name, cls in settings.BLOCKS.items()),
    )  # fmt: skip


KEYS: tuple[ModelKey, ...] = _keys()
BY_NAME: dict[str, ModelKey] = {k.name: k for k in KEYS}
MODEL_KEYS: tuple[str, ...] = tuple(BY_NAME)
PER_MODEL_ONLY = frozenset(k.name for k in KEYS if k.per_model_only)
