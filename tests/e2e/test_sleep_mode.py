"""Sleep-mode deactivation between a real supervisor process and the fake engine, which
serves vLLM's dev endpoints as 0.32 does (only in dev mode, level in the query string): the
engine sleeps and wakes without a restart, and every fallback ends in a state that says why.
The sleep itself is GPU-only in vLLM; tests/gpu/test_on_a_gpu.py is where it meets a CUDA
engine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vllm_supervisor.ctl.client import Client

from tests.e2e.engine_proc import free_port
from tests.e2e.supervisor_proc import SupervisorProc, wait_gone
from tests.e2e.test_gpu_group import fake_group
from tests.helpers import fake_engine_venv, write_config


class Sleepy:
    def __init__(self, sup: SupervisorProc, calls: Path) -> None:
        self.sup, self.calls = sup, calls

    def state(self) -> dict[str, Any]:
        return Client([self.sup.runtime_dir], "m", timeout=5).get_json("/v1/state")

    def dev_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def until(self, want: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (st := self.state())["state"] != want:
            assert time.monotonic() < deadline, st
            time.sleep(0.05)
        return st


@pytest.fixture
def sleepy(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Sleepy]:
    level, mode = getattr(request, "param", (1, ""))
    venv = fake_engine_venv(tmp_path)  # a CUDA engine's venv
    calls = tmp_path / "calls"
    fake_mode = ",".join(filter(None, ["load=0.3", f"calls={calls}", mode]))
    cfg = write_config(
        tmp_path,
        f"""
    models:
      m:
        model: org/m
        port: {free_port()}
        venv: {venv}
        deactivate: sleep
        sleep_level: {level}
        env: {{FAKE_MODE: "{fake_mode}"}}
        startup: {{poll_interval: 0.1}}
        health: {{interval: 0.2, timeout: 1, failures: 2}}
        stop: {{grace: 5}}
    """,
    )
    sup = SupervisorProc("m", cfg, tmp_path / "sup")
    try:
        sup.wait_for("READY")
        yield Sleepy(sup, calls)
    finally:
        assert sup.cleanup() == [], "processes left behind"


@pytest.mark.parametrize(
    ("sleepy", "wake"),
    [
        ((1, ""), ["POST /wake_up"]),
        (
            (2, ""),
            [
                "POST /wake_up?tags=weights",
                'POST /collective_rpc {"method": "reload_weights"}',
                "POST /wake_up?tags=kv_cache",
            ],
        ),
    ],
    indirect=["sleepy"],
    ids=["level1", "level2"],
)
def test_deactivate_sleeps_and_activate_wakes_the_same_engine(
    sleepy: Sleepy, wake: list[str]
) -> None:
    level = 2 if len(wake) > 1 else 1
    pid = sleepy.state()["pid"]
    res = sleepy.sup.ctl("deactivate", "m", "--drain-timeout", "0")
    assert res.returncode == 0, res.stderr
    st = sleepy.state()
    assert (
        st["state"] == "sleeping"
        and st["pid"] == pid
        and st["reason"] == (f"asleep (level {level})")
    )
    # mode=wait from vLLM 0.17; the level rides in the query string, never in a body.
    assert sleepy.dev_calls() == [f"POST /sleep?level={level}&mode=wait", "GET /is_sleeping"]
    time.sleep(1.0)  # liveness paused: 5 health intervals, and no restart
    assert sleepy.state()["state"] == "sleeping"
    status = sleepy.sup.ctl("status")
    assert "sleeping" in status.stdout, status.stdout
    res = sleepy.sup.ctl("activate", "m")
    assert res.returncode == 0, res.stderr
    st = sleepy.state()
    assert st["state"] == "ready" and st["pid"] == pid and st["restarts"] == 0
    assert st["last_wake"] is not None and st["last_wake"] < 5
    assert sleepy.dev_calls()[2:] == [*wake, "GET /is_sleeping"]
    assert sleepy.sup.notify.count("READY") == 2
    # --stop ends it for good, sleep or not: the engine's group goes.
    groups = set(sleepy.sup.engine_groups)
    assert sleepy.sup.ctl("deactivate", "m", "--stop").returncode == 0
    assert sleepy.state()["state"] == "inactive"
    assert wait_gone(groups, 10) >= 0


@pytest.mark.parametrize("sleepy", [(1, "sleep_fails")], indirect=True)
def test_a_sleep_the_engine_refuses_stops_it_instead(sleepy: Sleepy) -> None:
    res = sleepy.sup.ctl("deactivate", "m", "--drain-timeout", "0")
    assert res.returncode == 0, res.stderr
    st = sleepy.state()
    assert st["state"] == "inactive", st
    assert "sleep failed: POST /sleep?level=1&mode=wait answered 500" in st["reason"]


@pytest.mark.parametrize("sleepy", [(1, "wake_garbage")], indirect=True)
def test_a_wake_that_cannot_generate_falls_back_to_a_cold_start(sleepy: Sleepy) -> None:
    pid = sleepy.state()["pid"]
    assert sleepy.sup.ctl("deactivate", "m", "--drain-timeout", "0").returncode == 0
    res = sleepy.sup.ctl("activate", "m")
    assert res.returncode == 0, res.stderr
    st = sleepy.state()
    assert st["state"] == "ready" and st["pid"] != pid and st["restarts"] == 0
    assert any(
        "wake failed: 1-token generation answered 500" in h["reason"] for h in st["history"]
    ), st["history"]


@pytest.mark.parametrize("sleepy", [(1, "die_asleep=0.5")], indirect=True)
def test_an_engine_that_dies_asleep_leaves_the_model_inactive_and_starts_cold(
    sleepy: Sleepy,
) -> None:
    pid = sleepy.state()["pid"]
    assert sleepy.sup.ctl("deactivate", "m", "--drain-timeout", "0").returncode == 0
    st = sleepy.until("inactive")
    assert "exited with code 0 while asleep; the next activate starts it cold" in st["reason"]
    assert st["last_exit"] == "exited with code 0"
    res = sleepy.sup.ctl("activate", "m")
    assert res.returncode == 0, res.stderr
    assert sleepy.state()["pid"] != pid


def test_a_swap_in_a_gpu_group_puts_the_peer_to_sleep_and_wakes_it_back(tmp_path: Path) -> None:
    """The point of sleep mode on a shared card: swapping back wakes the same engine."""
    with fake_group(tmp_path, {"a": True, "b": False}, "      deactivate: sleep\n") as sups:
        run = sups["a"].runtime_dir

        def state(name: str) -> dict[str, Any]:
            return Client([run], name, timeout=5).get_json("/v1/state")

        a_pid = state("a")["pid"]
        assert sups["b"].ctl("activate", "b", "--swap").returncode == 0
        assert state("a")["state"] == "sleeping" and state("b")["state"] == "ready"
        b_pid = state("b")["pid"]
        res = sups["a"].ctl("activate", "a", "--swap")
        assert res.returncode == 0, res.stderr
        a, b = state("a"), state("b")
        assert (a["state"], b["state"]) == ("ready", "sleeping")
        assert (a["pid"], b["pid"]) == (a_pid, b_pid)  # both woken or put to sleep: no restart
