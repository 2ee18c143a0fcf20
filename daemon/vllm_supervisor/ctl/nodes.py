"""vllmctl's view of a multi-node group (docs/multi-node.md): the ranks under `status`, and
the group-wide part of `check` on rank 0, which asks every other rank's supervisor over the
group's link (protocol/nodes.py) for what must match."""

from __future__ import annotations

import asyncio
from typing import Any

from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.nodes_keys import Rank
from vllm_supervisor.config.problems import Problem
from vllm_supervisor.engine.detect import EngineInfo
from vllm_supervisor.preflight import nodes
from vllm_supervisor.preflight.render import read_key_file
from vllm_supervisor.protocol import nodes as proto

MATCH = (
    ("vllm", "runs {theirs}; rank 0 runs {ours}: every rank must run the same vLLM"),
    (
        "config_sha256",
        "has another config.json (sha256 {theirs:.12} here {ours:.12}): not the same model files",
    ),
    ("model_bytes", "has {theirs} bytes of model files, rank 0 has {ours}: not the same files"),
)


def status_lines(model: str, view: dict[str, Any], now: float) -> list[str]:
    """The group under `vllmctl status`: every rank on rank 0, where the head is elsewhere."""
    if view.get("rank") != 0:
        heard = view.get("head_heard")
        when = f", heard {heard:.1f} s ago" if isinstance(heard, float) else ""
        return [
            f"{model}: rank {view.get('rank')} of a multi-node group; rank 0 at "
            f"{view.get('head')} is {view.get('head_state')}{when}"
        ]
    table = [["  RANK", "HOST", "STATE", "SINCE", "PID", "NOTE"]]
    for r in view.get("ranks", []):
        since = r.get("since")
        table.append(
            [
                f"  {r.get('rank')}",
                str(r.get("host")),
                str(r.get("state")),
                f"{now - since:.0f}s" if isinstance(since, (int, float)) else "-",
                str(r.get("pid") or "-"),
                str(r.get("error") or ""),
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(5)]
    out = [f"{model}: multi-node group of {len(table) - 1} hosts, rank 0 here"]
    for line in table:
        cells = [c.ljust(w) for c, w in zip(line[:5], widths, strict=True)]
        out.append("  ".join([*cells, line[5]]).rstrip())
    return out


def check_group(cfg: ModelConfig, rank: Rank, info: EngineInfo | None) -> list[Problem]:
    """Rank 0's `vllmctl check`: each other rank reachable with the key, and the same vLLM
    and model files as here. Each problem names the rank and its host."""
    assert cfg.nodes is not None
    f, ln = cfg.locate("nodes.hosts")
    key_name = f"models.{cfg.name}.nodes.hosts"
    try:
        key = read_key_file(cfg.nodes.key_file).encode()
    except (OSError, ValueError) as exc:
        return [Problem(f, ln, f"models.{cfg.name}.nodes.key_file", f"cannot read: {exc}")]
    ours = nodes.local_facts(cfg, info)
    problems = []
    for r in range(1, len(cfg.nodes.hosts)):
        peer = rank.peer(r)
        try:
            theirs = asyncio.run(
                proto.call(
                    rank.nodes.hosts[r],
                    rank.nodes.link_port,
                    key,
                    cfg.name,
                    "GET",
                    proto.FACTS,
                    None,
                    3.0,
                )
            )
        except proto.Refused as exc:
            problems.append(
                Problem(
                    f,
                    ln,
                    key_name,
                    f"{peer} refused the link: {exc} (is its nodes.key_file the same key?)",
                )
            )
            continue
        except (OSError, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            problems.append(
                Problem(
                    f,
                    ln,
                    key_name,
                    f"{peer} does not answer on link port "
                    f"{rank.nodes.link_port} ({why}): is vllm-supervisor@"
                    f"{cfg.name} running there, and the port open?",
                )
            )
            continue
        for field, message in MATCH:
            if theirs.get(field) != ours.get(field):
                text = message.format(theirs=str(theirs.get(field)), ours=str(ours.get(field)))
                problems.append(Problem(f, ln, key_name, f"{peer} {text}"))
        if theirs.get("interface") is not True:
            problems.append(
                Problem(
                    f,
                    ln,
                    f"models.{cfg.name}.nodes.interface",
                    f"{peer} has no interface {cfg.nodes.interface!r}",
                )
            )
    return problems
