"""The admin socket's folder rules (the socket itself is in tests/e2e/test_admin.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vllm_supervisor.runtime.socketdir import NotOurs, check_owner


def test_our_folder_under_a_root_or_own_parent_passes(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    check_owner(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_folder_another_user_made_is_refused(tmp_path: Path) -> None:
    """The /tmp/vllm-supervisor-UID fallback: someone else may have made it first."""
    base = tmp_path / "vllm-supervisor-1000"
    (base / "m").mkdir(parents=True)
    os.chown(base, 65534, 65534)
    with pytest.raises(NotOurs, match=f"{base} belongs to uid 65534"):
        check_owner(base / "m")
    os.chown(base, 0, 0)
    os.chown(base / "m", 65534, 65534)
    with pytest.raises(NotOurs, match="set VSUP_RUNTIME_DIR"):
        check_owner(base / "m")
