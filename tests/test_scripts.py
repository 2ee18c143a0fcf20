"""The shell scripts' argument handling: an option without its value is a usage error that
names it (exit 2), never bash's "unbound variable"."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize(
    ("script", "option"),
    [
        ("quickstart", "--port"),
        ("quickstart", "--dir"),
        ("install.sh", "--prefix"),
        ("install.sh", "--engine-venv"),
        ("setup-engine", "--venv"),
        ("setup-engine", "--python"),
        ("make-tiny-model", "--python"),
    ],
)
def test_an_option_without_its_value_is_a_usage_error(script: str, option: str) -> None:
    for argv in ([option], [option, "--another"]):
        res = subprocess.run(
            [str(SCRIPTS / script), *argv], capture_output=True, text=True, timeout=30, check=False
        )
        assert res.returncode == 2, res.stderr
        assert f"{script}: {option} needs a value" in res.stderr
        assert "unbound variable" not in res.stderr


def bootstrap(tmp_path: Path, pip_config: str, body: str, uv: bool = True, **env: str) -> str:
    """Run BODY after sourcing scripts/lib/venv.sh, with a python whose `pip config list`
    prints PIP_CONFIG and a uv that only says it was called."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    (bin_ / "python").write_text(f"#!/bin/sh\ncat <<'EOF'\n{pip_config}\nEOF\n")
    (bin_ / "python").chmod(0o755)
    (bin_ / "uv").unlink(missing_ok=True)
    if uv:
        (bin_ / "uv").write_text('#!/bin/sh\necho "uv $*"\n')
        (bin_ / "uv").chmod(0o755)
    script = f'. "{SCRIPTS}/lib/venv.sh"; {body}'
    res = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{bin_}:/usr/bin:/bin", **env},
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_uv_gets_pip_index_settings_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    config = (
        f"global.index-url='https://mirror.example/simple'\n"
        f"global.find-links='/nowhere-else'\n"
        f"global.extra-index-url='file:///no/such/index https://extra.example/simple'\n"
        f":env:.find-links='{tmp_path}/wheels'\n"
        f":env:.no-index='1'"
    )
    out = bootstrap(
        tmp_path, config, f'venv_tool "{tmp_path}/bin/python"; venv_install /v -e .'
    ).split()
    assert out[:4] == ["uv", "pip", "install", "-q"]
    assert "https://mirror.example/simple" in out and "https://extra.example/simple" in out
    assert out[out.index("--find-links") + 1] == f"{tmp_path}/wheels"
    assert "/nowhere-else" not in out and "file:///no/such/index" not in out  # replaced; gone
    assert "--no-index" in out
    assert out[out.index("--index-strategy") + 1] == "unsafe-best-match"  # pip merges indexes


def test_pip_when_forced_or_when_there_is_no_uv(tmp_path: Path) -> None:
    body = f'venv_tool "{tmp_path}/bin/python"; echo "$VENV_TOOL"'
    assert bootstrap(tmp_path, "", body, VSUP_INSTALLER="pip").strip() == "pip"
    assert (
        bootstrap(tmp_path, "", body, uv=False).strip() == "pip"
    )  # no uv and no cache to fetch it into
