"""Two "hosts" on this machine for the multi-node tier (issue 21): each a network namespace,
joined by a veth pair on a private cluster network (both ends named alike, as a fleet's NICs
are), and rank 0's host also reachable from the test's own namespace through a second pair
(the clients' network). Needs root (ip-netns(8)). Used by tests/e2e/test_multinode_real_engine.py
and scripts/bench/multinode.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vllm_supervisor.runtime.process import proc_stats

CLUSTER_IF = "clu0"
CLUSTER = ("10.77.1.1", "10.77.1.2")  # inside the namespaces only: no clash between runs


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Hosts:
    tag: str
    front: str  # rank 0's host's address on the clients' network (reached from here)

    @property
    def names(self) -> tuple[str, str]:
        return f"vsup{self.tag}a", f"vsup{self.tag}b"

    def wrap(self, rank: int) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.names[rank])

    def link(self, up: bool) -> None:
        """The worker host's cluster link, up or down (a pulled cable)."""
        ip("-n", self.names[1], "link", "set", CLUSTER_IF, "up" if up else "down")

    def inode(self, rank: int) -> int:
        return os.stat(f"/run/netns/{self.names[rank]}").st_ino

    def processes(self) -> list[int]:
        """Every process living in either host's namespace."""
        wanted = {self.inode(0), self.inode(1)}
        out = []
        for pid, state, _, _ in proc_stats():
            if state == "Z":
                continue
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}/ns/net").st_ino in wanted:
                    out.append(pid)
        return out

    def remove(self) -> None:
        for name in self.names:
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", name)


def make_hosts() -> Hosts:
    """Two namespaces; the cluster pair 10.77.1.1-2 on clu0, and 10.78.N.1 (rank 0's host)
    to 10.78.N.254 (here) for clients. N from the pid: two runs side by side do not meet."""
    n = os.getpid() % 200 + 20
    tag = f"{os.getpid() % 100000}"
    hosts = Hosts(tag, f"10.78.{n}.1")
    a, b = hosts.names
    try:
        for name in (a, b):
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("link", "add", f"c{tag}a", "type", "veth", "peer", "name", f"c{tag}b")
        for end, name, addr in ((f"c{tag}a", a, CLUSTER[0]), (f"c{tag}b", b, CLUSTER[1])):
            ip("link", "set", end, "netns", name)
            ip("-n", name, "link", "set", end, "name", CLUSTER_IF)
            ip("-n", name, "addr", "add", f"{addr}/24", "dev", CLUSTER_IF)
            ip("-n", name, "link", "set", CLUSTER_IF, "up")
        ip("link", "add", f"f{tag}r", "type", "veth", "peer", "name", f"f{tag}a")
        ip("link", "set", f"f{tag}a", "netns", a)
        ip("-n", a, "addr", "add", f"{hosts.front}/24", "dev", f"f{tag}a")
        ip("-n", a, "link", "set", f"f{tag}a", "up")
        ip("addr", "add", f"10.78.{n}.254/24", "dev", f"f{tag}r")
        ip("link", "set", f"f{tag}r", "up")
    except BaseException:
        hosts.remove()
        raise
    return hosts


def can_make_hosts() -> str | None:
    """None, or why this machine cannot make them."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not Path("/run").is_dir():
        return "no /run"
    try:
        subprocess.run(["ip", "-V"], check=True, capture_output=True, timeout=5)
    except (OSError, subprocess.CalledProcessError):
        return "no ip(8) (iproute2)"
    return None
