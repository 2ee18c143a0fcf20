"""Where the daemon puts its socket and state, and where vllmctl looks: one rule for both,
per user (docs/design.md, "Paths")."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vllm_supervisor.ctl.client import find_socket, running_models
from vllm_supervisor.host import locations

from tests.helpers import system_python


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


def test_the_xdg_runtime_fix_names_an_xdg_runtime_dir_that_is_not_ours(tmp_path: Path) -> None:
    missing = tmp_path / "run-user-1000"
    sock = missing / "vllm-supervisor" / "m"
    fix = locations.xdg_runtime_fix(sock, "VSUP_RUNTIME_DIR", {"XDG_RUNTIME_DIR": str(missing)})
    assert fix == (
        f"$XDG_RUNTIME_DIR is {missing}, which does not exist (no login session made it): "
        "unset XDG_RUNTIME_DIR, or set VSUP_RUNTIME_DIR to a folder of your own"
    )
    # Not the cause: no $XDG_RUNTIME_DIR, or a folder elsewhere (the operator's choice, which
    # gets the access check's chmod fix).
    assert locations.xdg_runtime_fix(tmp_path / "x" / "m", "VSUP_RUNTIME_DIR", {}) == ""
    other = {"XDG_RUNTIME_DIR": str(missing)}
    assert locations.xdg_runtime_fix(tmp_path / "x" / "m", "VSUP_RUNTIME_DIR", other) == ""


def test_the_xdg_runtime_fix_names_an_xdg_runtime_dir_kept_through_su(tmp_path: Path) -> None:
    """As a user who cannot write the folder $XDG_RUNTIME_DIR names (root's, kept by su):
    run as nobody when the tests run as root, which may write anywhere."""
    theirs = Path(tempfile.mkdtemp(dir="/tmp"))  # 0700, ours: another user may not write
    try:
        code = (
            "from pathlib import Path; from vllm_supervisor.host import locations; "
            f"print(locations.xdg_runtime_fix(Path('{theirs}/vllm-gateway/admin.sock'), "
            "'VSUP_GATEWAY_SOCKET'))"
        )
        daemon = Path(locations.__file__).parents[2]
        env = {"PYTHONPATH": str(daemon), "XDG_RUNTIME_DIR": str(theirs)}
        root = os.geteuid() == 0
        if not root:
            theirs.chmod(0o500)
        res = system_python(code, nobody=root, env=env)
        assert res.stdout.strip() == (
            f"$XDG_RUNTIME_DIR is {theirs}, which this user cannot write (kept through su or "
            "sudo?): unset XDG_RUNTIME_DIR, or set VSUP_GATEWAY_SOCKET to a folder of your own"
        ), res.stderr
    finally:
        theirs.chmod(0o700)
        theirs.rmdir()


def test_a_repos_bytes_in_the_cache_count_partial_files_not_links(tmp_path: Path) -> None:
    """What the download watcher measures (issue 20): huggingface_hub writes
    blobs/<hash>.incomplete as bytes arrive; snapshots/ holds only links."""
    from vllm_supervisor.host import hfcache

    env = {"HF_HUB_CACHE": str(tmp_path)}
    assert hfcache.repo_bytes("org/m", env) == 0  # nothing yet: not an error
    blobs = tmp_path / "models--org--m" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "aaa").write_bytes(b"x" * 100)
    (blobs / "bbb.incomplete").write_bytes(b"x" * 50)
    snap = tmp_path / "models--org--m" / "snapshots" / "rev"
    snap.mkdir(parents=True)
    (snap / "config.json").symlink_to(blobs / "aaa")
    assert hfcache.repo_bytes("org/m", env) == 150
