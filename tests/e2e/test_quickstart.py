"""The README's first command serves a model and stops cleanly, leaving nothing behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import openai
import pytest

from tests.conftest import EngineEnv
from tests.e2e.engine_proc import free_port
from tests.procs import group_members

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_serves_until_interrupted_and_leaves_no_process(
        engine_env: EngineEnv, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "quickstart.log"
    # VSUP_CACHE_DIR is the one scripts/test prepared: quickstart reuses venvs and model.
    with log.open("wb") as out:
        proc = subprocess.Popen([str(ROOT / "scripts" / "quickstart"), "--port", str(port),
                                 "--dir", str(tmp_path / "demo")], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    engine_pgid = 0
    try:
        deadline = time.monotonic() + 300
        text = ""
        while "quickstart: READY" not in text:
            assert time.monotonic() < deadline, text[-3000:]
            assert proc.poll() is None, f"quickstart exited {proc.returncode}:\n{text[-3000:]}"
            time.sleep(0.5)
            text = log.read_text(errors="replace")
            m = re.search(r"engine process group (\d+)", text)
            engine_pgid = int(m.group(1)) if m else 0
        assert f"curl -s http://127.0.0.1:{port}/v1/chat/completions" in text
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", timeout=60)
        res = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "Hello"}], max_tokens=4)
        assert res.choices[0].message.content
        assert engine_pgid and group_members(engine_pgid)
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while group_members(engine_pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert group_members(engine_pgid) == []
    finally:
        for pgid in (proc.pid, engine_pgid):
            if pgid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=10)
        for pgid in (proc.pid, engine_pgid):
            deadline = time.monotonic() + 10
            while pgid and group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not pgid or group_members(pgid) == [], f"group {pgid} left behind"
