"""A JSON Schema for models.yaml (and models.d/*.yaml), from the validator's own tables, for
editors (yaml-language-server and friends). The validator stays the authority: it also checks
what a schema cannot (unique ports across files, GPU counts, installed vLLM version).

    python -m vllm_supervisor.reference.schema > docs/models.schema.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields as dc_fields
from typing import Any

from vllm_supervisor.config import key_parsers, settings
from vllm_supervisor.config.model_keys import CAPABILITIES, MODEL_KEYS, PER_MODEL_ONLY, TOOL_SUPPORT
from vllm_supervisor.config.registry import SLUG
from vllm_supervisor.engine import options as engine_options

# Every pattern is the validator's own (config/key_parsers.py, engine/options.py,
# config/registry.py), so an editor and vllmctl check accept the same strings.
_NAMES: dict[str, Any] = {
    "oneOf": [
        {"type": "string", "pattern": key_parsers.NAME.pattern},
        {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": key_parsers.NAME.pattern},
        },
    ]
}


def _option(opt: engine_options.EngineOption) -> dict[str, Any]:
    out: dict[str, Any] = {"description": opt.help}
    if opt.kind == "bool":
        out["type"] = "boolean"
    elif opt.kind == "choice":
        out["enum"] = list(opt.choices)
    elif opt.kind == "json":
        out["type"] = ["object", "integer"] if opt.name == "compilation_config" else "object"
    elif opt.kind == "size":
        out["oneOf"] = [
            {"type": "integer", "minimum": 1},
            {"type": "string", "pattern": engine_options.SIZE_PATTERN},
        ]
    elif opt.kind == "int_or_auto":
        out["oneOf"] = [{"type": "integer", "minimum": 1}, {"const": "auto"}]
    elif opt.kind in ("int", "float"):
        out["type"] = "integer" if opt.kind == "int" else "number"
        if opt.minimum is not None:
            out["minimum"] = opt.minimum
        if opt.maximum is not None:
            out["maximum"] = opt.maximum
    else:
        out.update(type="string", minLength=1)
    return out


def _block(cls: type) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for f in dc_fields(cls):
        default = getattr(cls(), f.name)
        if isinstance(default, bool):
            props[f.name] = {"type": "boolean", "default": default}
        elif isinstance(default, int):
            props[f.name] = {
                "type": "integer",
                "minimum": key_parsers.MINIMUM.get(f.name, 1),
                "default": default,
            }
        else:
            props[f.name] = {"type": "number", "minimum": 0, "default": default}
    return {"type": "object", "additionalProperties": False, "properties": props}


def model_properties() -> dict[str, Any]:
    props: dict[str, Any] = {
        "model": {"type": "string", "minLength": 1},
        "served_model_name": _NAMES,
        "host": {"type": "string", "minLength": 1, "default": "127.0.0.1"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "venv": {"type": "string", "minLength": 1},
        "gpu_group": {"type": "string", "pattern": key_parsers.GROUP.pattern},
        "gpus": {
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": key_parsers.GPU_UUID.pattern},
                {"type": "null"},
                {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {
                        "oneOf": [
                            {"type": "integer", "minimum": 0},
                            {"type": "string", "pattern": key_parsers.GPU_UUID.pattern},
                        ]
                    },
                },
            ]
        },
        "env": {
            "type": "object",
            "propertyNames": {"pattern": key_parsers.ENV_NAME.pattern},
            "additionalProperties": {"type": ["string", "number"]},
        },
        "offline": {"type": "boolean", "default": False},
        "api_key_file": {"type": ["string", "null"]},
        "tool_support": {"enum": list(TOOL_SUPPORT), "default": "none"},
        "description": {"type": "string"},
        "roles": {"type": "array", "items": {"type": "string"}},
        "capabilities": {"type": "array", "items": {"enum": list(CAPABILITIES)}},
        "aliases": _NAMES["oneOf"][1],
        "deprecated": {"type": ["boolean", "string"]},
        "engine": {
            "type": "object",
            "additionalProperties": False,
            "properties": {o.name: _option(o) for o in engine_options.OPTIONS},
        },
        "extra_args": {"type": "array", "items": {"type": ["string", "number"]}},
        "on_demand": {"type": "boolean", "default": True},
        "chat_fallback": {"enum": ["off", "on_failure", "always", False], "default": "off"},
        "ttl": {"type": "number", "minimum": 0},
        "max_queue": {"type": "integer", "minimum": 0},
        "concurrency": {"type": "integer", "minimum": 0},
        "unsupported_tools": {"enum": ["drop", "refuse"]},
        "load_progress": {"type": "boolean"},
        "request_timeout": {"type": "number", "minimum": 0},
        "autostart": {"type": "boolean", "default": True},
        "deactivate": {"enum": list(settings.DEACTIVATE), "default": "stop"},
        "sleep_level": {"enum": list(settings.SLEEP_LEVELS), "default": 1},
        **{name: _block(cls) for name, cls in settings.BLOCKS.items()},
    }
    assert set(props) == set(MODEL_KEYS), set(props) ^ set(MODEL_KEYS)
    return props


def render() -> dict[str, Any]:
    props = model_properties()
    model = {"type": "object", "additionalProperties": False, "properties": props}
    defaults = {
        "type": "object",
        "additionalProperties": False,
        "properties": {k: v for k, v in props.items() if k not in PER_MODEL_ONLY},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "vllm-supervisor models.yaml",
        "description": "Generated by `python -m vllm_supervisor.reference.schema`; `vllmctl check` "
        "is the authority (it also checks ports across files, GPUs, and the "
        "installed vLLM version).",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "defaults": defaults,
            "gateway": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "listen": {"type": "string", "pattern": r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d+$"},
                    "ttl": {"type": "number", "minimum": 0, "default": 0},
                    "max_queue": {"type": "integer", "minimum": 0, "default": 64},
                    "load_timeout": {"type": "number", "exclusiveMinimum": 0, "default": 900},
                    "concurrency": {"type": "integer", "minimum": 0, "default": 0},
                    "max_body": {"type": "integer", "minimum": 1, "default": 32 * 1024**2},
                    "admin_keys_file": {"type": "string", "minLength": 1},
                    "api_keys_file": {"type": "string", "minLength": 1},
                    "unsupported_tools": {"enum": ["drop", "refuse"], "default": "drop"},
                    "load_progress": {"type": "boolean", "default": True},
                    "request_timeout": {"type": "number", "minimum": 0, "default": 0},
                },
            },
            "models": {
                "type": "object",
                "propertyNames": {"pattern": SLUG.pattern},
                "additionalProperties": model,
            },
        },
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(render(), indent=2) + "\n")
