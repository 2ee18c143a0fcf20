"""scripts/make-tiny-model writes a model any user can read, the same bytes every time."""

from __future__ import annotations

import hashlib
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import EngineEnv

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]


def test_tiny_model_is_readable_by_others_and_deterministic(
    engine_env: EngineEnv, tmp_path: Path
) -> None:
    out = tmp_path / "tiny"
    subprocess.run(
        [
            str(ROOT / "scripts" / "make-tiny-model"),
            str(out),
            "--python",
            str(engine_env.venv / "bin" / "python"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # safetensors writes the weights 0600 whatever the umask; the service user must read them
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()}
    assert modes["model.safetensors"] == 0o644, modes
    assert all(m & 0o004 for m in modes.values()), modes
    assert stat.S_IMODE(out.stat().st_mode) & 0o005 == 0o005

    def digest(folder: Path) -> str:
        return hashlib.sha256(
            b"".join(f.read_bytes() for f in sorted(folder.iterdir()))
        ).hexdigest()

    assert digest(out) == digest(engine_env.model)  # the cached model scripts/test made
