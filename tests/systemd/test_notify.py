"""sd_notify against a real AF_UNIX datagram socket, path and abstract."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from vllm_supervisor.systemd.notify import MAX_STATUS, Notifier


def listener(addr: str | bytes) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(addr)
    s.settimeout(2)
    return s


def test_path_socket_utf8_status(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with listener(path) as s:
        n = Notifier({"NOTIFY_SOCKET": path})
        assert n.ready("loading weights (41 s) — ünïcode ✓")
        assert s.recv(4096).decode("utf-8") == "READY=1\nSTATUS=loading weights (41 s) — ünïcode ✓"
        assert n.status("a\nb") and s.recv(4096) == b"STATUS=a b"
        assert n.status("x" * 5000) and len(s.recv(8192).decode()) == len("STATUS=") + MAX_STATUS
        assert n.extend_timeout(1.5) and s.recv(100) == b"EXTEND_TIMEOUT_USEC=1500000"
        assert n.reloading()
        msg = s.recv(100).decode()
        assert msg.startswith("RELOADING=1\nMONOTONIC_USEC=") and int(msg.split("=")[-1]) > 0


def test_abstract_socket() -> None:
    name = f"vsup-test-{os.getpid()}"
    with listener(b"\0" + name.encode()) as s:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).stopping("bye")
        assert s.recv(100) == b"STOPPING=1\nSTATUS=bye"


def test_no_socket_is_a_no_op_and_errors_are_counted(tmp_path: Path) -> None:
    n = Notifier({})
    assert not n.enabled and n.ready("x") is False
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert gone.ready("x") is False and gone.errors == 1


def test_watchdog_only_when_the_pid_is_ours() -> None:
    assert Notifier({"WATCHDOG_USEC": "2000000"}).watchdog_usec == 2_000_000
    assert (
        Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_usec
        == 2_000_000
    )
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).watchdog_usec == 0
