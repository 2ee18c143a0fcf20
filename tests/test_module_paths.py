"""Module paths written as strings move with their modules: the warden the engine runs under,
the probe run inside the engine venv, the console scripts, and the `python -m` commands the
generated docs name."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

from vllm_supervisor.engine import flagcache
from vllm_supervisor.reference import docgen, schema
from vllm_supervisor.runtime import process, warden

ROOT = Path(__file__).resolve().parents[1]


def test_the_warden_is_run_by_its_own_module_path() -> None:
    assert warden.__name__ == process.WARDEN
    assert importlib.util.find_spec(process.WARDEN) is not None
    res = subprocess.run([sys.executable, "-m", process.WARDEN], capture_output=True, text=True)
    assert res.returncode == 2 and "usage: python -m vllm_supervisor.runtime.warden" in res.stderr


def test_the_engine_probe_file_is_beside_the_flag_cache() -> None:
    assert flagcache.PROBE.is_file() and flagcache.PROBE.parent == Path(flagcache.__file__).parent


def test_console_scripts_resolve() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"vllm-supervisor", "vllmctl"}
    for target in scripts.values():
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), target


def test_generated_docs_name_the_modules_that_generate_them() -> None:
    assert f"python -m {docgen.__name__}`" in (ROOT / "docs" / "configuration.md").read_text()
    trouble = (ROOT / "docs" / "troubleshooting.md").read_text()
    assert f"python -m {docgen.__name__} troubleshooting`" in trouble
    assert f"python -m {schema.__name__}`" in (ROOT / "docs" / "models.schema.json").read_text()
