"""The typed `engine:` options of a model and how each becomes vLLM flags.

One table: validation, rendering, the config reference in docs/configuration.md and the
JSON Schema are all generated from it, so they cannot drift apart. Booleans render as
`--flag` / `--no-flag`: vLLM builds its bool options with argparse.BooleanOptionalAction
(checked against the real 0.32 parser in tests/e2e), and an explicit `false` must beat
vLLM's own default (e.g. prefix caching is on by default in the V1 engine).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from vllm_supervisor.engine.versions import Version

Kind = Literal["int", "float", "bool", "str", "choice", "json", "size", "int_or_auto"]


@dataclass(frozen=True)
class EngineOption:
    name: str
    kind: Kind
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    since: Version | None = None  # first vLLM release that accepts it
    env_before: str | None = None  # env var that carried it before `since`
    # A store_true flag without --no-FLAG (vLLM's parser, e.g. --disable-log-stats): `false`
    # is vLLM's default and renders nothing.
    negatable: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def schema(self) -> dict[str, Any]:
        """Its JSON Schema (docs/models.schema.json), from the same fields the validator
        checks: an editor and vllmctl check accept the same values."""
        out: dict[str, Any] = {"description": self.help}
        if self.kind == "bool":
            out["type"] = "boolean"
        elif self.kind == "choice":
            out["enum"] = list(self.choices)
        elif self.kind == "json":
            out["type"] = ["object", "integer"] if self.name == "compilation_config" else "object"
        elif self.kind == "size":
            out["oneOf"] = [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": SIZE_PATTERN},
            ]
        elif self.kind == "int_or_auto":
            out["oneOf"] = [{"type": "integer", "minimum": 1}, {"const": "auto"}]
        elif self.kind in ("int", "float"):
            out["type"] = "integer" if self.kind == "int" else "number"
            if self.minimum is not None:
                out["minimum"] = self.minimum
            if self.maximum is not None:
                out["maximum"] = self.maximum
        else:
            out.update(type="string", minLength=1)
        return out


_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
_KV_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla")

OPTIONS: tuple[EngineOption, ...] = (
    EngineOption(
        "max_model_len",
        "int_or_auto",
        "context length in tokens; 'auto' fits the KV cache (vLLM >= 0.20)",
        minimum=1,
    ),
    EngineOption(
        "gpu_memory_utilization",
        "float",
        "fraction of GPU memory vLLM may take",
        minimum=0.01,
        maximum=1.0,
    ),
    EngineOption(
        "kv_cache_memory_bytes",
        "size",
        "KV cache size; overrides gpu_memory_utilization (bytes, or '8GiB')",
        minimum=1,
    ),
    EngineOption("dtype", "choice", "weight/activation dtype", choices=_DTYPES),
    EngineOption("quantization", "str", "quantization method (awq, gptq, fp8, ...)"),
    EngineOption("kv_cache_dtype", "choice", "KV cache dtype", choices=_KV_DTYPES),
    EngineOption("enforce_eager", "bool", "skip CUDA graphs / torch.compile (faster start)"),
    EngineOption("max_num_seqs", "int", "max sequences per batch", minimum=1),
    EngineOption("max_num_batched_tokens", "int", "max tokens per batch", minimum=1),
    EngineOption("enable_prefix_caching", "bool", "reuse KV cache across shared prefixes"),
    EngineOption("enable_chunked_prefill", "bool", "split long prefills into chunks"),
    EngineOption("tensor_parallel_size", "int", "GPUs per pipeline stage", minimum=1),
    EngineOption("pipeline_parallel_size", "int", "pipeline stages", minimum=1),
    EngineOption("data_parallel_size", "int", "data-parallel engine replicas", minimum=1),
    EngineOption(
        "distributed_executor_backend",
        "choice",
        "executor for TP/PP",
        choices=("mp", "ray", "uni", "external_launcher"),
    ),
    EngineOption("trust_remote_code", "bool", "run the model repo's own Python code"),
    EngineOption("tokenizer", "str", "tokenizer path or repo id, when not the model's"),
    EngineOption(
        "revision", "str", "the repo's revision to serve: a branch, a tag or a commit (pins it)"
    ),
    EngineOption("hf_config_path", "str", "config.json source, when not the model's"),
    EngineOption("chat_template", "str", "chat template: a file path or the Jinja text"),
    EngineOption(
        "chat_template_content_format",
        "choice",
        "how message content is rendered",
        choices=("auto", "string", "openai"),
    ),
    EngineOption("tool_call_parser", "str", "tool-call parser (hermes, llama3_json, ...)"),
    EngineOption("enable_auto_tool_choice", "bool", "let the model decide to call tools"),
    EngineOption("reasoning_parser", "str", "reasoning parser (deepseek_r1, qwen3, ...)"),
    EngineOption("response_role", "str", "role name of generated messages"),
    EngineOption("return_tokens_as_token_ids", "bool", "logprobs tokens as 'token_id:N'"),
    EngineOption("structured_outputs_config", "json", "structured output backend settings"),
    EngineOption("speculative_config", "json", "speculative decoding settings"),
    EngineOption("compilation_config", "json", "torch.compile / CUDA graph settings"),
    EngineOption(
        "attention_backend",
        "str",
        "attention backend (FLASH_ATTN, ...)",
        since=(0, 20, 0),
        env_before="VLLM_ATTENTION_BACKEND",
    ),
    EngineOption("load_format", "str", "weight format (auto, safetensors, gguf, ...)"),
    EngineOption(
        "generation_config", "str", "'auto', 'vllm' or a folder with generation_config.json"
    ),
    EngineOption(
        "max_logprobs", "int", "max logprobs a request may ask for (-1: no cap)", minimum=-1
    ),
    EngineOption("enable_log_requests", "bool", "log every request (prompts included)"),
    # Issue 20: these were reachable only as raw extra_args.
    EngineOption(
        "max_log_len", "int", "characters of each prompt a request log line keeps", minimum=0
    ),
    EngineOption(
        "disable_log_stats",
        "bool",
        "no periodic throughput/KV-cache stats lines in the log",
        negatable=False,
    ),
    EngineOption(
        "limit_mm_per_prompt",
        "json",
        "most items of each modality per prompt, e.g. {image: 4, video: 0}",
    ),
    EngineOption(
        "shutdown_timeout",
        "int",
        "seconds to drain requests on SIGTERM",
        minimum=0,
        since=(0, 20, 0),
    ),
    EngineOption("seed", "int", "random seed"),
)

BY_NAME: dict[str, EngineOption] = {o.name: o for o in OPTIONS}
BY_FLAG: dict[str, EngineOption] = {o.flag: o for o in OPTIONS}

# Case spelled out (no IGNORECASE): the JSON Schema uses this very text, and ECMA 262 regexes
# have no inline flags (docs/models.schema.json must accept what vllmctl check accepts).
SIZE_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*([KkMmGgTt][Ii]?[Bb]?|[Bb])?\s*$"
_SIZE = re.compile(SIZE_PATTERN)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}

OptionValue = int | float | bool | str | dict[str, object]


def coerce(opt: EngineOption, raw: object) -> tuple[OptionValue | None, str | None]:
    """(value, None) when `raw` fits the option, else (None, a reason an operator can act on)."""
    if raw is None:
        return None, "has no value (remove the key to use vLLM's default)"
    if opt.kind == "bool":
        if isinstance(raw, bool):
            return raw, None
        return None, f"expected true or false, got {raw!r}"
    if opt.kind == "int_or_auto" and raw == "auto":
        return "auto", None
    if opt.kind in ("int", "int_or_auto"):
        if isinstance(raw, bool) or not isinstance(raw, int):
            return None, f"expected a whole number, got {raw!r}"
        return _ranged(opt, raw)
    if opt.kind == "float":
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return None, f"expected a number, got {raw!r}"
        return _ranged(opt, float(raw))
    if opt.kind == "size":
        return _size(opt, raw)
    if opt.kind == "choice":
        if raw not in opt.choices:
            return None, f"expected one of {', '.join(opt.choices)}; got {raw!r}"
        return str(raw), None
    if opt.kind == "json":
        if opt.name == "compilation_config" and isinstance(raw, int) and not isinstance(raw, bool):
            return raw, None  # vLLM accepts a bare optimisation level, e.g. `-O3`
        if not isinstance(raw, dict):
            return None, f"expected a mapping of settings, got {raw!r}"
        return raw, None
    if not isinstance(raw, str) or not raw.strip():
        return None, f"expected a non-empty string, got {raw!r}"
    return raw, None


def _ranged(opt: EngineOption, v: int | float) -> tuple[OptionValue | None, str | None]:
    if opt.minimum is not None and v < opt.minimum:
        return None, f"must be >= {opt.minimum:g}, got {v!r}"
    if opt.maximum is not None and v > opt.maximum:
        return None, f"must be <= {opt.maximum:g}, got {v!r}"
    return v, None


def _size(opt: EngineOption, raw: object) -> tuple[OptionValue | None, str | None]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return _ranged(opt, raw)
    m = _SIZE.match(raw) if isinstance(raw, str) else None
    if not m:
        return None, f"expected bytes or a size such as '8GiB', got {raw!r}"
    unit = (m.group(2) or "").lower().removesuffix("b")
    return _ranged(opt, int(float(m.group(1)) * _UNITS[unit]))


def render(opt: EngineOption, value: OptionValue) -> list[str]:
    """The argv tokens for one option (no env fallback: see render.py for `env_before`)."""
    if opt.kind == "bool":
        if not value and not opt.negatable:
            return []
        return [opt.flag] if value else ["--no-" + opt.flag[2:]]
    if isinstance(value, dict):
        # vLLM parses these flags as JSON; compact, key-sorted for a stable command line.
        return [opt.flag, json.dumps(value, sort_keys=True, separators=(",", ":"))]
    return [opt.flag, str(value)]
