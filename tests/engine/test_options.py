"""Every typed engine option: what it accepts, what it refuses, and the flags it renders."""

from __future__ import annotations

import json

import pytest
from vllm_supervisor.engine import options as eo

CASES: list[tuple[str, object, list[str], object]] = [
    ("max_model_len", 4096, ["--max-model-len", "4096"], 0),
    ("gpu_memory_utilization", 0.9, ["--gpu-memory-utilization", "0.9"], 1.5),
    (
        "kv_cache_memory_bytes",
        "1.5GiB",
        ["--kv-cache-memory-bytes", str(int(1.5 * 1024**3))],
        "lots",
    ),
    ("dtype", "bfloat16", ["--dtype", "bfloat16"], "fp12"),
    ("quantization", "awq", ["--quantization", "awq"], ""),
    ("kv_cache_dtype", "fp8", ["--kv-cache-dtype", "fp8"], "int3"),
    ("enforce_eager", True, ["--enforce-eager"], "yes"),
    ("max_num_seqs", 64, ["--max-num-seqs", "64"], 0),
    ("max_num_batched_tokens", 8192, ["--max-num-batched-tokens", "8192"], 2.5),
    ("enable_prefix_caching", False, ["--no-enable-prefix-caching"], 1),
    ("enable_chunked_prefill", True, ["--enable-chunked-prefill"], None),
    ("tensor_parallel_size", 2, ["--tensor-parallel-size", "2"], 0),
    ("pipeline_parallel_size", 1, ["--pipeline-parallel-size", "1"], True),
    ("data_parallel_size", 2, ["--data-parallel-size", "2"], "2"),
    ("distributed_executor_backend", "ray", ["--distributed-executor-backend", "ray"], "mpi"),
    ("trust_remote_code", False, ["--no-trust-remote-code"], "false"),
    ("tokenizer", "org/tok", ["--tokenizer", "org/tok"], 5),
    ("hf_config_path", "/m/cfg", ["--hf-config-path", "/m/cfg"], []),
    ("chat_template", "{{ x }}", ["--chat-template", "{{ x }}"], ""),
    (
        "chat_template_content_format",
        "openai",
        ["--chat-template-content-format", "openai"],
        "html",
    ),
    ("tool_call_parser", "hermes", ["--tool-call-parser", "hermes"], {"a": 1}),
    ("enable_auto_tool_choice", True, ["--enable-auto-tool-choice"], "on"),
    ("reasoning_parser", "qwen3", ["--reasoning-parser", "qwen3"], ""),
    ("response_role", "assistant", ["--response-role", "assistant"], 1),
    ("return_tokens_as_token_ids", True, ["--return-tokens-as-token-ids"], 0),
    (
        "structured_outputs_config",
        {"backend": "xgrammar"},
        ["--structured-outputs-config", '{"backend":"xgrammar"}'],
        "xgrammar",
    ),
    (
        "speculative_config",
        {"num_speculative_tokens": 2, "method": "ngram"},
        ["--speculative-config", '{"method":"ngram","num_speculative_tokens":2}'],
        [1],
    ),
    ("compilation_config", 3, ["--compilation-config", "3"], "fast"),
    ("attention_backend", "FLASH_ATTN", ["--attention-backend", "FLASH_ATTN"], ""),
    ("load_format", "safetensors", ["--load-format", "safetensors"], 1),
    ("generation_config", "vllm", ["--generation-config", "vllm"], False),
    ("max_logprobs", -1, ["--max-logprobs", "-1"], -2),
    ("enable_log_requests", True, ["--enable-log-requests"], "true"),
    ("max_log_len", 200, ["--max-log-len", "200"], -1),
    ("revision", "v1.0", ["--revision", "v1.0"], 3),
    ("disable_log_stats", True, ["--disable-log-stats"], "yes"),
    ("limit_mm_per_prompt", {"image": 2}, ["--limit-mm-per-prompt", '{"image":2}'], [2]),
    ("shutdown_timeout", 30, ["--shutdown-timeout", "30"], -1),
    ("seed", 0, ["--seed", "0"], "zero"),
]


def test_every_option_has_a_case() -> None:
    assert {c[0] for c in CASES} == set(eo.BY_NAME)


@pytest.mark.parametrize(("name", "good", "argv", "bad"), CASES, ids=[c[0] for c in CASES])
def test_option(name: str, good: object, argv: list[str], bad: object) -> None:
    opt = eo.BY_NAME[name]
    value, why = eo.coerce(opt, good)
    assert why is None and value is not None
    assert eo.render(opt, value) == argv
    assert eo.coerce(opt, bad)[0] is None
    assert eo.coerce(opt, None)[1] == "has no value (remove the key to use vLLM's default)"


def test_json_options_render_valid_sorted_json() -> None:
    opt = eo.BY_NAME["speculative_config"]
    rendered = eo.render(opt, {"b": [1, {"z": 1, "a": 2}], "a": None})[1]
    assert json.loads(rendered) == {"a": None, "b": [1, {"a": 2, "z": 1}]}
    assert rendered.index('"a"') < rendered.index('"b"')


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        (1024, 1024),
        ("1024", 1024),
        ("4KiB", 4096),
        ("2G", 2 * 10**9),
        ("2 GB", 2 * 10**9),
        ("1.5 GiB", int(1.5 * 2**30)),
        ("3mib", 3 * 2**20),
    ],
)
def test_sizes(raw: object, size: int) -> None:
    assert eo.coerce(eo.BY_NAME["kv_cache_memory_bytes"], raw) == (size, None)


def test_max_model_len_auto() -> None:
    assert eo.coerce(eo.BY_NAME["max_model_len"], "auto") == ("auto", None)
    assert eo.coerce(eo.BY_NAME["max_model_len"], "big")[1] == "expected a whole number, got 'big'"


def test_booleans_are_not_numbers() -> None:
    assert eo.coerce(eo.BY_NAME["max_num_seqs"], True)[0] is None
    assert eo.coerce(eo.BY_NAME["gpu_memory_utilization"], False)[0] is None


def test_a_store_true_flag_renders_only_when_true() -> None:
    """--disable-log-stats has no --no- form in vLLM's parser (issue 20)."""
    opt = eo.BY_NAME["disable_log_stats"]
    assert eo.render(opt, True) == ["--disable-log-stats"]
    assert eo.render(opt, False) == []
    mm = eo.BY_NAME["limit_mm_per_prompt"]
    assert eo.render(mm, {"video": 0, "image": 4}) == [
        "--limit-mm-per-prompt",
        '{"image":4,"video":0}',
    ]
