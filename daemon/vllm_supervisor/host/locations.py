"""Where things are: the admin socket, the state folder, and the address of a local engine.

The daemon and vllmctl both ask here, so they cannot disagree. Standard library only: vllmctl
imports it on every call.

Defaults follow what other daemons that also run unprivileged do (docs/design.md, "Paths"):
an explicit variable first, then what systemd hands the unit, then the system path for root,
then the user's own XDG folder, so `scripts/quickstart` works for any user and vllmctl finds
both its user's models and the system's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from vllm_supervisor.protocol import admin

SYSTEM_RUNTIME_DIR = Path("/run/vllm-supervisor")
# The gateway's own admin socket (its unit: RuntimeDirectory=vllm-gateway). Not under
# SYSTEM_RUNTIME_DIR: that folder is root's, and each instance's folder is its own.
SYSTEM_GATEWAY_SOCKET = Path("/run/vllm-gateway/admin.sock")
SYSTEM_STATE_DIR = Path("/var/lib/vllm-supervisor")


def _first(value: str | None) -> str:
    """systemd joins several RuntimeDirectory=/StateDirectory= paths with ':'."""
    return (value or "").split(":")[0]


def user_runtime_dir(env: Mapping[str, str], uid: int) -> Path:
    """A non-root user's own: $XDG_RUNTIME_DIR (pam_systemd makes it, 0700), else a folder in
    /tmp named for the uid (checked for ownership by whoever creates the socket in it)."""
    xdg = env.get("XDG_RUNTIME_DIR")
    return Path(xdg) / "vllm-supervisor" if xdg else Path(f"/tmp/vllm-supervisor-{uid}")


def user_state_dir(env: Mapping[str, str]) -> Path:
    """$XDG_STATE_HOME/vllm-supervisor (XDG Base Directory spec; ~/.local/state by default)."""
    xdg = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME") or "~").expanduser() / ".local" / "state"
    )
    return Path(xdg) / "vllm-supervisor"


def runtime_dir(
    model: str | None = None, env: Mapping[str, str] | None = None, uid: int | None = None
) -> Path:
    """The daemon's folder that holds MODEL/admin.sock.

    $VSUP_RUNTIME_DIR; else systemd's $RUNTIME_DIRECTORY (the unit makes it per instance,
    vllm-supervisor/%i, so its parent when it is named for the model); else
    /run/vllm-supervisor for root; else the user's own (user_runtime_dir).
    """
    env = os.environ if env is None else env
    uid = os.getuid() if uid is None else uid
    if env.get("VSUP_RUNTIME_DIR"):
        return Path(env["VSUP_RUNTIME_DIR"])
    systemd = _first(env.get("RUNTIME_DIRECTORY"))
    if systemd:
        p = Path(systemd)
        return p.parent if model is not None and p.name == model else p
    return SYSTEM_RUNTIME_DIR if uid == 0 else user_runtime_dir(env, uid)


def runtime_dirs(env: Mapping[str, str] | None = None, uid: int | None = None) -> list[Path]:
    """Where vllmctl looks for sockets, in order: $VSUP_RUNTIME_DIR alone when set, else the
    user's own folder (non-root) and then the system's, so one command sees the quickstart's
    model and the systemd instances alike."""
    env = os.environ if env is None else env
    uid = os.getuid() if uid is None else uid
    if env.get("VSUP_RUNTIME_DIR"):
        return [Path(env["VSUP_RUNTIME_DIR"])]
    return [SYSTEM_RUNTIME_DIR] if uid == 0 else [user_runtime_dir(env, uid), SYSTEM_RUNTIME_DIR]


def gateway_sockets(env: Mapping[str, str] | None = None, uid: int | None = None) -> list[Path]:
    """Where the gateway's admin socket is, in the order vllmctl tries them; the gateway
    itself serves the first. $VSUP_GATEWAY_SOCKET alone when set; else systemd's
    $RUNTIME_DIRECTORY when it is the gateway's own; else the user's, then the system's."""
    env = os.environ if env is None else env
    uid = os.getuid() if uid is None else uid
    if env.get("VSUP_GATEWAY_SOCKET"):
        return [Path(env["VSUP_GATEWAY_SOCKET"])]
    systemd = _first(env.get("RUNTIME_DIRECTORY"))
    if systemd and Path(systemd).name == "vllm-gateway":
        return [Path(systemd) / "admin.sock"]
    if uid == 0:
        return [SYSTEM_GATEWAY_SOCKET]
    xdg = env.get("XDG_RUNTIME_DIR")
    own = Path(xdg) / "vllm-gateway" if xdg else Path(f"/tmp/vllm-gateway-{uid}")
    return [own / "admin.sock", SYSTEM_GATEWAY_SOCKET]


socket_path = admin.socket_path  # the protocol's own: where MODEL's admin socket is


def state_root(env: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """Parent of every model's state folder (`last-failure.json` lives in ROOT/MODEL):
    $VSUP_STATE_DIR, else /var/lib/vllm-supervisor for root, else the user's XDG state."""
    env = os.environ if env is None else env
    uid = os.getuid() if uid is None else uid
    if env.get("VSUP_STATE_DIR"):
        return Path(env["VSUP_STATE_DIR"])
    return SYSTEM_STATE_DIR if uid == 0 else user_state_dir(env)


def state_roots(env: Mapping[str, str] | None = None, uid: int | None = None) -> list[Path]:
    """Where vllmctl looks for last failures, in the same order as runtime_dirs()."""
    env = os.environ if env is None else env
    uid = os.getuid() if uid is None else uid
    if env.get("VSUP_STATE_DIR") or uid == 0:
        return [state_root(env, uid)]
    return [user_state_dir(env), SYSTEM_STATE_DIR]


def model_state_dir(
    model: str, env: Mapping[str, str] | None = None, uid: int | None = None
) -> Path:
    """The daemon's own state folder: systemd's $STATE_DIRECTORY (StateDirectory=
    vllm-supervisor/%i), else state_root()/MODEL."""
    env = os.environ if env is None else env
    return Path(_first(env.get("STATE_DIRECTORY")) or state_root(env, uid) / model)


def local_host(host: str) -> str:
    """Where this host reaches an engine bound to `host`: a wildcard means loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def http_base(host: str, port: int) -> str:
    """http://HOST:PORT with an IPv6 literal in brackets (RFC 3986)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def xdg_runtime_fix(path: Path, override: str, env: Mapping[str, str] | None = None) -> str:
    """What to do when an admin socket at PATH cannot be made because $XDG_RUNTIME_DIR, the
    folder above it, is not this user's: su and sudo keep the caller's (/run/user/0), and a
    shell without a login session can name one pam_systemd never made (pam_systemd(8)).
    "" when that is not the cause: a folder the operator chose gets the usual chmod fix.
    OVERRIDE: the variable that moves the socket elsewhere."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_RUNTIME_DIR")
    if not xdg or Path(xdg) not in path.parents:
        return ""
    elsewhere = f"set {override} to a folder of your own"
    try:
        os.stat(xdg)
    except FileNotFoundError:
        return (
            f"$XDG_RUNTIME_DIR is {xdg}, which does not exist (no login session made it): "
            f"unset XDG_RUNTIME_DIR, or {elsewhere}"
        )
    except OSError:
        pass  # a folder above it is closed to us: not ours either
    if not os.access(xdg, os.W_OK | os.X_OK):
        return (
            f"$XDG_RUNTIME_DIR is {xdg}, which this user cannot write (kept through su or "
            f"sudo?): unset XDG_RUNTIME_DIR, or {elsewhere}"
        )
    return ""
