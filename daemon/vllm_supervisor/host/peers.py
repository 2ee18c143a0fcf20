"""Who is on the other end of an AF_UNIX connection (SO_PEERCRED, unix(7)), and whether they
may operate this service: the rule of every admin socket here (the instances' and the
gateway's)."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import struct
from pathlib import Path


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the connected peer: unix(7) SO_PEERCRED."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def process_groups(pid: int) -> set[int]:
    """The peer process's real supplementary groups (/proc/PID/status `Groups:`)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()


def peer_allowed(pid: int, uid: int, gid: int, admin_gid: int | None) -> bool:
    """Root, the service's own uid, and members of the admin group (primary, supplementary
    as the peer process holds them, or listed in /etc/group) may use the socket."""
    if uid in (0, os.getuid()):
        return True
    if admin_gid is None:
        return False
    if gid == admin_gid or admin_gid in process_groups(pid):
        return True
    with contextlib.suppress(KeyError):
        return pwd.getpwuid(uid).pw_name in grp.getgrgid(admin_gid).gr_mem
    return False
