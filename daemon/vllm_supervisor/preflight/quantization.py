"""`engine.quantization` against the checkpoint's own and against the GPU (issue 20).

vLLM decides at start, 10-60 s in, what we can decide from config.json and NVML in a
millisecond (docs/vllm-behaviour.md, "Quantization"; read from vLLM 0.32,
config/model.py `_verify_quantization` and model_loader/weight_utils.py `get_quant_config`):
- a checkpoint with `quantization_config.quant_method` X loads only with a method of X's
  family (gptq_marlin loads a gptq checkpoint; awq does not): otherwise "Quantization method
  specified in the model config (X) does not match the quantization method specified in the
  `quantization` argument (Y)";
- a method that describes pre-quantized weights (awq, gptq, compressed-tensors, modelopt,
  ...) on a checkpoint without any quantization config fails with "Cannot find the config
  file for Y", after the weights are half read;
- each method has a minimum compute capability (`get_min_capability`), and vLLM refuses a
  GPU below it: "The quantization method Y is not supported for the current GPU".

Only what these tables name is judged: a method they do not know is left to vLLM.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from vllm_supervisor.host import files

# A checkpoint's quant_method -> the `quantization:` values that load it (the overrides of
# vLLM 0.32's `_verify_quantization`, each class's `override_quantization_method`).
FAMILIES: Mapping[str, frozenset[str]] = {
    "awq": frozenset({"awq", "awq_marlin", "auto_awq", "moe_wna16", "inc", "humming"}),
    "gptq": frozenset({"gptq", "gptq_marlin", "auto_gptq", "moe_wna16", "inc", "humming"}),
    "fp8": frozenset({"fp8"}),
    "compressed-tensors": frozenset({"compressed-tensors"}),
    "modelopt": frozenset({"modelopt", "modelopt_fp4", "modelopt_mxfp8", "modelopt_mixed"}),
    "modelopt_fp4": frozenset({"modelopt_fp4"}),
    "mxfp4": frozenset({"mxfp4", "gpt_oss_mxfp4"}),
    "bitsandbytes": frozenset({"bitsandbytes"}),
    "gguf": frozenset({"gguf"}),
}

# Methods that describe weights quantized before (their config class reads a quantization
# config): with none in the checkpoint, vLLM cannot start them. fp8, bitsandbytes,
# experts_int8, torchao and the online shorthands quantize at load and are not here.
PRE_QUANTIZED = frozenset(
    {"awq", "awq_marlin", "auto_awq", "gptq", "gptq_marlin", "auto_gptq", "marlin",
     "compressed-tensors", "modelopt", "modelopt_fp4", "modelopt_mxfp8", "modelopt_mixed",
     "moe_wna16", "quark", "inc", "gguf"}
)  # fmt: skip

# The files `get_config_filenames` names (auto_awq, auto_gptq, moe_wna16, modelopt).
QUANT_FILES = ("quantize_config.json", "quant_config.json", "hf_quant_config.json")

# `get_min_capability` of each method in vLLM 0.32 (major * 10 + minor).
MIN_CAPABILITY: Mapping[str, int] = {
    "awq": 75, "awq_marlin": 75, "auto_awq": 75,
    "gptq": 60, "gptq_marlin": 60, "auto_gptq": 60,
    "fp8": 75, "fbgemm_fp8": 80, "experts_int8": 80, "fp_quant": 100,
    "modelopt": 80, "modelopt_fp4": 75, "modelopt_mxfp8": 80, "modelopt_mixed": 75,
    "moe_wna16": 70, "mxfp4": 80, "gpt_oss_mxfp4": 80, "torchao": 75, "humming": 75,
}  # fmt: skip


def read_config(folder: Path) -> dict[str, object] | None:
    """FOLDER's config.json as a dict, or None (absent, unreadable, not JSON)."""
    try:
        got = json.loads(files.read_bytes(folder / "config.json", files.CONFIG_CAP * 4))
    except (OSError, ValueError):
        return None
    return got if isinstance(got, dict) else None


def checkpoint_method(config: Mapping[str, object]) -> str | None:
    """The checkpoint's quant_method, where vLLM looks for it: config.json's
    quantization_config, a vision model's text_config, or compressed-tensors'
    compression_config."""
    for holder in (config, config.get("text_config")):
        if isinstance(holder, Mapping):
            q = holder.get("quantization_config")
            if isinstance(q, Mapping) and isinstance(q.get("quant_method"), str):
                return str(q["quant_method"]).lower()
    if isinstance(config.get("compression_config"), Mapping):
        return "compressed-tensors"
    return None


def against_checkpoint(
    method: str, config: Mapping[str, object], folder: Path
) -> tuple[str, str] | None:
    """(severity, message) when METHOD cannot load this checkpoint, else None."""
    have = checkpoint_method(config)
    if have is not None:
        family = FAMILIES.get(have)
        if family is None or method in family:
            return None
        fits = ", ".join(sorted(family))
        return (
            "error",
            f"{method} does not load this checkpoint: its config.json says quant_method "
            f"{have}. vLLM would stop with 'Quantization method specified in the model config "
            f"({have}) does not match the quantization method specified in the `quantization` "
            f"argument ({method})'. Remove engine.quantization (vLLM reads the checkpoint's) "
            f"or use one of: {fits}",
        )
    if method in PRE_QUANTIZED and not any(os.path.isfile(folder / f) for f in QUANT_FILES):
        return (
            "error",
            f"{method} loads weights quantized before, and this checkpoint has none "
            "(config.json has no quantization_config; no quantize_config.json): vLLM would "
            f"stop with 'Cannot find the config file for {method}'. Use a {method} checkpoint, "
            "or a method that quantizes at load (fp8, bitsandbytes)",
        )
    return None


def against_gpus(method: str, capabilities: Mapping[int, tuple[int, int]]) -> str | None:
    """Why METHOD cannot run on some of these GPUs (index -> compute capability), or None."""
    need = MIN_CAPABILITY.get(method)
    if need is None:
        return None
    low = {i: c for i, c in sorted(capabilities.items()) if c[0] * 10 + c[1] < need}
    if not low:
        return None
    gpus = ", ".join(f"GPU {i} has {c[0]}.{c[1]}" for i, c in low.items())
    return (
        f"{method} needs a GPU of compute capability {need // 10}.{need % 10} or newer, and "
        f"{gpus}: vLLM would stop with 'The quantization method {method} is not supported "
        "for the current GPU'. Use a method this GPU runs (gptq needs 6.0, awq 7.5)"
    )
