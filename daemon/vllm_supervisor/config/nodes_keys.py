"""`nodes:`: one model served by vLLM's own multi-node mode across several hosts, one
supervisor per host (docs/multi-node.md).

The same file is deployed to every host; a host finds its rank by the addresses of the
configured interface (host/netif.py), so nothing is edited per host. The hosts are addresses,
not names: a name can resolve differently on each host, and vLLM's VLLM_HOST_IP, gloo and the
rendezvous all need the one address each rank is reached at on the cluster network.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from vllm_supervisor.config import key_parsers as p
from vllm_supervisor.config.problems import ProblemScope
from vllm_supervisor.config.yamltree import YNode

# vLLM's own default rendezvous port is 29500 (torch.distributed's): the group pins it.
MASTER_PORT = 29500
# The supervisors' link (runtime/nodelink.py), on every host of the group.
LINK_PORT = 29600
IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")  # IFNAMSIZ - 1 (netdevice(7))
NODE_KEYS = ("hosts", "interface", "master_port", "link_port", "key_file")


@dataclass(frozen=True)
class Nodes:
    hosts: tuple[str, ...]  # each host's address on the cluster network, in rank order
    interface: str  # the cluster network's interface: VLLM_HOST_IP, GLOO/NCCL_SOCKET_IFNAME
    key_file: Path  # the group's shared key (runtime/nodelink.py signs with it)
    master_port: int = MASTER_PORT  # torch.distributed's rendezvous, on rank 0
    link_port: int = LINK_PORT  # the supervisors' link, on every host

    @property
    def head(self) -> str:
        return self.hosts[0]

    def rank_of(self, addresses: frozenset[str]) -> int | None:
        """This host's rank: the first listed host whose address is one of ADDRESSES (those
        of the interface here), or None."""
        for rank, host in enumerate(self.hosts):
            if ipaddress.ip_address(host).compressed in addresses:
                return rank
        return None


def parse(ctx: ProblemScope, node: YNode | None) -> Nodes | None:
    """The `nodes:` block, or None when absent or invalid (its problems reported)."""
    if node is None or node.kind == "null":  # `nodes:` left empty: one host
        return None
    if node.mapping is None:
        ctx.err(node, "nodes", "expected a mapping: hosts, interface, key_file, ...")
        return None
    m = node.mapping
    ok = True
    for key, v in m.items():
        if key not in NODE_KEYS:
            ctx.err(
                v,
                f"nodes.{key}",
                "unknown key; expected one of " + ", ".join(NODE_KEYS),
                node.key_lines[key],
            )
            ok = False
    hosts = _hosts(ctx, m.get("hosts"), node)
    iface = m.get("interface")
    interface = None
    if iface is None:
        ctx.err(node, "nodes.interface", "is required: the cluster network's interface")
    elif not isinstance(iface.scalar, str) or not IFNAME.match(iface.scalar):
        ctx.err(iface, "nodes.interface", f"expected an interface name, got {iface.plain()!r}")
    else:
        interface = iface.scalar
    key_file = None
    if (kf := m.get("key_file")) is None:
        ctx.err(node, "nodes.key_file", "is required: the group's shared key (docs/multi-node.md)")
    elif isinstance(path := p.path(ctx, kf, "nodes.key_file"), Path):
        key_file = path
    ports = {}
    for key, default in (("master_port", MASTER_PORT), ("link_port", LINK_PORT)):
        port = p.port(ctx, m[key], f"nodes.{key}") if key in m else default
        ports[key] = port if isinstance(port, int) else default
        ok = ok and isinstance(port, int)
    if ports["master_port"] == ports["link_port"]:
        ctx.err(
            node,
            "nodes.link_port",
            "must differ from nodes.master_port",
            node.key_lines.get("link_port", node.line),
        )
        ok = False
    if not ok or hosts is None or interface is None or key_file is None:
        return None
    return Nodes(hosts, interface, key_file, ports["master_port"], ports["link_port"])


def _hosts(ctx: ProblemScope, node: YNode | None, parent: YNode) -> tuple[str, ...] | None:
    if node is None:
        ctx.err(parent, "nodes.hosts", "is required: each host's address, rank 0 first")
        return None
    if node.sequence is None or len(node.sequence) < 2:
        ctx.err(node, "nodes.hosts", "expected a list of at least two addresses, rank 0 first")
        return None
    out: list[str] = []
    for item in node.sequence:
        try:
            addr = ipaddress.ip_address(str(item.scalar) if item.scalar is not None else "")
        except ValueError:
            ctx.err(
                item,
                "nodes.hosts",
                f"expected an IP address, got {item.plain()!r} (names "
                "can resolve differently per host: docs/multi-node.md)",
            )
            return None
        if addr.is_unspecified or addr.is_multicast:
            ctx.err(item, "nodes.hosts", f"{addr} is not one host's address")
            return None
        if addr.compressed in out:
            ctx.err(item, "nodes.hosts", f"{addr} is listed twice")
            return None
        out.append(addr.compressed)
    return tuple(out)


@dataclass(frozen=True)
class Rank:
    """This host's place in its group (found by preflight/nodes.py)."""

    nodes: Nodes
    rank: int

    @property
    def address(self) -> str:
        return self.nodes.hosts[self.rank]

    @property
    def head(self) -> bool:
        return self.rank == 0

    def peer(self, rank: int) -> str:
        return f"rank {rank} ({self.nodes.hosts[rank]})"
