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
