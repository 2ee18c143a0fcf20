"""The admin socket and vllmctl against the real supervisor and the fake engine."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from prometheus_client.parser import text_string_to_metric_families
from vllm_supervisor.ctl.client import Client

from tests.e2e.engine_proc import free_port
from tests.e2e.supervisor_proc import SupervisorProc
from tests.helpers import fake_engine_venv, system_python, write_config


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def call(sock: Path, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = UnixHTTP(sock)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


class StartAdmin(Protocol):
    def __call__(
        self,
        mode: str = "load=0.3",
        autostart: bool = True,
        key: bool = False,
        name: str = "m",
        runtime_dir: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> SupervisorProc: ...


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[StartAdmin]:
    procs: list[SupervisorProc] = []

    def start(
        mode: str = "load=0.3",
        autostart: bool = True,
        key: bool = False,
        name: str = "m",
        runtime_dir: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> SupervisorProc:
        venv = fake_engine_venv(tmp_path)
        (tmp_path / "key").write_text("s3cret-key\n")
        port = free_port()
        cfg = write_config(
            tmp_path,
            f"""
        models:
          {name}:
            model: org/m
            port: {port}
            venv: {venv}
            autostart: {str(autostart).lower()}
            env: {{FAKE_MODE: "{mode}"}}
            {"api_key_file: " + str(tmp_path / "key") if key else ""}
            startup: {{poll_interval: 0.1}}
            health: {{interval: 0.2, timeout: 0.5, failures: 2}}
            stop: {{grace: 5}}
        """,
        )
        p = SupervisorProc(name, cfg, tmp_path, runtime_dir=runtime_dir, args=args)
        p.port = port
        procs.append(p)
        deadline = time.monotonic() + 30
        while not p.socket.exists():
            assert time.monotonic() < deadline and p.proc.poll() is None, p.text()
            time.sleep(0.05)
        return p

    yield start
    for p in procs:
        alive = p.proc.poll() is None
        if alive:  # a clean stop removes the socket
            p.signal(15)
            assert p.wait(timeout=30) == 0, p.text()[-2000:]
            assert not p.socket.exists(), "admin socket left behind"
        left = p.cleanup()
        assert left == [], f"processes left behind: {left}"


def state(sup: SupervisorProc) -> dict[str, Any]:
    status, body = call(sup.socket, "GET", "/v1/state")
    assert status == 200
    data = json.loads(body)
    assert isinstance(data, dict)
    return data


def test_activate_deactivate_round_trip_with_vllmctl(admin: StartAdmin) -> None:
    sup: SupervisorProc = admin(autostart=False)
    sup.wait_for("READY")  # autostart off: READY at once, engine inactive
    assert state(sup)["state"] == "inactive"
    st = sup.socket.parent.stat()
    assert oct(st.st_mode & 0o777) == "0o750"
    assert oct(sup.socket.stat().st_mode & 0o777) == "0o660"
    res = sup.ctl("activate", "m")
    assert res.returncode == 0, res.stderr
    port = sup.port
    assert res.stdout.strip().splitlines()[-1] == f"m: ready on 127.0.0.1:{port}"
    assert any(line.startswith("m: ") and "probing" in line for line in res.stdout.splitlines())
    assert sup.ctl("activate", "m").returncode == 0  # idempotent
    s = state(sup)
    assert s["state"] == "ready" and s["served_names"] == ["m"] and s["pid"]
    assert s["engine"] == {"distribution": "vllm", "version": "0.32.0", "venv": s["engine"]["venv"]}
    res = sup.ctl("status", "--json")
    rows = json.loads(res.stdout)
    assert res.returncode == 0 and rows[0]["model"] == "m" and rows[0]["state"] == "ready"
    res = sup.ctl("status")
    assert res.stdout.splitlines()[0].split() == [
        "MODEL",
        "STATE",
        "SINCE",
        "PORT",
        "PID",
        "RESTARTS",
        "GPU-MEM",
        "REASON",
    ]
    assert res.stdout.splitlines()[1].split()[:2] == ["m", "ready"]
    res = sup.ctl("deactivate", "m", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["state"] == "inactive"
    assert sup.ctl("deactivate", "m").returncode == 0  # idempotent
    assert sup.members() == []  # the engine group is gone


def test_deactivate_drains_a_request_in_flight(admin: StartAdmin) -> None:
    sup: SupervisorProc = admin("load=0.2,slow_completion=2")
    sup.wait_for("READY")
    result: dict[str, object] = {}

    def request() -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{sup.port}/v1/completions",
            data=b'{"model": "m", "prompt": "x"}',
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            result["status"] = r.status

    t = threading.Thread(target=request)
    t.start()
    time.sleep(0.5)  # the request is running
    t0 = time.monotonic()
    res = sup.ctl("deactivate", "m", "--drain-timeout", "20")
    t.join(timeout=30)
    assert res.returncode == 0, res.stderr
    assert result.get("status") == 200  # it completed: the engine was not stopped under it
    assert time.monotonic() - t0 >= 1.0
    assert "draining" in res.stdout and "deactivate (no running requests)" in sup.text()


def test_restart_logs_metrics_config(admin: StartAdmin) -> None:
    sup: SupervisorProc = admin(key=True)
    sup.wait_for("READY")
    pid = state(sup)["pid"]
    res = sup.ctl("restart", "m")
    assert res.returncode == 0, res.stderr
    assert state(sup)["pid"] != pid
    res = sup.ctl("logs", "m", "-n", "3")
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 3
    res = sup.ctl("metrics", "m")
    families = {f.name: f for f in text_string_to_metric_families(res.stdout)}
    up = families["vllm_supervisor_up"].samples[0]
    assert up.value == 1.0 and up.labels == {"model": "m"}
    states = {s.labels["state"]: s.value for s in families["vllm_supervisor_state"].samples}
    assert states["ready"] == 1.0 and sum(states.values()) == 1.0
    assert "vllm:num_requests_running" in families
    assert families["vllm_supervisor_time_to_ready_seconds"].samples[0].value > 0
    assert families["vllm_supervisor_last_start_duration_seconds"].samples[0].value > 0
    assert families["vllm_supervisor_restarts"].type == "counter"
    res = sup.ctl("config", "m", "--json")
    cfg = json.loads(res.stdout)
    assert cfg["env"]["VLLM_API_KEY"] == "<redacted>" and "s3cret-key" not in res.stdout
    assert cfg["argv"][1:3] == ["serve", "org/m"]


def test_logs_follow_streams_new_lines(admin: StartAdmin) -> None:
    sup: SupervisorProc = admin()
    sup.wait_for("READY")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm_supervisor.ctl.main",
            "logs",
            "m",
            "-n",
            "0",
            "-f",
            "--socket-dir",
            str(sup.runtime_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{sup.port}/v1/completions"
        assert proc.stdout is not None
        # The first line followed may be an older one that the log pump delivered late on a
        # loaded machine (CI saw the engine's startup line): read on until the new one. A
        # request is sent every 2 s until one is seen: vllmctl may not follow yet when the
        # first is answered (a fixed 0.5 s for its start was too little in CI, stop 30),
        # and `-n 0` rightly shows nothing from before it followed.
        seen: list[str] = []
        deadline, sent = time.monotonic() + 30, 0.0
        while not any("request /v1/completions started" in x for x in seen):
            assert time.monotonic() < deadline, seen
            if time.monotonic() - sent >= 2.0:
                req = urllib.request.Request(url, data=b"{}")
                urllib.request.urlopen(req, timeout=10).read()
                sent = time.monotonic()
            if select.select([proc.stdout], [], [], 0.5)[0]:
                seen.append(proc.stdout.readline())
        assert len(seen) <= 5, seen  # a stray late line or two, not the whole log
    finally:
        proc.kill()
        proc.wait()


def test_abuse_gets_clear_4xx_and_hurts_nothing(admin: StartAdmin) -> None:
    sup: SupervisorProc = admin(autostart=False)
    sup.wait_for("READY")
    cases = [
        ("POST", "/v1/activate", b"{not json", 400, "malformed JSON"),
        ("POST", "/v1/activate", b"[1]", 400, "the body must be a JSON object"),
        ("POST", "/v1/activate", b'{"wiat": true}', 400, "unknown field 'wiat'"),
        ("POST", "/v1/deactivate", b'{"drain_timeout": "x"}', 400, "must be a finite number"),
        ("POST", "/v1/deactivate", b'{"drain_timeout": NaN}', 400, "NaN is not a JSON number"),
        ("POST", "/v1/activate", b'{"timeout": 1e999}', 400, "must be a finite number"),
        ("POST", "/v1/activate", b'{"swap": 1}', 400, "'swap' must be true or false"),
        ("POST", "/v1/deactivate", b'{"drain_timeout": -1}', 400, "drain_timeout must be >= 0"),
        ("GET", "/v1/logs?n=x", None, 400, "n must be a whole number"),
        ("GET", "/v2/state", None, 404, "unknown path /v2/state"),
        ("GET", "/v2/state", None, 404, "/v1/reload"),  # the list comes from the router
        ("POST", "/v1/reload", b'{"timeout": 0}', 400, "timeout must be > 0"),
        ("POST", "/v1/activate", b'{"timeout": -5}', 400, "timeout must be > 0"),
        ("DELETE", "/v1/state", None, 405, "DELETE not allowed"),
        ("POST", "/v1/activate", b"{" + b" " * (70 * 1024) + b"}", 413, "request body over"),
        # The upgrade paths (runtime/admin_upgrade.py), driven by vllmctl upgrade/rollback.
        ("POST", "/v1/upgrade/candidate", b"{}", 400, "venv is required"),
        ("POST", "/v1/upgrade/candidate", b'{"venv": 1}', 400, "'venv' must be"),
        (
            "POST",
            "/v1/upgrade/candidate",
            b'{"venv": "/x", "reason": "yolo"}',
            400,
            "reason must be one of",
        ),
        ("POST", "/v1/upgrade/candidate", b'{"venv": "/x", "timeout": NaN}', 400, "NaN"),
        ("POST", "/v1/upgrade/candidate", b'{"venv": "/x"}', 409, "not ready"),
        ("POST", "/v1/upgrade/promote", b'{"x": 1}', 400, "unknown field 'x'"),
        ("POST", "/v1/upgrade/promote", b"{}", 409, "no candidate is ready"),
        ("POST", "/v1/upgrade/retire", b'{"drain_timeout": -1}', 400, ">= 0"),
        ("POST", "/v1/upgrade/retire", b"{}", 409, "no engine to retire"),
        ("POST", "/v1/upgrade/discard", b'{"outcome": "switched"}', 400, "outcome must be"),
        ("POST", "/v1/upgrade/discard", b"{}", 409, "no candidate is running"),
        ("GET", "/v1/upgrade/promote", None, 405, "GET not allowed"),
    ]
    for method, path, body, code, reason in cases:
        status, raw = call(sup.socket, method, path, body)
        assert status == code, (path, raw)
        assert reason in json.loads(raw)["error"], raw
    # A client that connects and never finishes its request blocks nobody.
    stalled = socket.socket(socket.AF_UNIX)
    stalled.connect(str(sup.socket))
    stalled.sendall(b"POST /v1/activate HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{")
    t0 = time.monotonic()
    assert state(sup)["state"] == "inactive" and time.monotonic() - t0 < 1
    stalled.close()
    assert sup.proc.poll() is None


def test_concurrency_storm_ends_in_the_last_accepted_state(admin: StartAdmin) -> None:
    sup: SupervisorProc = admin("load=0.1", autostart=False)
    sup.wait_for("READY")
    ops = [random.Random(i).choice(["activate", "deactivate"]) for i in range(100)]

    async def one(op: str) -> dict[str, Any]:
        reader, writer = await asyncio.open_unix_connection(str(sup.socket))
        body = b'{"wait": false}' if op == "activate" else b'{"wait": false, "drain_timeout": 0}'
        writer.write(
            f"POST /v1/{op} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        raw = await reader.read()
        writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        assert b" 202 " in head.split(b"\r\n")[0], raw[:200]
        return {"op": op, **json.loads(payload)}

    async def storm() -> list[dict[str, Any]]:
        return await asyncio.gather(*(one(op) for op in ops))

    answers = asyncio.run(storm())
    last = max(answers, key=lambda a: int(a["seq"]))
    assert len({a["seq"] for a in answers}) == 100  # each was accepted once, in one order
    want = "ready" if last["op"] == "activate" else "inactive"
    deadline = time.monotonic() + 30
    while state(sup)["state"] != want:
        assert time.monotonic() < deadline, (last["op"], state(sup))
        time.sleep(0.05)
    time.sleep(0.5)
    assert state(sup)["state"] == want and sup.proc.poll() is None
    live = [
        g
        for g in sup.engine_groups
        if [p for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == g]
    ]
    assert len(live) <= 1  # never two engines


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def test_other_users_get_403_and_are_logged(
    admin: StartAdmin, request: pytest.FixtureRequest
) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to run a client as another user")
    # pytest's tmp folders are root-only: `nobody` could not even reach the socket there.
    run_dir = Path(tempfile.mkdtemp(prefix="vsup-peer-"))
    request.addfinalizer(lambda: shutil.rmtree(run_dir, ignore_errors=True))
    os.chmod(run_dir, 0o755)
    sup: SupervisorProc = admin(autostart=False, runtime_dir=run_dir)
    sup.wait_for("READY")
    # Open the file modes so the connection reaches the peer check (the modes alone would
    # already stop `nobody`; this proves the SO_PEERCRED check behind them).
    os.chmod(sup.socket.parent, 0o777)
    os.chmod(sup.socket, 0o666)
    code = (
        "import http.client, socket, sys\n"
        "c = http.client.HTTPConnection('x')\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); c.sock = s\n"
        "c.request('GET', '/v1/state'); r = c.getresponse()\n"
        "print(r.status, r.read().decode())\n"
    )
    res = system_python(code, str(sup.socket))
    assert res.stdout.startswith("403 "), res.stdout + res.stderr
    assert "permission denied: add your user to group vllm-admin" in res.stdout
    assert "admin request refused" in sup.text() and "peer_uid=65534" in sup.text()


def test_the_engine_key_is_for_the_services_user_not_for_the_admin_group(
    admin: StartAdmin, request: pytest.FixtureRequest
) -> None:
    """GET /v1/engine-key serves the host gateway (running as the service's user): an
    admin-group member may operate the model but not read its key."""
    if os.getuid() != 0:
        pytest.skip("needs root to run a client as another user")
    run_dir = Path(tempfile.mkdtemp(prefix="vsup-key-"))
    request.addfinalizer(lambda: shutil.rmtree(run_dir, ignore_errors=True))
    os.chmod(run_dir, 0o755)
    sup = admin(autostart=False, key=True, runtime_dir=run_dir, args=("--admin-group", "nogroup"))
    sup.wait_for("READY")
    code = (
        "import http.client, socket, sys\n"
        "for path in ('/v1/state', '/v1/engine-key'):\n"
        "    c = http.client.HTTPConnection('x')\n"
        "    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); c.sock = s\n"
        "    c.request('GET', path); r = c.getresponse(); print(r.status, r.read().decode())\n"
    )
    res = system_python(code, str(sup.socket))
    member, key = res.stdout.splitlines()
    assert member.startswith("200 ") and key.startswith("403 "), res.stdout + res.stderr
    assert "s3cret-key" not in res.stdout
    mine = Client([sup.runtime_dir], "m").get_json("/v1/engine-key")  # root: the service's peer
    assert mine == {"key": "s3cret-key"}


def test_vllmctl_exit_codes_say_what_to_do(tmp_path: Path) -> None:
    """403 -> 4 with the group hint; no socket -> 3 with the systemctl hint."""
    sock_dir = tmp_path / "run"
    (sock_dir / "m").mkdir(parents=True)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(sock_dir / "m" / "admin.sock"))
    srv.listen()

    def answer_403() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        body = b'{"error": "permission denied: add your user to group vllm-admin"}'
        conn.sendall(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        conn.close()

    t = threading.Thread(target=answer_403)
    t.start()
    cli = [sys.executable, "-m", "vllm_supervisor.ctl.main"]
    res = subprocess.run(
        [*cli, "metrics", "m", "--socket-dir", str(sock_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    t.join()
    srv.close()
    assert res.returncode == 4
    assert "permission denied: add your user to group vllm-admin" in res.stderr
    res = subprocess.run(
        [*cli, "activate", "nosuch", "--socket-dir", str(sock_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 3
    assert "nosuch: not running: systemctl start vllm-supervisor@nosuch" in res.stderr


def test_second_supervisor_refuses_and_stale_socket_is_replaced(
    admin: StartAdmin, tmp_path: Path
) -> None:
    sup: SupervisorProc = admin(autostart=False)
    sup.wait_for("READY")
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "vllm_supervisor.cli",
            "run",
            "m",
            "--config-dir",
            str(sup.config_dir),
            "--runtime-dir",
            str(sup.runtime_dir),
            "--state-dir",
            str(tmp_path / "s2"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert "another vllm-supervisor answers on" in second.stdout + second.stderr
    assert state(sup)["state"] == "inactive"  # the first one is untouched
    sup.signal(9)  # dies without cleaning up: a stale socket stays
    sup.wait()
    assert sup.socket.exists()
    res = sup.ctl("status", "m")
    assert res.returncode == 3 and "not running" in res.stdout
    again = SupervisorProc("m", sup.config_dir, tmp_path / "again", runtime_dir=sup.runtime_dir)
    try:
        again.wait_for("READY")  # the stale socket was replaced, not fatal
        assert state(again)["state"] == "inactive"
    finally:
        assert again.cleanup() == []


def test_reload_is_synchronous_and_refuses_a_broken_config(admin: StartAdmin) -> None:
    sup: SupervisorProc = admin("load=0.2")
    sup.wait_for("READY")
    pid = state(sup)["pid"]
    res = sup.ctl("reload", "m")
    assert res.returncode == 0 and "engine command unchanged" in res.stdout, res.stderr
    assert state(sup)["pid"] == pid
    cfg = sup.config_dir / "models.yaml"
    good = cfg.read_text()
    cfg.write_text(good.replace("port: ", "port: 99999 #"))
    res = sup.ctl("reload", "m")
    assert res.returncode == 78, res.stdout + res.stderr
    assert "config invalid; the running engine is unchanged" in res.stderr
    assert "models.m.port: expected a TCP port 1-65535, got 99999" in res.stderr
    assert state(sup)["state"] == "ready" and state(sup)["pid"] == pid
    new_port = free_port()
    cfg.write_text(
        good.replace("load=0.2", "load=0.4").replace(f"port: {sup.port}", f"port: {new_port}")
    )
    res = sup.ctl("reload", "m")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines()[-1] == "m: reload: engine restarts with the new command"
    s = state(sup)
    assert s["state"] == "ready" and s["pid"] != pid
    assert s["endpoint"] == f"127.0.0.1:{new_port}" and s["port"] == new_port
    assert sup.notify.count("RELOADING") == 1 and sup.notify.count("READY") == 2


def laughs(levels: int) -> str:
    text = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels):
        text += f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n"
    return text


def test_a_hostile_config_on_reload_leaves_the_serving_engine_untouched(
    admin: StartAdmin,
) -> None:
    """Issue 18, item 7: a recursive alias or deep nesting ended the supervisor with a
    RecursionError (and its warden took the engine down); a billion laughs hung its loop;
    a drop-in linked to /dev/zero or a FIFO read or blocked for ever."""
    sup: SupervisorProc = admin("load=0.2")
    sup.wait_for("READY")
    pid = state(sup)["pid"]
    cfg = sup.config_dir / "models.yaml"
    good = cfg.read_text()
    dropin = sup.config_dir / "models.d" / "x.yaml"
    hostile = {
        "an alias in itself": lambda: cfg.write_text(good + "x-loop: &a [*a]\n"),
        "deep nesting": lambda: cfg.write_text(good + "x: " + "[" * 5000 + "]" * 5000 + "\n"),
        "a billion laughs": lambda: dropin.write_text(laughs(9)),
        "/dev/zero": lambda: dropin.symlink_to("/dev/zero"),
        "a FIFO": lambda: os.mkfifo(dropin),
        "50 MB": lambda: dropin.write_text("# pad\n" * (50 * 1024 * 1024 // 6)),
    }
    for name, write in hostile.items():
        write()
        t0 = time.monotonic()
        res = sup.ctl("reload", "m", timeout=60)
        took = time.monotonic() - t0
        assert res.returncode == 78, (name, res.stdout + res.stderr)
        assert "config invalid; the running engine is unchanged" in res.stderr, name
        assert took < 10, (name, took)
        st = state(sup)
        assert st["state"] == "ready" and st["pid"] == pid, (name, st)
        assert sup.proc.poll() is None, name
        # The engine still answers.
        url = f"http://127.0.0.1:{sup.port}/v1/completions"
        body = json.dumps({"model": "m", "prompt": "x", "max_tokens": 1}).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        assert urllib.request.urlopen(req, timeout=10).status == 200, name
        cfg.write_text(good)
        if dropin.is_symlink() or dropin.exists():
            dropin.unlink()
    res = sup.ctl("reload", "m")
    assert res.returncode == 0 and "engine command unchanged" in res.stdout, res.stderr
    assert state(sup)["pid"] == pid
