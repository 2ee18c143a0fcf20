"""The README's first command serves a model under the real supervisor, and Ctrl-C stops it
leaving nothing behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import openai
import pytest

from tests.conftest import EngineEnv
from tests.e2e.engine_proc import free_port
from tests.procs import descendants, group_members

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_serves_until_ctrl_c_and_leaves_no_process(
    engine_env: EngineEnv, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "quickstart.log"
    # VSUP_CACHE_DIR is the one scripts/test prepared: quickstart reuses venvs and model.
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(ROOT / "scripts" / "quickstart"),
                "--port",
                str(port),
                "--dir",
                str(tmp_path / "demo"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    groups: set[int] = {proc.pid}
    try:
        deadline = time.monotonic() + 300
        text = ""
        while "quickstart: READY" not in text:
            assert time.monotonic() < deadline, text[-3000:]
            assert proc.poll() is None, f"quickstart exited {proc.returncode}:\n{text[-3000:]}"
            time.sleep(0.5)
            text = log.read_text(errors="replace")
        assert f"curl -s http://127.0.0.1:{port}/v1/chat/completions" in text
        groups |= set(descendants(proc.pid).values())
        assert len(groups) >= 2  # the quickstart's group and the engine's (warden) group
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", timeout=60)
        res = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "Hello"}], max_tokens=4
        )
        assert res.choices[0].message.content
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
        assert proc.wait(timeout=60) == 0, log.read_text()[-2000:]
        assert "vllm-supervisor exited with code 0" in log.read_text()
    finally:
        for g in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(g, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(group_members(g) for g in groups) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for g in groups for p in group_members(g)] == []
