"""scripts/install.sh into a scratch root: layout, idempotence, operator files kept, uninstall."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import fake_venv

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "scripts" / "install.sh"
pytestmark = pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None, reason="systemd-sysusers not installed"
)


def install(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSTALL), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    res = install(tmp_path, "--no-engine", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert (
        f"would: install -D -m 0644 {ROOT}/etc/models.yaml "
        f"{tmp_path}/etc/vllm-supervisor/models.yaml" in res.stdout
    )
    assert list(tmp_path.iterdir()) == []


def test_install_rerun_and_uninstall(tmp_path: Path) -> None:
    res = install(tmp_path, "--no-engine")
    assert res.returncode == 0, res.stdout + res.stderr
    venv = tmp_path / "opt/vllm-supervisor/venv/bin"
    unit = (tmp_path / "etc/systemd/system/vllm-supervisor@.service").read_text()
    assert "ExecStart=/opt/vllm-supervisor/venv/bin/vllm-supervisor run %i" in unit
    assert (tmp_path / "etc/systemd/system/vllm-supervisor.target").exists()
    gateway = (tmp_path / "etc/systemd/system/vllm-gateway.service").read_text()
    assert "ExecStart=/opt/vllm-supervisor/venv/bin/vllm-supervisor gateway" in gateway
    # boot starts the target, and enabled models hang on it (the systemd tier reboots)
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants/vllm-supervisor.target"
    assert wants.is_symlink()
    for cmd in ("vllmctl", "vllm-supervisor"):  # on every operator's PATH
        assert (
            os.readlink(tmp_path / "usr/local/bin" / cmd) == f"/opt/vllm-supervisor/venv/bin/{cmd}"
        )
    assert (tmp_path / "opt/vllm-supervisor/models.schema.json").exists()
    assert "vllm:x:" in (tmp_path / "etc/passwd").read_text()
    assert "vllm-admin:x:" in (tmp_path / "etc/group").read_text()
    completion = (tmp_path / "usr/share/bash-completion/completions/vllmctl").read_text()
    assert "complete -F _vllmctl vllmctl" in completion
    config = tmp_path / "etc/vllm-supervisor/models.yaml"
    assert config.read_text() == (ROOT / "etc/models.yaml").read_text()
    # The installed CLI works on its own (it reports the engine venv --no-engine skipped).
    res = subprocess.run(
        [str(venv / "vllmctl"), "check", "--no-probe", "--config-dir", str(config.parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 78 and "create it with scripts/setup-engine" in res.stderr
    # An operator's edit survives a rerun; a rerun is fine.
    config.write_text("# mine\n" + config.read_text())
    engine = fake_venv(tmp_path / "elsewhere")
    (engine / "bin" / "python").chmod(0o755)
    res = install(tmp_path, "--engine-venv", str(tmp_path / "nowhere"))
    assert res.returncode == 1 and "no bin/python there" in res.stderr
    res = install(tmp_path, "--engine-venv", str(engine))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"keeping existing {config}" in res.stdout
    assert config.read_text().startswith("# mine\n")
    assert (tmp_path / "opt/vllm-supervisor/engine").resolve() == engine.resolve()
    # Uninstall keeps config, caches and the engine; --purge removes them.
    res = install(tmp_path, "--uninstall")
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "etc/systemd/system/vllm-supervisor@.service").exists()
    assert not wants.is_symlink() and not (tmp_path / "usr/local/bin/vllmctl").is_symlink()
    assert not venv.exists() and config.exists()
    res = install(tmp_path, "--uninstall", "--purge")
    assert res.returncode == 0 and not config.exists()
    assert not (tmp_path / "opt/vllm-supervisor").exists()


def test_missing_python_is_said_before_anything_changes(tmp_path: Path) -> None:
    res = install(tmp_path, "--no-engine", env={"VSUP_PYTHON": "/nonexistent/python3"})
    assert res.returncode == 1
    assert "needs Python >= 3.11" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_interpreter_under_a_home_is_refused_for_a_host_and_named_for_a_tree(
    tmp_path: Path,
) -> None:
    """ProtectHome=yes hides /home and /root from the unit: a venv made from pyenv's Python
    there fails with status=203/EXEC. A --root tree is not a live host: warned, not refused."""
    # The interpreter the test venv was made from: it has pip and venv, which a venv made by
    # uv (the dev venv, on a fresh cache) lacks, and install.sh needs one of them or uv.
    base = os.path.realpath(Path(sys.base_prefix) / "bin" / "python3")
    if not base.startswith(("/home/", "/root/")):
        pytest.skip("this Python is not under /home or /root")
    env = {"VSUP_PYTHON": base}
    tree = install(tmp_path, "--no-engine", "--dry-run", env=env)
    assert tree.returncode == 0, tree.stderr
    assert "warning: VSUP_PYTHON=" in tree.stdout and "ProtectHome=yes" in tree.stdout
    if os.geteuid() == 0:  # a live host: refused before anything changes (--dry-run anyway)
        host = subprocess.run(
            [str(INSTALL), "--no-engine", "--dry-run"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **env},
        )
        assert host.returncode == 1
        assert "lives under /home or /root" in host.stderr and "203/EXEC" in host.stderr
        assert "would:" not in host.stdout
