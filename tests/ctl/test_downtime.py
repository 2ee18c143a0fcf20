"""ctl/downtime.py: `--with-downtime` restarts the engine on the new venv through a reload, and
when the new engine does not serve, puts the old venv back in the file and the old engine
back up. The instance is scripted here (what its reload and activate stream); the real
engines' path is tests/e2e/test_upgrade_real_engine.py."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from vllm_supervisor import exitcodes
from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.ctl import downtime
from vllm_supervisor.ctl.client import CtlError

from tests.helpers import write_config

CONFIG = """\
# kept as written
models:
  tiny:
    model: /m
    port: 8001
    venv: /engines/old   # pinned
"""


class Instance:
    """Answers each POST with the NDJSON states scripted for its URL, in order."""

    def __init__(self, answers: dict[str, list[list[dict[str, Any]]]]) -> None:
        self.answers, self.calls = answers, []  # type: ignore[var-annotated]

    def stream(self, method: str, url: str, body: Any, on_line: Any, timeout: Any = None) -> None:
        self.calls.append((method, url, body))
        for snap in self.answers[url].pop(0):
            on_line(json.dumps(snap).encode() + b"\n")


def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ok: bool = True) -> Any:
    cfg_dir = write_config(tmp_path, CONFIG)
    monkeypatch.setattr(downtime, "checked", lambda args, cfg, target: ok)
    args = argparse.Namespace(config_dir=str(cfg_dir), timeout=60.0, json=True)
    return args, load_registry(cfg_dir).models["tiny"], cfg_dir / "models.yaml"


READY_NEW = {"state": "ready", "engine": {"version": "0.32.0"}}
STARTING = {"state": "starting", "progress": {"phase": "loading weights"}}


def test_the_engine_restarts_on_the_new_venv_and_the_old_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args, cfg, file = setup(tmp_path, monkeypatch)
    inst = Instance({"/v1/reload": [[{"state": "ready"}, STARTING, READY_NEW]]})
    st = {"state": "ready", "last_start": 41.4}
    rc = downtime.restart_on(args, cfg, inst, Path("/engines/new"), st, "no room", "upgrade")  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert rc == exitcodes.OK, out
    assert "down for about 41 s, its last start" in out
    assert "starting (loading weights)" in out and "(vLLM 0.32.0)" in out
    text = file.read_text()
    assert 'venv: "/engines/new"   # pinned' in text and 'previous_venv: "/engines/old"' in text
    assert text.startswith("# kept as written\n")
    assert [c[1] for c in inst.calls] == ["/v1/reload"]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["downtime"] is True and summary["kind"] == "upgrade"


def test_a_new_engine_that_fails_puts_the_old_venv_back_and_starts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args, cfg, file = setup(tmp_path, monkeypatch)
    before = file.read_text()
    failed = {"state": "failed", "reason": "engine exited 1 during load"}
    inst = Instance({
        "/v1/reload": [[{"state": "ready"}, STARTING, failed], [failed]],
        "/v1/activate": [[STARTING, {"state": "ready", "engine": {"version": "0.31.0"}}]],
    })  # fmt: skip
    rc = downtime.restart_on(args, cfg, inst, Path("/engines/new"), {}, "no room", "upgrade")  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert rc == exitcodes.FAILED, out
    assert "engine exited 1 during load" in out and "/engines/old serves again" in out
    assert "down for one start of the model" in out
    # The file says what it said (the venv now quoted, as rewrite.py writes values).
    assert file.read_text() == before.replace("/engines/old ", '"/engines/old" ')
    assert load_registry(file.parent).models["tiny"].previous_venv is None
    assert [c[1] for c in inst.calls] == ["/v1/reload", "/v1/reload", "/v1/activate"]


def test_the_first_failure_of_the_new_engine_goes_back_without_waiting_out_its_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The instance would retry the new engine 5 times with backoff, each a whole load on a
    GPU: the command leaves at the first `restarting`, and the reload of the old venv starts
    the old engine from there."""
    args, cfg, file = setup(tmp_path, monkeypatch)
    gone = {"state": "restarting", "reason": "engine exited 1 during load"}
    retry = {"state": "starting", "progress": {"phase": "the second try"}}
    old_ready = {"state": "ready", "engine": {"version": "0.31.0"}}
    inst = Instance({"/v1/reload": [[{"state": "ready"}, STARTING, gone, retry],
                                    [gone, STARTING, old_ready]]})  # fmt: skip
    rc = downtime.restart_on(args, cfg, inst, Path("/engines/new"), {}, "no room", "upgrade")  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert rc == exitcodes.FAILED, out
    assert "second try" not in out and "engine exited 1 during load" in out
    assert "/engines/old serves again" in out
    assert [c[1] for c in inst.calls] == ["/v1/reload", "/v1/reload"]
    assert load_registry(file.parent).models["tiny"].venv == Path("/engines/old")


def test_a_failed_check_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args, cfg, file = setup(tmp_path, monkeypatch, ok=False)
    before = file.read_text()
    inst = Instance({})
    rc = downtime.restart_on(args, cfg, inst, Path("/engines/new"), {}, "no room", "upgrade")  # type: ignore[arg-type]
    assert rc == exitcodes.CONFIG and file.read_text() == before and inst.calls == []


def test_a_file_that_cannot_be_rewritten_restarts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, cfg, file = setup(tmp_path, monkeypatch)
    file.write_text(CONFIG.replace("    venv: /engines/old   # pinned\n",
                                   "    venv: [/engines/old]\n"))  # fmt: skip
    inst = Instance({})
    with pytest.raises(CtlError, match="the engine was not restarted"):
        downtime.restart_on(args, cfg, inst, Path("/engines/new"), {}, "no room", "upgrade")  # type: ignore[arg-type]
    assert inst.calls == []


def test_a_multi_node_model_is_refused_before_anything_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 1's host has its own file, which a restart on rank 0 would leave on the old venv."""
    big = CONFIG + (
        "    host: 0.0.0.0\n    engine: {tensor_parallel_size: 2}\n"
        "    nodes: {hosts: [10.0.0.1, 10.0.0.2], interface: eth1, key_file: k}\n"
    )
    cfg_dir = write_config(tmp_path, big)
    monkeypatch.setattr(downtime, "checked", lambda args, cfg, target: True)
    args = argparse.Namespace(config_dir=str(cfg_dir), timeout=60.0, json=True)
    cfg = load_registry(cfg_dir).models["tiny"]
    inst = Instance({})
    with pytest.raises(CtlError, match="spans hosts"):
        downtime.restart_on(args, cfg, inst, Path("/e/new"), {}, "no gateway", "upgrade")  # type: ignore[arg-type]
    assert (cfg_dir / "models.yaml").read_text() == big and inst.calls == []
