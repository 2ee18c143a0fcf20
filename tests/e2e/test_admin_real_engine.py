"""vllmctl against the real supervisor and the real engine: probe, deactivate, activate."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.conftest import EngineEnv
from tests.e2e.engine_proc import free_port, tiny_model_config
from tests.e2e.supervisor_proc import SupervisorProc
from tests.helpers import write_config

pytestmark = pytest.mark.engine


def test_probe_passes_and_the_model_cycles_through_vllmctl(
    engine_env: EngineEnv, tmp_path: Path
) -> None:
    cfg = write_config(
        tmp_path,
        tiny_model_config(
            engine_env.venv,
            engine_env.model,
            free_port(),
            "        capabilities: [chat, structured_output]\n",
        ),
    )
    sup = SupervisorProc("tiny", cfg, tmp_path)
    try:
        sup.wait_for("READY", timeout=300)
        res = sup.ctl("probe", "tiny")
        assert res.returncode == 0, res.stdout + res.stderr
        lines = res.stdout.splitlines()
        assert [ln.split()[0] for ln in lines] == ["ok", "ok", "ok"], lines
        assert "models listed" in lines[0] and "json_schema output" in lines[2]
        assert '{"ok":' in lines[2]
        res = sup.ctl("deactivate", "tiny", "--drain-timeout", "5", timeout=120)
        assert res.returncode == 0, res.stderr
        assert sup.members() == []  # the engine's group is gone; the supervisor stays
        res = sup.ctl("probe", "tiny")
        assert res.returncode == 1 and "not ready (inactive)" in res.stderr
        res = sup.ctl("activate", "tiny", timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "loading weights" in res.stdout or "weights loaded" in res.stdout
        sup.signal(signal.SIGTERM)
        assert sup.wait(timeout=60) == 0
    finally:
        assert sup.cleanup() == []
