"""How much GPU memory a model needs, from its files and never from its name:

- weights: the byte ranges in each *.safetensors header (8-byte little-endian header length,
  then JSON: tensor -> dtype, shape, data_offsets);
- KV cache per token: 2 (K and V) x layers x KV heads x head dim x bytes of the cache dtype,
  from config.json (a multimodal model's text_config), times max_model_len;
- overhead: weights x 0.2 + 2 GiB for CUDA graphs and activations, the rule GPUStack uses.

An estimate, not a promise: `state` puts it beside the engine's own figures ("Model loading
took ...", the KV cache size) so its error is visible.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_supervisor.host import files

GIB = 1024**3
OVERHEAD_SHARE = 0.2
OVERHEAD_FIXED = 2 * GIB
BYTES = {
    "float32": 4, "float": 4, "fp32": 4,
    "float16": 2, "half": 2, "fp16": 2, "bfloat16": 2, "bf16": 2,
    "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1, "int8": 1,
}  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    weights: int  # bytes
    kv_per_token: int  # bytes
    max_model_len: int  # tokens
    overhead: int  # bytes

    @property
    def kv_cache(self) -> int:
        return self.kv_per_token * self.max_model_len

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead

    def describe(self) -> str:
        return (
            f"weights {self.weights / GIB:.1f} GiB + KV cache {self.kv_cache / GIB:.1f} GiB "
            f"({self.max_model_len} tokens x {self.kv_per_token / 1024:.0f} KiB) + overhead "
            f"{self.overhead / GIB:.1f} GiB = {self.total / GIB:.1f} GiB"
        )

    def as_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "kv_per_token": self.kv_per_token,
                "max_model_len": self.max_model_len, "kv_cache": self.kv_cache,
                "overhead": self.overhead, "total": self.total}  # fmt: skip


def safetensors_bytes(folder: Path) -> int:
    """Bytes of tensor data in every *.safetensors file of FOLDER, from the headers alone."""
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with f.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        total += sum(
            t["data_offsets"][1] - t["data_offsets"][0]
            for name, t in header.items()
            if name != "__metadata__"
        )
    return total


def text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = config.get("text_config")
    return inner if isinstance(inner, Mapping) else config


def kv_bytes_per_token(config: Mapping[str, Any], cache_dtype: str = "auto") -> int:
    c = text_config(config)
    layers = int(c["num_hidden_layers"])
    heads = int(c["num_attention_heads"])
    kv_heads = int(c.get("num_key_value_heads") or heads)  # absent: multi-head attention
    head_dim = int(c.get("head_dim") or c["hidden_size"] // heads)
    dtype = cache_dtype if cache_dtype != "auto" else model_dtype(config)
    return 2 * layers * kv_heads * head_dim * BYTES.get(dtype, 2)


def model_dtype(config: Mapping[str, Any]) -> str:
    c = text_config(config)
    return str(c.get("torch_dtype") or c.get("dtype") or config.get("torch_dtype") or "bfloat16")


def estimate(folder: Path, engine: Mapping[str, object]) -> Estimate | str:
    """The estimate for a model folder with the model's `engine:` options, or why there is
    none (no config.json, no safetensors, an architecture without these keys)."""
    try:
        config = json.loads(files.read_bytes(folder / "config.json", files.CONFIG_CAP * 4))
        weights = safetensors_bytes(folder)
        dtype = engine.get("kv_cache_dtype")
        kv = kv_bytes_per_token(config, dtype if isinstance(dtype, str) else "auto")
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        return f"no estimate: {exc}"
    if weights == 0:
        return "no estimate: no *.safetensors weights"
    length = engine.get("max_model_len")
    if not isinstance(length, int):
        length = int(text_config(config).get("max_position_embeddings") or 0)
    return Estimate(weights, kv, length, int(weights * OVERHEAD_SHARE) + OVERHEAD_FIXED)
