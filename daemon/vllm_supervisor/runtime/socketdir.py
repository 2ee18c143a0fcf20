"""The admin socket's folder: whose it is, and which group may reach the socket in it.

Under the unit nothing here has work to do: `Group=vllm-admin` makes systemd create the
runtime folder with that group, and the socket takes the process's group when it is bound
(docs/design.md, "Running as the given user"). Elsewhere (a hand-written unit with another
Group=, a developer's run) the group is changed with chown(2), which an owner may do to any
group it belongs to without a capability; a refusal is said, not swallowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vllm_supervisor.host.access import user_name


class NotOurs(OSError):
    """The socket folder belongs to someone else: they could swap the socket under us."""


def check_owner(folder: Path) -> None:
    """The model's folder must be ours and its parent ours or root's: a folder pre-made in
    /tmp by another user (the fallback when $XDG_RUNTIME_DIR is unset) is refused."""
    me = os.geteuid()
    for path, allowed in ((folder, {me}), (folder.parent, {me, 0})):
        st = path.lstat()
        if st.st_uid not in allowed:
            raise NotOurs(
                f"{path} belongs to uid {st.st_uid}, not to {user()}: remove it, or "
                "set VSUP_RUNTIME_DIR to a folder of your own"
            )


def share(path: Path, gid: int | None, group: str, log: Any) -> None:
    """Give PATH to GROUP (gid None: no such group here, nothing to do). Members of the group
    would otherwise get "permission denied" with no hint why: a refusal is logged with the
    fix."""
    if gid is None or path.stat().st_gid == gid:
        return
    try:
        os.chown(path, -1, gid)
    except OSError as exc:
        log.warning(
            "admin socket not shared with its group: only root and this user can use it",
            path=str(path),
            group=group,
            error=str(exc),
            fix=f"add {user()} to group {group} (usermod -aG {group} {user()}) and "
            f"restart, or run the unit with Group={group}",
        )


def user() -> str:
    return user_name(os.geteuid())
