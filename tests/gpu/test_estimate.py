"""The GPU memory estimate's arithmetic on real configs (values from the models' published
config.json files), with the sizes written out."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from vllm_supervisor.gpu.estimate import (
    GIB,
    Estimate,
    estimate,
    kv_bytes_per_token,
    safetensors_bytes,
)

LLAMA2_7B = {  # meta-llama/Llama-2-7b-hf: multi-head attention (no num_key_value_heads)
    "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_attention_heads": 32,
    "num_hidden_layers": 32, "max_position_embeddings": 4096, "torch_dtype": "float16",
}  # fmt: skip
QWEN2_7B = {  # Qwen/Qwen2-7B: grouped-query attention, 4 KV heads
    "architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584, "num_attention_heads": 28,
    "num_key_value_heads": 4, "num_hidden_layers": 28, "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}  # fmt: skip
MISTRAL_7B = {  # mistralai/Mistral-7B-v0.1: grouped-query attention, 8 KV heads
    "architectures": ["MistralForCausalLM"], "hidden_size": 4096, "num_attention_heads": 32,
    "num_key_value_heads": 8, "num_hidden_layers": 32, "max_position_embeddings": 32768,
    "torch_dtype": "bfloat16",
}  # fmt: skip


def test_kv_cache_per_token() -> None:
    # 2 (K, V) x layers x KV heads x head dim (hidden / heads) x bytes
    assert kv_bytes_per_token(LLAMA2_7B) == 2 * 32 * 32 * 128 * 2 == 512 * 1024
    assert kv_bytes_per_token(QWEN2_7B) == 2 * 28 * 4 * 128 * 2 == 56 * 1024
    assert kv_bytes_per_token(MISTRAL_7B) == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert kv_bytes_per_token(MISTRAL_7B, "fp8") == 64 * 1024  # engine.kv_cache_dtype: fp8
    assert kv_bytes_per_token({"text_config": QWEN2_7B}) == 56 * 1024  # multimodal wrapper
    explicit = {**QWEN2_7B, "head_dim": 64}
    assert kv_bytes_per_token(explicit) == 2 * 28 * 4 * 64 * 2


def write_safetensors(path: Path, tensors: dict[str, int]) -> None:
    """A safetensors file whose tensors hold N bytes each (zeros)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, n in tensors.items():
        header[name] = {"dtype": "BF16", "shape": [n // 2], "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def test_weights_come_from_the_safetensors_headers(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {"a": 1000, "b": 24})
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {"c": 4096})
    assert safetensors_bytes(tmp_path) == 1000 + 24 + 4096


def test_a_whole_estimate(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(MISTRAL_7B))
    write_safetensors(tmp_path / "model.safetensors", {"w": 10 * 1024})
    got = estimate(tmp_path, {"max_model_len": 8192})
    assert isinstance(got, Estimate)
    assert got.kv_cache == 8192 * 128 * 1024 == 1 * GIB
    assert got.overhead == int(10 * 1024 * 0.2) + 2 * GIB
    assert got.total == 10 * 1024 + 1 * GIB + got.overhead
    assert "KV cache 1.0 GiB (8192 tokens x 128 KiB)" in got.describe()
    # Without max_model_len the engine takes the model's own context length.
    full = estimate(tmp_path, {})
    assert isinstance(full, Estimate) and full.max_model_len == 32768 and full.kv_cache == 4 * GIB


@pytest.mark.parametrize("files", [{}, {"config.json": "{}"}, {"config.json": "not json"}])
def test_no_estimate_says_why(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    got = estimate(tmp_path, {})
    assert isinstance(got, str) and got.startswith("no estimate:")
