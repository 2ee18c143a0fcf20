"""Where the daemon puts its socket and state, and where vllmctl looks: one rule for both,
per user (docs/design.md, "Paths")."""

from __future__ import annotations

from pathlib import Path

from vllm_supervisor.ctl.client import find_socket, running_models
from vllm_supervisor.host import locations


def test_runtime_dir_order() -> None:
    assert locations.runtime_dir(
        "m", {"VSUP_RUNTIME_DIR": "/x", "RUNTIME_DIRECTORY": "/y"}, 0
    ) == Path("/x")
    # systemd's per-instance folder (RuntimeDirectory=vllm-supervisor/%i): its parent
    assert locations.runtime_dir("m", {"RUNTIME_DIRECTORY": "/run/vllm-supervisor/m"}, 998) == Path(
        "/run/vllm-supervisor"
    )
    assert locations.runtime_dir("m", {"RUNTIME_DIRECTORY": "/run/a:/run/b"}, 0) == Path("/run/a")
    assert locations.runtime_dir("m", {}, 0) == Path("/run/vllm-supervisor")
    assert locations.runtime_dir("m", {"XDG_RUNTIME_DIR": "/run/user/1000"}, 1000) == Path(
        "/run/user/1000/vllm-supervisor"
    )
    assert locations.runtime_dir("m", {}, 1000) == Path("/tmp/vllm-supervisor-1000")


def test_vllmctl_looks_in_the_users_folder_then_the_systems() -> None:
    assert locations.runtime_dirs({}, 0) == [Path("/run/vllm-supervisor")]
    assert locations.runtime_dirs({"XDG_RUNTIME_DIR": "/run/user/7"}, 7) == [
        Path("/run/user/7/vllm-supervisor"),
        Path("/run/vllm-supervisor"),
    ]
    assert locations.runtime_dirs({"VSUP_RUNTIME_DIR": "/x"}, 7) == [Path("/x")]


def test_state_dirs() -> None:
    assert locations.state_root({}, 0) == Path("/var/lib/vllm-supervisor")
    assert locations.state_root({"HOME": "/home/a"}, 5) == Path(
        "/home/a/.local/state/vllm-supervisor"
    )
    assert locations.state_root({"XDG_STATE_HOME": "/s", "HOME": "/h"}, 5) == Path(
        "/s/vllm-supervisor"
    )
    assert locations.state_root({"VSUP_STATE_DIR": "/v"}, 5) == Path("/v")
    assert locations.state_roots({"HOME": "/home/a"}, 5) == [
        Path("/home/a/.local/state/vllm-supervisor"),
        Path("/var/lib/vllm-supervisor"),
    ]
    assert locations.model_state_dir(
        "m", {"STATE_DIRECTORY": "/var/lib/vllm-supervisor/m"}, 9
    ) == Path("/var/lib/vllm-supervisor/m")
    assert locations.model_state_dir("m", {}, 0) == Path("/var/lib/vllm-supervisor/m")


def test_find_socket_takes_the_first_folder_that_has_it(tmp_path: Path) -> None:
    user, system = tmp_path / "user", tmp_path / "system"
    (system / "m").mkdir(parents=True)
    (system / "m" / "admin.sock").touch()
    (user / "n").mkdir(parents=True)
    (user / "n" / "admin.sock").touch()
    assert find_socket([user, system], "m") == system / "m" / "admin.sock"
    assert find_socket([user, system], "n") == user / "n" / "admin.sock"
    # absent everywhere: the first folder's path, so "not running" says where it looked
    assert find_socket([user, system], "x") == user / "x" / "admin.sock"
    assert running_models([user, system]) == ["m", "n"]
