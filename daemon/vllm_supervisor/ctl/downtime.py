"""`vllmctl upgrade|rollback MODEL ... --with-downtime`: the path for a model whose candidate
cannot run beside it (issue 22: "offer the swap-with-downtime path, showing its cost").

On a GPU that is the common case: vLLM sizes its KV cache from `gpu_memory_utilization` of
the whole card (0.9 by default), so a second engine of the same model never fits there
(runtime/room.py). Without a host gateway nothing can move clients to a candidate either.
Then the engine restarts on the new venv, through the reload an edited config gets
(runtime/supervisor.py `_reload`: a changed engine command stops the engine and starts it
again); the model is down for one start, whose cost the command prints from the last one.
Requests the gateway gets meanwhile wait for the start, and a streamed chat is shown it
(gateway/progress.py). If the new engine does not serve, the file gets its old venv back and
the old engine starts again: the failure costs a second start, never a model left down.
docs/deployment.md, "Upgrade and rollback".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Any

from vllm_supervisor import exitcodes
from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.registry import default_config_dir
from vllm_supervisor.config.rewrite import RewriteError, rewrite
from vllm_supervisor.ctl.client import Client, CtlError


def say(step: str, text: str) -> None:
    print(f"{step:<10} {text}", flush=True)


def cost(st: dict[str, Any]) -> str:
    """The downtime a restart costs, from the model's last start."""
    took = st.get("last_start") or st.get("time_to_ready")
    return f"about {took:.0f} s, its last start" if took else "one start of the model"


def checked(args: argparse.Namespace, cfg: ModelConfig, target: Path) -> bool:
    """Step 1: the model's config against TARGET's own parser, each error printed."""
    from vllm_supervisor.preflight.check import run_check

    config_dir = Path(args.config_dir) if args.config_dir else default_config_dir()
    report = run_check(config_dir, [cfg.name], probe=False, strict=True, venv=target)
    errors = [p for p in report.all_problems() if p.severity == "error"]
    for p in errors:
        say("1 check", str(p))
    if errors:
        say("1 check", "FAILED: nothing was changed")
        return False
    say("1 check", f"{cfg.name} passes against {target}")
    return True


def restart_on(
    args: argparse.Namespace,
    cfg: ModelConfig,
    client: Client,
    target: Path,
    st: dict[str, Any],
    why: str,
    kind: str,
) -> int:
    """Check, then restart the serving engine on TARGET; back to the old venv if it fails."""
    started = time.monotonic()
    if cfg.nodes is not None:  # a worker host's file would still name the old venv
        raise CtlError(f"{cfg.name} spans hosts, and every host's file needs the new venv: "
                       "deactivate it, run this on each host (an inactive model's file alone "
                       "changes), then activate it", exitcodes.FAILED)  # fmt: skip
    if not checked(args, cfg, target):
        return exitcodes.CONFIG
    say("2 restart", f"{why}: the engine restarts on {target}; the model is down for "
        f"{cost(st)}")  # fmt: skip
    kept = None if cfg.previous_venv is None else str(cfg.previous_venv)
    old = {"venv": str(cfg.venv), "previous_venv": kept}
    write(cfg, {"venv": str(target), "previous_venv": str(cfg.venv)})
    down_at = time.monotonic()
    last = reload_following(args, client, leave_on_restart=True)
    down = time.monotonic() - down_at
    if last.get("state") != "ready":
        reason = last.get("reason") or last.get("state") or "no answer"
        say("4 switch", f"FAILED: the engine on {target} does not serve ({reason}); "
            f"going back to {cfg.venv}")  # fmt: skip
        write(cfg, old)
        back = reload_following(args, client)  # from restarting: starts the old one at once
        if back.get("state") != "ready":  # a failed start leaves no engine for reload to restart
            back = follow(args, client, "/v1/activate", {"wait": True, "timeout": args.timeout})
        where = "serves again" if back.get("state") == "ready" else f"is {back.get('state')}"
        say("4 switch", f"the engine on {cfg.venv} {where}")
        return exitcodes.FAILED
    version = (last.get("engine") or {}).get("version")
    say("4 switch", f"serving on {target} (vLLM {version}) after {down:.1f} s down")
    say("5 keep", f"{cfg.venv} is kept: vllmctl rollback {cfg.name} --with-downtime returns "
        f"to it; vllmctl upgrade {cfg.name} --forget-previous drops it")  # fmt: skip
    total = round(time.monotonic() - started, 1)
    summary = {"model": cfg.name, "kind": kind, "venv": str(target),
               "seconds": total, "switch_seconds": round(down, 2),
               "old_requests_ended_after": None, "downtime": True}  # fmt: skip
    print(json.dumps(summary) if args.json else f"{kind} done in {total} s")
    return exitcodes.OK


def write(cfg: ModelConfig, changes: dict[str, str | None]) -> None:
    try:
        rewrite(Path(cfg.file), cfg.name, changes)
    except (RewriteError, OSError) as exc:
        raise CtlError(f"{cfg.file}: {exc}; the engine was not restarted",
                       exitcodes.FAILED) from None  # fmt: skip
    said = ", ".join(f"{k}: {'(removed)' if v is None else v}" for k, v in changes.items())
    say("4 switch", f"{cfg.file}: {said}")


class _EngineGone(Exception):
    """The engine on the new venv ended: stop following (see `follow`)."""


def reload_following(
    args: argparse.Namespace, client: Client, leave_on_restart: bool = False
) -> dict[str, Any]:
    """The instance re-reads the file; its engine command changed, so it restarts the engine
    and the answer follows the states until ready, failed or inactive."""
    body = {"wait": True, "timeout": args.timeout}
    return follow(args, client, "/v1/reload", body, leave_on_restart)


def follow(
    args: argparse.Namespace,
    client: Client,
    url: str,
    body: dict[str, Any],
    leave_on_restart: bool = False,
) -> dict[str, Any]:
    """POST an order whose answer is NDJSON states (runtime/admin_orders.py `_follow`), each
    new state printed; the last one. LEAVE_ON_RESTART: it ends at the first `restarting`
    too (the new engine's; the old one's retries are worth waiting for): the instance
    would try the same engine again after each backoff (2 s, 4 s, ... 5 times by default,
    settings.py), and each try of a big model on a GPU is a whole load, all of it downtime,
    when going back to the engine that served is one start."""
    last: dict[str, Any] = {}
    shown: tuple[object, object] = (None, None)

    def show(raw: bytes) -> None:
        nonlocal last, shown
        snap = json.loads(raw) if raw.strip() else None
        if isinstance(snap, dict):
            state = snap.get("state")
            phase = (snap.get("progress") or {}).get("phase") if state == "starting" else None
            now = (state, phase)
            if now != shown:
                say("4 switch", f"{now[0]}" + (f" ({now[1]})" if now[1] else ""))
            last, shown = snap, now
            if leave_on_restart and now[0] == "restarting":
                raise _EngineGone

    # Leaving closes the stream; the instance stops following it (admin_orders.py, gone()).
    with contextlib.suppress(_EngineGone):
        client.stream("POST", url, body, show, timeout=args.timeout + 60)
    return last
