"""This host's network interfaces: is one there, and which addresses it has. A multi-node
group's host finds its rank by them (config/nodes_keys.py).

IPv4 through SIOCGIFADDR (netdevice(7): the interface's primary address), IPv6 from
/proc/net/if_inet6 (one line per address: hex address, index, prefix, scope, flags, name).
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from pathlib import Path

SIOCGIFADDR = 0x8915  # <linux/sockios.h>
IF_INET6 = Path("/proc/net/if_inet6")


def exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def addresses(name: str) -> frozenset[str]:
    """The addresses of interface NAME (compressed text); empty when it has none or is not
    there."""
    out: set[str] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            req = struct.pack("256s", name.encode()[:15])
            got = fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)
            out.add(socket.inet_ntoa(got[20:24]))
        except OSError:
            pass
    try:
        lines = IF_INET6.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) == 6 and parts[5] == name:
            out.add(ipaddress.IPv6Address(bytes.fromhex(parts[0])).compressed)
    return frozenset(out)
