"""Where things are: the admin socket, the state folder, and the address of a local engine.

The daemon and vllmctl both ask here, so they cannot disagree. Standard library only: vllmctl
imports it on every call.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_RUNTIME_DIR = Path("/run/vllm-supervisor")
DEFAULT_STATE_DIR = Path("/var/lib/vllm-supervisor")


def runtime_dir() -> Path:
    return Path(os.environ.get("VSUP_RUNTIME_DIR") or DEFAULT_RUNTIME_DIR)


def socket_path(base: Path, model: str) -> Path:
    return base / model / "admin.sock"


def state_root() -> Path:
    """Parent of every model's state folder (`last-failure.json` lives in ROOT/MODEL)."""
    return Path(os.environ.get("VSUP_STATE_DIR") or DEFAULT_STATE_DIR)


def local_host(host: str) -> str:
    """Where this host reaches an engine bound to `host`: a wildcard means loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def http_base(host: str, port: int) -> str:
    """http://HOST:PORT with an IPv6 literal in brackets (RFC 3986)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
