"""The real supervisor process against the fake engine: faults on demand."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.engine_proc import free_port
from tests.e2e.supervisor_proc import SupervisorProc, wait_gone
from tests.helpers import fake_engine_venv, write_config


@pytest.fixture
def run_fake(tmp_path: Path) -> Iterator[object]:
    procs: list[SupervisorProc] = []

    def start(
        mode: str, extra: str = "", stdout_to_file: bool = True, startup: str = ""
    ) -> SupervisorProc:
        venv = fake_engine_venv(tmp_path)  # `vllm serve MODEL ...` -> the fake engine
        cfg = write_config(
            tmp_path,
            f"""
        models:
          m:
            model: org/m
            port: {free_port()}
            venv: {venv}
            env: {{FAKE_MODE: "{mode}"}}
            startup: {{poll_interval: 0.1{startup}}}
            health: {{interval: 0.2, timeout: 0.5, failures: 2}}
            restart: {{backoff_initial: 0.1, budget: 2}}
        {extra}
        """,
        )
        p = SupervisorProc("m", cfg, tmp_path, stdout_to_file=stdout_to_file)
        procs.append(p)
        return p

    yield start
    for p in procs:
        left = p.cleanup()
        assert left == [], f"processes left behind: {left}"


def test_ready_only_once_the_engine_serves(run_fake: object) -> None:
    sup: SupervisorProc = run_fake("load=1.5")  # type: ignore[operator]
    sup.wait_for("READY")
    ready = sup.notify.first("READY")
    assert ready is not None and ready - sup.started >= 1.5
    statuses = [m["STATUS"] for _, m in sup.notify.messages if "STATUS" in m]
    assert any(
        s.startswith("loading weights") or s.startswith("weights loaded") for s in statuses
    ), statuses
    assert statuses[-1].startswith("ready on 127.0.0.1:")
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0
    assert sup.members() == []
    assert sup.notify.count("STOPPING") == 1


def test_an_engine_line_reaches_the_log_while_nothing_else_happens(
    run_fake: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # stdout to journald is a socket, not a tty: Python buffers it by blocks, and an engine
    # line written without a flush waited for the next supervisor event (possibly never).
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # systemd does not set it
    sup: SupervisorProc = run_fake("load=0.2")  # type: ignore[operator]
    sup.wait_for("READY")
    statuses = [m["STATUS"] for _, m in sup.notify.messages if "STATUS" in m]
    port = statuses[-1].rsplit(":", 1)[1]
    time.sleep(0.5)  # past the supervisor's own ready lines
    line = "[m] (APIServer pid="
    before = sup.text().count(line)
    body = json.dumps({"prompt": "hi", "max_tokens": 1}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"}
    )
    urllib.request.urlopen(req, timeout=5).read()
    deadline = time.monotonic() + 5
    while sup.text().count(line) == before:
        assert time.monotonic() < deadline, "the engine's line stayed in a buffer"
        time.sleep(0.05)


def test_a_non_ascii_engine_line_is_logged_whatever_the_locale(
    run_fake: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host whose locale is not UTF-8 (systemd hands LANG from /etc/locale.conf to services)
    # gives stdout a strict narrow encoding; ascii stands in for it here. A prompt logged in
    # another script must not raise in the log pump, which would stop reading the engine.
    monkeypatch.setenv("PYTHONIOENCODING", "ascii")
    sup: SupervisorProc = run_fake("load=0.3,utf8_line")  # type: ignore[operator]
    sup.wait_for("READY")
    text = sup.text()
    assert "prompt: 'h\\xe9llo \\u2713'" in text, text[-3000:]
    after = text[text.index("prompt: 'h") :]
    assert "Loading weights took" in after and "Traceback" not in text, text[-3000:]
    shown = sup.ctl("logs", "m")  # vllmctl on a terminal of the same locale
    assert shown.returncode == 0 and "prompt: 'h\\xe9llo \\u2713'" in shown.stdout, shown


def test_unexpected_exit_0_is_restarted(run_fake: object) -> None:
    sup: SupervisorProc = run_fake("load=0.2,exit0_after=0.5")  # type: ignore[operator]
    sup.wait_for("READY", 2)
    assert "engine exited with code 0 unexpectedly" in sup.text()


def test_health_503_is_restarted(run_fake: object) -> None:
    sup: SupervisorProc = run_fake("load=0.2,health503_after=0.5")  # type: ignore[operator]
    sup.wait_for("READY", 2)
    assert "/health answered 503" in sup.text()


def test_hung_engine_is_killed_and_restarted(run_fake: object) -> None:
    sup: SupervisorProc = run_fake("load=0.2")  # type: ignore[operator]
    sup.wait_for("READY")
    (group,) = sup.engine_groups
    import os

    os.killpg(group, signal.SIGSTOP)  # a hang: the process lives, nothing answers
    sup.wait_for("READY", 2, timeout=30)
    assert "engine hung: 2 health checks in a row failed" in sup.text()
    wait_gone({group}, timeout=5)  # the stopped group was SIGKILLed, not left frozen


def test_crash_during_load_spends_the_budget_then_fails(run_fake: object) -> None:
    sup: SupervisorProc = run_fake("load=0.1,crash_load=3")  # type: ignore[operator]
    assert sup.wait(timeout=60) == 1
    assert sup.text().count("state=starting") == 3  # first start + budget of 2
    rec = json.loads((sup.state_dir / sup.model / "last-failure.json").read_text())
    assert rec["diagnosis"]["id"] == "engine-start-failed"
    assert rec["reason"] == "engine exited with code 3 unexpectedly"
    assert sup.notify.count("ERRNO") == 1
    assert sup.members() == []


def test_sigterm_ignored_is_escalated_to_sigkill(run_fake: object) -> None:
    sup: SupervisorProc = run_fake(
        "load=0.2,ignore_term",  # type: ignore[operator]
        extra="    stop: {grace: 1}",
    )
    sup.wait_for("READY")
    t0 = time.monotonic()
    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0
    assert time.monotonic() - t0 < 5
    assert "SIGKILL needed" in sup.text()
    assert sup.members() == []


def test_stall_without_progress_is_killed(run_fake: object) -> None:
    sup: SupervisorProc = run_fake(  # type: ignore[operator]
        "load=600,no_progress", startup=", stall_timeout: 1"
    )
    assert sup.wait(timeout=60) == 1
    assert "no load progress for 1 s in phase 'spawned'" in sup.text()
    assert sup.members() == []


def test_killing_the_supervisor_takes_the_engine_group_down(run_fake: object) -> None:
    sup: SupervisorProc = run_fake("load=0.2,ignore_term")  # type: ignore[operator]
    sup.wait_for("READY")
    groups = set(sup.engine_groups)
    assert sup.members()
    sup.signal(signal.SIGKILL)
    gone = wait_gone(groups, timeout=2.0)
    print(f"engine group gone {gone:.3f} s after kill -9 of the supervisor")


def test_log_flood_keeps_the_supervisor_bounded(run_fake: object) -> None:
    sup: SupervisorProc = run_fake(
        "flood=1000000,load=0.1",  # type: ignore[operator]
        stdout_to_file=False,
    )
    sup.wait_for("READY", timeout=120)
    rss_kib = int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{sup.proc.pid}/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
    )
    # 1,000,000 lines of ~110 bytes went through; the ring keeps 2000 of them.
    assert rss_kib < 150 * 1024, f"supervisor peak RSS {rss_kib} KiB"


def test_config_error_exits_78_before_anything_starts(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "models:\n  m: {model: org/m, port: 99999}\n")
    sup = SupervisorProc("m", cfg, tmp_path)
    try:
        assert sup.wait() == 78
        assert "models.m.port: expected a TCP port 1-65535, got 99999" in sup.text()
        assert not sup.engine_groups and sup.notify.count("READY") == 0
    finally:
        assert sup.cleanup() == []


def test_a_download_longer_than_the_stall_timeout_is_progress_not_a_stall(
    tmp_path: Path,
) -> None:
    """Issue 20: vLLM logs nothing while it downloads. The real supervisor watches the repo's
    folder in the engine's HF cache; here the test grows it, as huggingface_hub grows
    blobs/<hash>.incomplete, while the fake engine loads silently for 5 stall timeouts."""
    import threading

    hub = tmp_path / "hf-hub"
    venv = fake_engine_venv(tmp_path)
    cfg = write_config(
        tmp_path,
        f"""
    models:
      m:
        model: org/big
        port: {free_port()}
        venv: {venv}
        env: {{FAKE_MODE: "load=5,no_progress", HF_HUB_CACHE: "{hub}"}}
        startup: {{poll_interval: 0.1, stall_timeout: 1}}
        restart: {{budget: 0}}
    """,
    )
    blob = hub / "models--org--big" / "blobs" / "0a1b.incomplete"
    blob.parent.mkdir(parents=True)
    stop = threading.Event()

    def download() -> None:
        with blob.open("ab") as f:
            while not stop.wait(0.2):
                f.write(b"\0" * 200_000)
                f.flush()

    grower = threading.Thread(target=download, daemon=True)
    grower.start()
    sup = SupervisorProc("m", cfg, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not any(
            m.get("STATUS", "").startswith("downloading") for _, m in sup.notify.messages
        ):
            assert time.monotonic() < deadline, sup.text()[-2000:]
            time.sleep(0.1)
        shown = sup.ctl("status", "m")  # the operator's view while it downloads
        assert "starting" in shown.stdout and "downloading weights (" in shown.stdout, shown
        sup.wait_for("READY", timeout=60)
        statuses = [m["STATUS"] for _, m in sup.notify.messages if "STATUS" in m]
        assert any(s.startswith("downloading weights (") for s in statuses), statuses
        assert "no load progress" not in sup.text()
    finally:
        stop.set()
        grower.join(timeout=5)
        left = sup.cleanup()
        assert left == [], f"processes left behind: {left}"
