"""A multi-node model on this host: its rank, found by the addresses of the configured
interface, and what must hold here before it starts (docs/multi-node.md).

Each problem names the file, line and key of the `nodes:` block: a host that is not in the
list, an interface that is not there, a port that another process holds.
"""

from __future__ import annotations

import errno
import hashlib
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.nodes_keys import Rank
from vllm_supervisor.config.problems import Problem
from vllm_supervisor.engine.detect import EngineInfo
from vllm_supervisor.host import files, netif
from vllm_supervisor.host.files import CONFIG_CAP

Severity = Literal["error", "warning"]


def locate(
    cfg: ModelConfig,
    ports: Severity = "error",
    addresses: Callable[[str], frozenset[str]] = netif.addresses,
    exists: Callable[[str], bool] = netif.exists,
) -> tuple[Rank | None, list[Problem]]:
    """This host's rank in CFG's group, and the problems found. PORTS: how a port that is
    taken counts (`run` starts nothing on one; `vllmctl check` beside a serving group sees the
    group's own listeners)."""
    nodes = cfg.nodes
    assert nodes is not None
    problems: list[Problem] = []

    def add(key: str, message: str, severity: Severity = "error") -> None:
        f, ln = cfg.locate(f"nodes.{key}")
        problems.append(Problem(f, ln, f"models.{cfg.name}.nodes.{key}", message, severity))

    if not exists(nodes.interface):
        add("interface", f"no interface {nodes.interface!r} on this host ({socket.gethostname()})")
        return None, problems
    have = addresses(nodes.interface)
    rank = nodes.rank_of(have)
    if rank is None:
        mine = ", ".join(sorted(have)) or "none"
        add(
            "hosts",
            f"none of them is this host: {nodes.interface} has {mine}; list this "
            "host's address on the cluster network",
        )
        return None, problems
    found = Rank(nodes, rank)
    wanted = [("link_port", nodes.link_port)]
    if rank == 0:
        wanted.append(("master_port", nodes.master_port))
    for key, port in wanted:
        why = taken(found.address, port)
        if why:
            add(key, f"{found.address}:{port} {why}", ports)
    return found, problems


def taken(address: str, port: int) -> str | None:
    """Why ADDRESS:PORT cannot be listened on, or None. SO_REUSEADDR, as the listeners
    themselves set it: a socket in TIME_WAIT is no obstacle."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "is in use by another process"
            return f"cannot be listened on: {exc.strerror}"
    return None


def local_facts(cfg: ModelConfig, info: EngineInfo | None) -> dict[str, Any]:
    """What must be the same on every host of the group, as this host has it: the vLLM
    release, the model's files (their total size, a hash of config.json) and the interface.
    `vllmctl check` on rank 0 compares them (ctl/nodes.py)."""
    nodes = cfg.nodes
    assert nodes is not None
    folder = Path(cfg.model)
    config = folder / "config.json"
    try:
        digest: str | None = hashlib.sha256(files.read_bytes(config, CONFIG_CAP)).hexdigest()
    except (OSError, ValueError):
        digest = None
    size = None
    if folder.is_dir():
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {
        "vllm": info.label if info is not None else None,
        "model": cfg.model,
        "config_sha256": digest,
        "model_bytes": size,
        "interface": netif.exists(nodes.interface),
    }


def api_elsewhere(
    cfg: ModelConfig, addresses: Callable[[str], frozenset[str]] = netif.addresses
) -> str | None:
    """Why CFG's API is not on this host (a multi-node model whose rank 0 is another host),
    or None: the host gateway routes only what this host serves."""
    if cfg.nodes is None:
        return None
    if cfg.nodes.rank_of(addresses(cfg.nodes.interface)) == 0:
        return None
    return f"multi-node: its API is on rank 0, {cfg.nodes.head}"
