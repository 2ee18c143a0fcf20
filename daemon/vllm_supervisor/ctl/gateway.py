"""`vllmctl gateway status`: what the host gateway sees, per model: its state, requests in
flight and waiting, when it was last used, and the TTL left before it is deactivated."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vllm_supervisor import exitcodes
from vllm_supervisor.ctl.client import Client, CtlError
from vllm_supervisor.host.locations import gateway_sockets


def gateway_client(timeout: float = 10.0) -> Client:
    """The gateway's admin socket: the first that exists of the user's and the system's."""
    paths = gateway_sockets()
    found = next((p for p in paths if p.exists()), paths[0])
    return Client([], "gateway", timeout, path=Path(found))


def running_gateway(model: str) -> Client | None:
    """The gateway's admin client when a gateway runs here and knows MODEL, else None:
    vllmctl then goes through it, so its routing state stays true (ctl/commands.py)."""
    paths = gateway_sockets()
    found = next((p for p in paths if p.exists()), None)
    if found is None:
        return None
    client = Client([], "gateway", 5.0, path=Path(found))
    try:
        known = client.get_json("/admin/state").get("models", {})
    except CtlError:
        return None
    return client if model in known else None


def cmd_gateway(args: argparse.Namespace) -> int:
    snap: dict[str, Any] = gateway_client().get_json("/admin/state").get("models", {})
    if args.json:
        print(json.dumps(snap, indent=2))
        return exitcodes.OK
    rows = [("MODEL", "STATE", "IN-FLIGHT", "QUEUED", "SERVED", "IDLE", "TTL-LEFT")]
    for name, m in sorted(snap.items()):
        idle = "-" if m.get("idle") is None else f"{m['idle']:.0f}s"
        ttl = "-" if m.get("ttl_left") is None else f"{m['ttl_left']:.0f}s"
        rows.append(
            (name, m["state"], str(m["in_flight"]), str(m["queued"]), str(m["served"]), idle, ttl)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return exitcodes.OK
