"""The installed vLLM's own argument parser judges what this project renders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.engine import flagcache
from vllm_supervisor.engine import options as engine_options
from vllm_supervisor.engine.detect import detect
from vllm_supervisor.preflight.check import server_args
from vllm_supervisor.preflight.render import render

from tests.conftest import EngineEnv
from tests.helpers import write_config

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]


def test_every_typed_option_renders_flags_the_real_parser_accepts(
    engine_env: EngineEnv, tmp_path: Path
) -> None:
    m = engine_env.model
    cfg = load_registry(
        write_config(
            tmp_path,
            f"""
    models:
      all:
        model: {m}
        port: 8001
        venv: {engine_env.venv}
        tool_support: native
        engine:
          max_model_len: 1024
          gpu_memory_utilization: 0.5
          kv_cache_memory_bytes: 64MiB
          dtype: float32
          quantization: fp8
          kv_cache_dtype: auto
          enforce_eager: true
          max_num_seqs: 8
          max_num_batched_tokens: 2048
          enable_prefix_caching: false
          enable_chunked_prefill: true
          tensor_parallel_size: 1
          pipeline_parallel_size: 1
          data_parallel_size: 1
          distributed_executor_backend: mp
          trust_remote_code: false
          tokenizer: {m}
          revision: main
          hf_config_path: {m}
          chat_template: "{{{{ messages }}}}"
          chat_template_content_format: string
          tool_call_parser: hermes
          enable_auto_tool_choice: true
          reasoning_parser: deepseek_r1
          response_role: assistant
          return_tokens_as_token_ids: false
          structured_outputs_config: {{backend: xgrammar}}
          speculative_config: {{method: ngram, num_speculative_tokens: 2, prompt_lookup_max: 3}}
          compilation_config: {{cudagraph_capture_sizes: [1, 2]}}
          attention_backend: CPU_ATTN
          load_format: safetensors
          generation_config: vllm
          max_logprobs: 5
          enable_log_requests: false
          max_log_len: 100
          disable_log_stats: true
          limit_mm_per_prompt: {{image: 2, video: 0}}
          shutdown_timeout: 5
          seed: 1
    """,
        )
    ).models["all"]
    assert set(cfg.engine) == set(engine_options.BY_NAME)
    info = detect(engine_env.venv)
    cmd = render(cfg, info)
    ok, err = flagcache.parse_argv(info, server_args(cmd))
    assert ok, err
    # ...and a check can fail: the same parser refuses a flag it does not know.
    ok, err = flagcache.parse_argv(info, [*server_args(cmd), "--no-such-flag"])
    assert not ok and "unrecognized arguments: --no-such-flag" in err


def test_flag_list_matches_the_rendering_rules(
    engine_env: EngineEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VSUP_CACHE_DIR", str(tmp_path))
    info = detect(engine_env.venv)
    assert flagcache.cached_flags(info) is None
    flags = flagcache.probe_flags(info)
    assert flagcache.cached_flags(info) == flags
    for opt in engine_options.OPTIONS:
        assert opt.flag in flags, f"{opt.flag} unknown to {info.label}"
        # Booleans render as --x / --no-x: vLLM must build them with BooleanOptionalAction,
        # except the store_true flags marked negatable=False (false renders nothing).
        assert flags[opt.flag]["negatable"] is (opt.kind == "bool" and opt.negatable), opt.name
    for gone in ("--disable-log-requests", "--task", "--swap-space"):
        assert gone not in flags  # the rejections in flags.MOVED hold for 0.32


def test_example_config_in_etc_passes_strict_check(engine_env: EngineEnv) -> None:
    env = {**os.environ, "VSUP_ENGINE_VENV": str(engine_env.venv)}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "vllm_supervisor.ctl.main",
            "check",
            "--strict",
            "--config-dir",
            str(ROOT / "etc"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "qwen2.5-0.5b: ok" in res.stdout and "qwen2.5-coder-1.5b: ok" in res.stdout


def test_strict_check_reports_what_only_vllm_can_judge(
    engine_env: EngineEnv, tmp_path: Path
) -> None:
    # Our table takes any mapping here; vLLM's parser validates it with pydantic (this exact
    # mistake was made while writing test_real_engine.py).
    cfg = write_config(
        tmp_path,
        f"""
    models:
      a: {{model: {engine_env.model}, port: 8001, venv: {engine_env.venv}}}
      b:
        model: {engine_env.model}
        port: 8002
        venv: {engine_env.venv}
        engine: {{structured_outputs_config: {{disable_any_whitespace: true}}}}
      c:
        model: {engine_env.model}
        port: 8003
        venv: {engine_env.venv}
        # A wrapper (issue 20, Cortex #5): vLLM's parser still sees its own flags.
        entrypoint: [/usr/bin/env, "{{python}}", -m, vllm.entrypoints.openai.api_server]
        engine: {{max_model_len: 512}}
    """,
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "vllm_supervisor.ctl.main",
            "check",
            "--strict",
            "--config-dir",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 78, res.stdout + res.stderr
    assert "a: ok" in res.stdout and "b: INVALID" in res.stdout and "c: ok" in res.stdout
    assert f"command  /usr/bin/env {engine_env.venv}/bin/python -m vllm.entrypoints" in res.stdout
    assert (
        f"{cfg}/models.yaml:3: models.b: vLLM 0.32.0's parser rejects the command: " in res.stderr
    )
    assert "disable_any_whitespace is only supported for xgrammar and guidance" in res.stderr
