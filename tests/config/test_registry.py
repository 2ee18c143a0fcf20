"""Each validation rule of the model registry, with the file:line:key it must name."""

from __future__ import annotations

from pathlib import Path

import pytest
from vllm_supervisor.config.registry import ConfigInvalid, Registry, load_registry

from tests.helpers import write_config

GOOD = """
defaults:
  host: 127.0.0.1
  engine:
    gpu_memory_utilization: 0.8
    enforce_eager: true
  env:
    A: "1"
models:
  alpha:
    model: org/alpha
    port: 8001
    engine:
      max_model_len: 4096
      enforce_eager: false
    env:
      B: "2"
"""


def load(tmp_path: Path, text: str, dropins: dict[str, str] | None = None) -> Registry:
    return load_registry(write_config(tmp_path, text, dropins))


def errors(tmp_path: Path, text: str, dropins: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigInvalid) as exc:
        load(tmp_path, text, dropins)
    return [str(p) for p in exc.value.problems if p.severity == "error"]


def test_defaults_merge_and_model_wins(tmp_path: Path) -> None:
    m = load(tmp_path, GOOD).models["alpha"]
    assert m.engine == {
        "gpu_memory_utilization": 0.8,
        "enforce_eager": False,
        "max_model_len": 4096,
    }
    assert m.env == {"A": "1", "B": "2"}
    assert m.served_model_names == ("alpha",)  # the instance name unless told otherwise
    assert m.host == "127.0.0.1" and m.port == 8001 and m.tool_support == "none"


def test_dropins_add_models(tmp_path: Path) -> None:
    reg = load(tmp_path, GOOD, {"b.yaml": "models:\n  beta:\n    model: org/b\n    port: 8002\n"})
    assert sorted(reg.models) == ["alpha", "beta"]
    assert reg.models["beta"].file.endswith("models.d/b.yaml")


def test_missing_models_yaml_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as exc:
        load_registry(tmp_path / "nowhere")
    assert "models.yaml: not found" in str(exc.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    max_model_len: 3\n",
            ["models.yaml:5: models.a.max_model_len: unknown key"],
        ),
        (
            "models:\n  a:\n    model: x/y\n    prot: 1\n",
            [
                "models.yaml:4: models.a.prot: unknown key (did you mean 'port'?)",
                "models.yaml:2: models.a.port: is required",
            ],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    engine:\n      max_model_lenn: 9\n",
            [
                "models.yaml:6: models.a.engine.max_model_lenn: unknown engine option "
                "(did you mean 'max_model_len'?)"
            ],
        ),
        (
            "model:\n  a: {}\n",
            ["models.yaml:1: model: unknown top-level key (did you mean 'models'?)"],
        ),
        ("models:\n  a:\n    port: 1\n", ["models.yaml:2: models.a.model: is required"]),
        (
            "models:\n  a:\n    model: x/y\n    port: 70000\n",
            ["models.yaml:4: models.a.port: expected a TCP port 1-65535, got 70000"],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: '80'\n",
            ["models.yaml:4: models.a.port: expected a TCP port 1-65535, got '80'"],
        ),
        (
            "models:\n  Bad/Name:\n    model: x/y\n    port: 1\n",
            ["models.yaml:2: models.Bad/Name: model names are systemd instance names"],
        ),
        (
            "models:\n  " + "a" * 65 + ":\n    model: x/y\n    port: 1\n",
            ["models.yaml:2: models." + "a" * 65 + ": model names are systemd instance names"],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    offline: yes please\n",
            ["models.yaml:5: models.a.offline: expected true or false"],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    tool_support: natve\n",
            [
                "models.yaml:5: models.a.tool_support: expected one of native, react, none; "
                "got 'natve' (did you mean 'native'?)"
            ],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    capabilities: [chat, vison]\n",
            [
                "models.yaml:5: models.a.capabilities: unknown value 'vison' "
                "(did you mean 'vision'?)"
            ],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    gpus: [0, 0]\n",
            ["models.yaml:5: models.a.gpus: GPU 0 is listed twice"],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    gpus: [-1]\n",
            ["models.yaml:5: models.a.gpus: expected GPU indexes"],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    gpus: []\n",
            ["models.yaml:5: models.a.gpus: is empty"],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    served_model_name: [a, a]\n",
            ["models.yaml:5: models.a.served_model_name: 'a' is listed twice"],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    served_model_name: 'has space'\n",
            ["models.yaml:5: models.a.served_model_name: expected a name without spaces"],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    env:\n      FLAG: true\n",
            ['models.yaml:6: models.a.env.FLAG: expected a string (quote it: "True"), got bool'],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    env:\n      1BAD: x\n",
            ["models.yaml:6: models.a.env.1BAD: not a valid environment variable name"],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    env:\n      VLLM_API_KEY: s3cret\n",
            ["models.yaml:6: models.a.env.VLLM_API_KEY: set by the supervisor: use api_key_file:"],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    env:\n      NOTIFY_SOCKET: /x\n",
            ["models.yaml:6: models.a.env.NOTIFY_SOCKET: set by the supervisor"],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    deprecated: [1]\n",
            ["models.yaml:5: models.a.deprecated: expected true, false or a message"],
        ),
        (
            "defaults:\n  port: 1\nmodels: {}\n",
            ["models.yaml:2: defaults.port: is per model and cannot have a default"],
        ),
        (
            "defaults:\n  hots: x\nmodels: {}\n",
            ["models.yaml:2: defaults.hots: unknown key (did you mean 'host'?)"],
        ),
        (
            "models:\n  a:\n    model: x/y\n    port: 1\n    port: 2\n",
            ["models.yaml:5: port: duplicate key (first set on line 4)"],
        ),
        ("models:\n  a: [1\n", ["models.yaml:3: YAML syntax error"]),
        (
            "- just\n- a list\n",
            ["models.yaml:1: expected a mapping with 'models:' at the top level"],
        ),
    ],
)
def test_rule(tmp_path: Path, text: str, expected: list[str]) -> None:
    got = errors(tmp_path, text)
    for want in expected:
        assert any(want in g for g in got), f"{want!r} not in {got}"
    assert len(got) == len(expected), got


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ("--host", "--host is owned by the supervisor"),
        ("--port=9", "--port is owned by the supervisor"),
        ("--api-key", "--api-key is owned by the supervisor"),
        ("--served-model-name", "--served-model-name is owned by the supervisor"),
        ("--config", "--config is owned by the supervisor"),
        ("--temperature", "--temperature is a request-time parameter"),
        ("--max-tokens", "--max-tokens is a request-time parameter"),
        ("--best-of", "--best-of is a request-time parameter"),
        ("--max-model-len=5", "--max-model-len has a typed key: set engine.max_model_len instead"),
        ("--no-enable-prefix-caching", "--enable-prefix-caching has a typed key"),
    ],
)
def test_extra_args_refusals(tmp_path: Path, extra: str, why: str) -> None:
    text = f"models:\n  a:\n    model: x/y\n    port: 1\n    extra_args: ['{extra}']\n"
    got = errors(tmp_path, text)
    assert got == [
        f"{tmp_path}/etc/models.yaml:5: models.a.extra_args: {why}" + got[0].split(why, 1)[1]
    ]


def test_all_errors_are_collected_across_files(tmp_path: Path) -> None:
    got = errors(
        tmp_path,
        """
    models:
      a:
        model: x/y
        port: 8001
        engine: {dtype: fp12, max_num_seqs: 0}
      b:
        model: x/z
        port: 8001
        served_model_name: a
    """,
        {"c.yaml": "defaults: {}\nmodels:\n  a:\n    model: q\n    port: 3\n"},
    )
    joined = "\n".join(got)
    assert "models.yaml:5: models.a.engine.dtype: expected one of auto" in joined
    assert "models.yaml:5: models.a.engine.max_num_seqs: must be >= 1, got 0" in joined
    assert "c.yaml:1: defaults: defaults belong in models.yaml only" in joined
    assert "c.yaml:3: models.a: defined twice (first in" in joined
    # `a` is invalid, yet b's clashes with it are still found in the same pass.
    assert "models.yaml:8: models.b.port: port 8001 is already used by model 'a'" in joined
    assert "models.b.served_model_name: name 'a' is already served by model 'a'" in joined
    assert len(got) == 6, got


def test_duplicate_port_and_served_name(tmp_path: Path) -> None:
    got = errors(
        tmp_path,
        """
    models:
      a: {model: x/y, port: 8001, served_model_name: shared}
      b: {model: x/y, port: 8001, aliases: [shared]}
      c: {model: x/y, port: 8002, host: 0.0.0.0}
      d: {model: x/y, port: 8002}
    """,
    )
    assert any(
        "models.yaml:3: models.b.port: port 8001 is already used by model 'a'" in g for g in got
    )
    assert any(
        "models.b.served_model_name: name 'shared' is already served by model 'a'" in g for g in got
    )
    # 0.0.0.0 binds every address: 127.0.0.1:8002 would collide with it.
    assert any("models.d.port: port 8002 is already used by model 'c'" in g for g in got)


def test_tool_support_native_needs_parser_and_auto_choice(tmp_path: Path) -> None:
    got = errors(
        tmp_path,
        """
    models:
      a:
        model: x/y
        port: 1
        tool_support: native
        engine: {enable_auto_tool_choice: true}
    """,
    )
    assert any(
        "models.a.tool_support: native tool calling needs engine.tool_call_parser" in g for g in got
    )
    assert any(
        "models.a.engine.enable_auto_tool_choice: needs engine.tool_call_parser" in g for g in got
    )


def test_a_tool_parser_without_native_tool_support_is_warned_about(tmp_path: Path) -> None:
    """The gateway drops tools for a model whose tool_support is not native (issue 18):
    a parser configured beside tool_support: none would go unused, silently."""
    reg = load(
        tmp_path,
        """
    models:
      a: {model: x/y, port: 1, engine: {tool_call_parser: hermes, enable_auto_tool_choice: true}}
    """,
    )
    assert [str(w) for w in reg.warnings] == [
        f"{tmp_path}/etc/models.yaml:2: warning: models.a.tool_support: is none, so the host "
        "gateway drops the tools clients send (unsupported_tools), though the engine has a "
        "tool parser: set tool_support: native"
    ]


def test_gpus_must_cover_tensor_and_pipeline_parallel(tmp_path: Path) -> None:
    got = errors(
        tmp_path,
        """
    models:
      a:
        model: x/y
        port: 1
        gpus: [0, 1]
        engine: {tensor_parallel_size: 2, pipeline_parallel_size: 2}
    """,
    )
    assert got == [
        f"{tmp_path}/etc/models.yaml:5: models.a.gpus: lists 2 GPU(s) but tensor x "
        "pipeline parallel needs 4"
    ]


def test_warnings_do_not_fail_loading(tmp_path: Path) -> None:
    reg = load(
        tmp_path,
        """
    models:
      a:
        model: x/y
        port: 1
        deprecated: use b
        engine: {kv_cache_memory_bytes: 2GiB, gpu_memory_utilization: 0.5}
    """,
    )
    msgs = [str(w) for w in reg.warnings]
    assert any("models.a.deprecated: model is deprecated: use b" in m for m in msgs)
    assert any("kv_cache_memory_bytes: overrides gpu_memory_utilization" in m for m in msgs)
    assert reg.models["a"].engine["kv_cache_memory_bytes"] == 2 * 1024**3


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    reg = load(
        tmp_path,
        """
    models:
      a: {model: ./models/a, port: 1, venv: ../venv, api_key_file: keys/a.key}
    """,
    )
    m = reg.models["a"]
    etc = tmp_path / "etc"
    assert m.model == str((etc / "models" / "a").resolve())
    assert m.venv == etc / "../venv"
    assert m.api_key_file == etc / "keys" / "a.key"


def test_default_venv_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSUP_ENGINE_VENV", "/srv/engine")
    assert load(tmp_path, GOOD).models["alpha"].venv == Path("/srv/engine")
    monkeypatch.delenv("VSUP_ENGINE_VENV")
    assert load(tmp_path, GOOD).models["alpha"].venv == Path("/opt/vllm-supervisor/engine")


def test_example_config_in_etc_loads() -> None:
    reg = load_registry(Path(__file__).resolve().parents[2] / "etc")
    assert set(reg.models) == {"qwen2.5-0.5b", "qwen2.5-coder-1.5b"}
    assert reg.warnings == ()


def test_gpu_group_members_must_name_the_same_gpus(tmp_path: Path) -> None:
    got = errors(
        tmp_path,
        """
    models:
      a: {model: x/y, port: 8001, gpu_group: gpu0, gpus: [0]}
      b: {model: x/y, port: 8002, gpu_group: gpu0, gpus: [1]}
      c: {model: x/y, port: 8003, gpu_group: "Not A Slug"}
    """,
    )
    want = (
        "models.yaml:3: models.b.gpu_group: members of gpu_group 'gpu0' must set the same gpus: "
        "'a' has [0], 'b' has [1]"
    )
    assert any(g.endswith(want) for g in got), got
    assert any("models.c.gpu_group: expected a name of a-z" in g for g in got)
    assert len(got) == 2, got


def test_gpu_group_is_read(tmp_path: Path) -> None:
    reg = load_registry(
        write_config(
            tmp_path,
            """
    defaults: {gpu_group: card0}
    models:
      a: {model: x/y, port: 8001}
      b: {model: x/y, port: 8002}
      c: {model: x/y, port: 8003, gpu_group: other}
    """,
        )
    )
    assert [reg.models[n].gpu_group for n in "abc"] == ["card0", "card0", "other"]


def test_sleep_mode_needs_a_loopback_engine_and_known_values(tmp_path: Path) -> None:
    got = errors(
        tmp_path,
        """
    models:
      a: {model: x/y, port: 8001, host: 0.0.0.0, deactivate: sleep}
      b: {model: x/y, port: 8002, deactivate: nap}
      c: {model: x/y, port: 8003, deactivate: sleep, sleep_level: 3}
      d: {model: x/y, port: 8004, env: {VLLM_SERVER_DEV_MODE: "1"}}
    """,
    )
    assert any(
        "models.yaml:2: models.a.deactivate: sleep needs vLLM's dev mode" in g
        and "host '0.0.0.0' is not loopback" in g
        for g in got
    ), got
    assert any("models.b.deactivate: expected one of stop, sleep; got 'nap'" in g for g in got)
    assert any(
        "models.c.sleep_level: expected 1 or 2 (vLLM's sleep levels), got 3" in g for g in got
    )
    assert any("models.d.env.VLLM_SERVER_DEV_MODE: set by the supervisor" in g for g in got), got
    assert len(got) == 4, got


def test_sleep_settings_are_read_and_merged(tmp_path: Path) -> None:
    reg = load(
        tmp_path,
        """
    defaults: {deactivate: sleep, sleep_level: 2}
    models:
      a: {model: x/y, port: 8001}
      b: {model: x/y, port: 8002, host: "::1", sleep_level: 1}
      c: {model: x/y, port: 8003, deactivate: stop, sleep_level: 2}
    """,
    )
    got = [(m.supervision.deactivate, m.supervision.sleep_level) for m in reg.models.values()]
    assert got == [("sleep", 2), ("sleep", 1), ("stop", 2)]
    [w] = reg.warnings
    assert str(w).endswith(
        "models.yaml:5: warning: models.c.sleep_level: has no effect without deactivate: sleep"
    )


def test_gpus_take_uuids_as_nvidia_smi_prints_them(tmp_path: Path) -> None:
    reg = load(
        tmp_path,
        """
    models:
      a: {model: x/y, port: 8001, gpus: GPU-8932f937-d72c-4106-c12f-20bd9faed9f6}
      b: {model: x/y, port: 8002, gpus: [MIG-4a5b6c7d-0000-1111-2222-333344445555, 1]}
    """,
    )
    assert reg.models["a"].gpus == ("GPU-8932f937-d72c-4106-c12f-20bd9faed9f6",)
    assert reg.models["b"].gpus == ("MIG-4a5b6c7d-0000-1111-2222-333344445555", 1)
    got = errors(tmp_path, "models:\n  c: {model: x/y, port: 8003, gpus: [GPU-x, card0]}\n")
    assert len(got) == 2 and all(
        "or UUIDs (GPU-..., as nvidia-smi -L prints them)" in g for g in got
    )


def test_the_gateway_block_and_the_per_model_gateway_keys(tmp_path: Path) -> None:
    reg = load(
        tmp_path,
        """
    gateway: {listen: "0.0.0.0:9000", ttl: 300, max_queue: 8, concurrency: 4}
    defaults: {ttl: 600}
    models:
      a: {model: x/y, port: 8001}
      b: {model: x/y, port: 8002, on_demand: false, ttl: 0, max_queue: 0, concurrency: 2}
    """,
    )
    gw = reg.gateway
    assert (gw.host, gw.port, gw.ttl, gw.max_queue, gw.concurrency) == ("0.0.0.0", 9000, 300, 8, 4)
    assert gw.load_timeout == 900 and gw.max_body == 32 * 1024**2  # defaults
    a, b = reg.models["a"].gateway, reg.models["b"].gateway
    assert (a.on_demand, a.ttl, a.max_queue, a.concurrency) == (True, 600.0, None, None)
    assert (b.on_demand, b.ttl, b.max_queue, b.concurrency) == (False, 0.0, 0, 2)


def test_gateway_errors_name_file_line_and_key(tmp_path: Path) -> None:
    got = errors(
        tmp_path,
        """
    gateway:
      listen: "localhost"
      ttl: -1
      load_timeout: 0
      max_queue: 1.5
      bogus: 1
    models:
      a: {model: x/y, port: 8001, on_demand: "yes", concurrency: -2}
      b: {model: x/y, port: 8000}
    """,
        {"extra.yaml": "gateway: {ttl: 1}\n"},
    )
    want = [
        "models.yaml:2: gateway.listen: expected HOST:PORT, got 'localhost'",
        "models.yaml:3: gateway.ttl: expected seconds >= 0, got -1",
        "models.yaml:4: gateway.load_timeout: expected seconds > 0, got 0",
        "models.yaml:5: gateway.max_queue: expected a whole number >= 0, got 1.5",
        "models.yaml:6: gateway.bogus: unknown key",
        "models.yaml:8: models.a.on_demand: expected true or false, got 'yes'",
        "models.yaml:8: models.a.concurrency: expected a whole number >= 0, got -2",
        "extra.yaml:1: gateway: gateway belongs in models.yaml only",
    ]
    for w in want:
        assert any(w in g for g in got), (w, got)
    # No gateway block: the default port may be a model's (a host without a gateway).
    assert load(tmp_path / "2", "models:\n  b: {model: x/y, port: 8000}\n").gateway.port == 8000
    text = "gateway: {ttl: 5}\nmodels:\n  b: {model: x/y, port: 8000}\n"
    clash = errors(tmp_path / "3", text)
    assert any("gateway.listen: port 8000 is model 'b''s port" in g for g in clash), clash


def test_chat_fallback_reads_yamls_bare_off_and_refuses_the_rest(tmp_path: Path) -> None:
    reg = load(
        tmp_path,
        """
    defaults: {chat_fallback: on_failure}
    models:
      a: {model: x/y, port: 8001}
      b: {model: x/y, port: 8002, chat_fallback: off}
      c: {model: x/y, port: 8003, chat_fallback: always}
    """,
    )
    got = [reg.models[m].gateway.chat_fallback for m in "abc"]
    assert got == ["on_failure", "off", "always"]  # a bare `off` is YAML's false: still off
    bad = errors(tmp_path / "2", "models:\n  d: {model: x/y, port: 8004, chat_fallback: yes}\n")
    assert any(
        "models.d.chat_fallback: expected one of off, on_failure, always; got True" in g
        for g in bad
    ), bad


def test_an_engine_other_hosts_reach_without_a_key_is_warned(tmp_path: Path) -> None:
    """Issue 20: `host: 0.0.0.0` with no api_key_file was accepted silently."""
    key = tmp_path / "key"
    key.write_text("k\n")
    reg = load(
        tmp_path,
        f"""
    models:
      a: {{model: x/y, port: 8001, host: 0.0.0.0}}
      b: {{model: x/y, port: 8002, host: 10.0.0.5, api_key_file: {key}}}
      c: {{model: x/y, port: 8003, host: "::1"}}
      d: {{model: x/y, port: 8004}}
    """,
    )
    assert [str(w) for w in reg.warnings] == [
        f"{tmp_path}/etc/models.yaml:2: warning: models.a.host: '0.0.0.0' lets other hosts "
        "reach the engine, and no api_key_file is set: anyone who reaches the port may use the "
        "model. Set api_key_file, or bind to 127.0.0.1 and serve clients through the host "
        "gateway"
    ]
