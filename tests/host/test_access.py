"""Paths checked as the user that will use them: the blocking folder or file is named, with
its mode and the fix. Checking as another user needs root (fork + setuid), as CI runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vllm_supervisor.host import access
from vllm_supervisor.host.access import Identity, Need, R, W, X

NOBODY = Identity("nobody", 65534, 65534, ())
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="checking as another user needs root")


@as_root
def test_the_outermost_folder_that_blocks_is_named(open_tmp: Path) -> None:
    tmp_path = open_tmp
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    (locked / "inner" / "w.safetensors").write_text("x")
    tmp_path.chmod(0o755)
    locked.chmod(0o700)
    need = Need(locked / "inner" / "w.safetensors", R, "model", "the model file")
    denied = access.check([need], NOBODY)
    assert denied is not None and len(denied) == 1
    d = denied[0]
    assert d.reason == f"cannot enter {locked} (drwx------ root:root)"
    assert d.at == str(locked) and d.bits == "x"
    msg = d.message("nobody")
    assert msg.startswith(f"the model file {need.path}: user nobody cannot enter {locked}")
    assert f"chmod g+x {locked}" in msg
    assert access.check([need]) == []  # root itself passes: the check can also say yes


@as_root
def test_an_unreadable_file_and_a_folder_one_cannot_create_in(open_tmp: Path) -> None:
    tmp_path = open_tmp
    tmp_path.chmod(0o755)
    weights = tmp_path / "model.safetensors"
    weights.write_text("x")
    weights.chmod(0o600)
    state = tmp_path / "state" / "m"
    denied = access.check(
        [
            Need(weights, R, "model", "the model file"),
            Need(state, R | W | X, "", "the state folder", create=True),
        ],
        NOBODY,
    )
    assert denied is not None
    assert [d.reason for d in denied] == [
        "cannot read it (-rw------- root:root)",
        f"cannot create it: cannot write in {tmp_path} (drwxr-xr-x root:root)",
    ]
    assert denied[1].bits == "wx"
    # A folder that is the wrong one (an $XDG_RUNTIME_DIR su kept) has its own fix: not chmod.
    sock = Need(state, R | W | X, "", "the admin socket's folder", create=True, fix="unset X")
    [d] = access.check([sock], NOBODY) or []
    assert d.fix("nobody") == "unset X" and d.message("nobody").endswith("; unset X")


def test_missing_path_and_protect_home(tmp_path: Path) -> None:
    gone = Need(tmp_path / "nope", R, "api_key_file", "the API key file")
    [d] = access.check([gone]) or []
    assert d.reason == "finds no such file" and "create it" in d.fix("me")
    hidden = access.protect_home_denials(
        [
            Need(Path("/root/.pyenv/bin/python3"), R | X, "venv", "the engine's executable"),
            Need(Path("/opt/x"), R, "", "x"),
        ]
    )
    assert [d.need.path for d in hidden] == [Path("/root/.pyenv/bin/python3")]
    assert "ProtectHome=" in hidden[0].reason and "move it out of /home" in hidden[0].fix("vllm")


def test_venv_needs_follow_the_interpreter(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /root/.pyenv/versions/3.11.7/bin\n")
    real = tmp_path / "python3.11"
    real.write_text("")
    (venv / "bin" / "python").symlink_to(real)
    needs = access.venv_needs(venv)
    assert [n.path for n in needs] == [
        venv / "pyvenv.cfg",
        venv / "bin" / "python",
        real,
        Path("/root/.pyenv/versions/3.11.7/bin"),
    ]
    assert access.protect_home_denials(needs)[0].need.path == Path(
        "/root/.pyenv/versions/3.11.7/bin"
    )


def test_identity_of_adds_the_units_groups() -> None:
    me = Identity.of("root", "root", ["nosuchgroup-xyz"])
    assert me.uid == 0 and me.gid == 0 and 0 in me.groups
