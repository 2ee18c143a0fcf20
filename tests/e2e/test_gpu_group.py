"""gpu_group exclusivity between real supervisor processes (the fake engine serves): every
instance checks its peers through their admin sockets, --swap moves the group with no moment
where two members are active, and two racing swaps end with exactly one active."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from vllm_supervisor.ctl.client import Client, CtlError
from vllm_supervisor.protocol.states import HOLDS_NO_GPU as FREE

from tests.e2e.engine_proc import free_port
from tests.e2e.supervisor_proc import SupervisorProc
from tests.helpers import both_active, fake_engine_venv, write_config


@contextlib.contextmanager
def fake_group(
    tmp_path: Path, autostart: dict[str, bool], defaults: str = ""
) -> Iterator[dict[str, SupervisorProc]]:
    """Supervisors of fake-engine models in gpu_group card0 (AUTOSTART: name -> on), each
    READY (its engine serving, or its service up with the engine inactive); every process
    is gone after."""
    venv = fake_engine_venv(tmp_path)
    models = "".join(
        f"""
      {name}:
        model: org/{name}
        port: {free_port()}
        autostart: {str(on).lower()}
"""
        for name, on in autostart.items()
    )
    cfg = write_config(
        tmp_path,
        f"""
    defaults:
      venv: {venv}
      gpu_group: card0
{defaults}      env: {{FAKE_MODE: "load=0.3"}}
      startup: {{poll_interval: 0.1}}
      stop: {{grace: 5}}
    models:{models}""",
    )
    run = tmp_path / "run"
    procs: dict[str, SupervisorProc] = {}
    try:
        for name in autostart:
            procs[name] = SupervisorProc(name, cfg, tmp_path / name, runtime_dir=run)
            procs[name].wait_for("READY")
        yield procs
    finally:
        for p in procs.values():
            assert p.cleanup() == [], "processes left behind"


@pytest.fixture
def group(tmp_path: Path) -> Iterator[dict[str, SupervisorProc]]:
    with fake_group(tmp_path, {"a": True, "b": True, "c": False}) as procs:
        yield procs  # a: its engine serves; b: refused (a holds the group); c: autostart off


def state(sup: SupervisorProc, model: str) -> str:
    try:
        return str(Client([sup.runtime_dir], model, timeout=3).get_json("/v1/state")["state"])
    except CtlError:
        return "inactive"


def reason(sup: SupervisorProc) -> str:
    return str(Client([sup.runtime_dir], sup.model, timeout=3).get_json("/v1/state")["reason"])


def test_the_second_autostart_stays_inactive_naming_the_active_peer(
    group: dict[str, SupervisorProc],
) -> None:
    a, b = group["a"], group["b"]
    assert state(a, "a") == "ready"
    assert state(b, "b") == "inactive" and b.notify.count("READY") == 1  # the service is up
    assert "gpu_group card0: a is ready" in reason(b)


def test_plain_activate_is_refused_and_swap_moves_the_group(
    group: dict[str, SupervisorProc],
) -> None:
    a, c = group["a"], group["c"]
    res = c.ctl("activate", "c")
    assert res.returncode == 1
    assert "gpu_group card0: a is ready; deactivate it first, or activate with --swap" in res.stderr
    assert state(c, "c") == "inactive" and state(a, "a") == "ready"

    with both_active(lambda: (state(c, "c"), state(a, "a")), FREE, 0.01) as both:
        res = c.ctl("activate", "c", "--swap")
    assert res.returncode == 0, res.stderr
    assert state(c, "c") == "ready" and state(a, "a") == "inactive"
    assert both == [], f"two members active at once: {both}"


def test_two_racing_swaps_end_with_exactly_one_active(
    group: dict[str, SupervisorProc],
) -> None:
    a = group["a"]
    cmd = [sys.executable, "-m", "vllm_supervisor.ctl.main", "activate", "--swap"]
    where = ["--socket-dir", str(a.runtime_dir)]
    racers = [
        subprocess.Popen([*cmd, m, *where], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for m in "bc"
    ]
    for r in racers:
        r.communicate(timeout=120)
    deadline = time.monotonic() + 30
    while True:
        states = {m: state(p, m) for m, p in group.items()}
        if all(s in FREE or s == "ready" for s in states.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    active = [m for m, s in states.items() if s not in FREE]
    assert len(active) == 1 and active[0] in "bc", states
    assert states["a"] == "inactive"
