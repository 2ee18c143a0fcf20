"""The import-linter contracts in pyproject.toml hold, and each one can fail: a copy of the
package with one forbidden import added breaks exactly the contract that guards it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root / "daemon")}
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract() -> None:
    res = lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("KEPT") == 4


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("ctl/client.py", "from vllm_supervisor.runtime import states", "Layers"),
        ("config/registry.py", "from vllm_supervisor.ctl import client", "Layers"),
        ("engine/detect.py", "from vllm_supervisor.config import model", "Layers"),
        ("ctl/commands.py", "import aiohttp.web", "vllmctl stays light"),
        ("protocol/jsonbody.py", "from vllm_supervisor.host import files", "Layers"),
        # The three programs are siblings: none imports another (issue 19).
        ("runtime/group.py", "from vllm_supervisor.gateway import router", "Layers"),
        ("gateway/router.py", "from vllm_supervisor.runtime import states", "Layers"),
        ("gateway/front.py", "from vllm_supervisor.ctl import client", "Layers"),
        ("runtime/service.py", "from vllm_supervisor import cli", "Layers"),
        ("protocol/jsonbody.py", "import yaml", "The protocol leaf"),
        ("runtime/states.py", "from vllm_supervisor.runtime import supervisor", "No import cycles"),
    ],
)
def test_each_contract_can_fail(tmp_path: Path, module: str, line: str, contract: str) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(
        ROOT / "daemon" / "vllm_supervisor",
        tmp_path / "daemon" / "vllm_supervisor",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    target = tmp_path / "daemon" / "vllm_supervisor" / module
    text = target.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    target.write_text(head + sep + line + "  # noqa\n" + rest)
    res = lint(tmp_path)
    assert res.returncode != 0, res.stdout
    broken = [ln for ln in res.stdout.splitlines() if ln.endswith("BROKEN")]
    # An import up the layers also closes a cycle: both contracts see it.
    assert any(ln.startswith(contract) for ln in broken), res.stdout
