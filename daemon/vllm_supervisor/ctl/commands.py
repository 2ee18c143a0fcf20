"""vllmctl's admin commands. Imports stay light: no aiohttp, no asyncio (docs/cli.md)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from vllm_supervisor import exitcodes
from vllm_supervisor.ctl.client import Client, CtlError, running_models
from vllm_supervisor.host.locations import runtime_dirs, state_roots
from vllm_supervisor.protocol.states import COMING, UNKNOWN, State

DEACTIVATED = (State.INACTIVE, State.SLEEPING)  # where a deactivation ends well

COLOURS: dict[str, str] = {
    State.READY: "32",
    State.FAILED: "31",
    **{s: "33" for s in (*COMING, State.DRAINING, State.STOPPING)},
    State.SLEEPING: "34",
}


def base(args: argparse.Namespace) -> list[Path]:
    """Socket folders to search: --socket-dir alone, else places.runtime_dirs()."""
    return [Path(args.socket_dir)] if args.socket_dir else runtime_dirs()


def state_root(args: argparse.Namespace) -> list[Path]:
    return [Path(args.state_dir)] if args.state_dir else state_roots()


def configured(args: argparse.Namespace) -> dict[str, Any]:
    """Configured models by name (empty when the config is unreadable: status still works)."""
    from vllm_supervisor.config.problems import ConfigInvalid
    from vllm_supervisor.config.registry import default_config_dir, load_registry

    try:
        return dict(
            load_registry(Path(args.config_dir) if args.config_dir else default_config_dir()).models
        )
    except (ConfigInvalid, OSError):
        return {}


def ago(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def cmd_status(args: argparse.Namespace) -> int:
    cfgs = configured(args)
    names = args.models or sorted(set(cfgs) | set(running_models(base(args))))
    rows, code = [], exitcodes.OK
    for name in names:
        try:
            st = Client(base(args), name, timeout=3).get_json("/v1/state")
            diag = st.get("diagnosis") or {}
            progress = st.get("progress") if st.get("state") == "starting" else None
            phase = progress.get("phase") if isinstance(progress, dict) else None
            rows.append(
                {
                    "model": name,
                    "state": st["state"],
                    "since": st["since"],
                    "port": st.get("port"),
                    "pid": st.get("pid"),
                    "restarts": st.get("restarts"),
                    "gpu_memory": st.get("gpu_memory"),
                    # Loading: the phase says more than why it started (issue 20: a download
                    # shows its bytes and rate here).
                    "reason": diag.get("title") or phase or st.get("reason", ""),
                    **({"nodes": st["nodes"]} if isinstance(st.get("nodes"), dict) else {}),
                    "engine": st.get("engine"),
                    "previous": st.get("previous"),
                    "upgrade": st.get("upgrade"),
                }
            )
        except CtlError as exc:
            if args.models:
                code = max(code, exc.code)
            row = {
                "model": name,
                "state": "not running" if exc.code == exitcodes.NOT_RUNNING else UNKNOWN,
                "since": None,
                "pid": None,
                "restarts": None,
                "gpu_memory": None,
                "port": getattr(cfgs.get(name), "port", None),
                "reason": str(exc).split(": ", 1)[-1],
            }
            last = _last_failure(state_root(args), name)
            if last and exc.code == exitcodes.NOT_RUNNING:
                d = last.get("diagnosis") or {}
                row["reason"] = f"last failure: {d.get('title') or last.get('reason')}"
                row["since"] = last.get("at")
            if name not in cfgs and cfgs:
                row["reason"] = "not configured"
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return code
    tty = sys.stdout.isatty()
    table = [["MODEL", "STATE", "SINCE", "PORT", "PID", "RESTARTS", "GPU-MEM", "REASON"]]
    now = time.time()
    for r in rows:
        table.append(
            [
                r["model"],
                r["state"],
                ago(now - r["since"]) if r["since"] else "-",
                str(r["port"] or "-"),
                str(r["pid"] or "-"),
                "-" if r["restarts"] is None else str(r["restarts"]),
                gpu_cell(r["gpu_memory"]),
                r["reason"] or "",
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(7)]
    for i, line in enumerate(table):
        cells = [c.ljust(w) for c, w in zip(line[:7], widths, strict=True)]
        if tty and i and line[1] in COLOURS:
            cells[1] = f"\033[{COLOURS[line[1]]}m{cells[1]}\033[0m"
        print("  ".join([*cells, line[7]]).rstrip())
    for r in rows:
        print("\n".join(upgrade_lines(r)))
        if "nodes" in r:  # a multi-node model: its ranks (ctl/nodes.py)
            from vllm_supervisor.ctl.nodes import status_lines

            print("\n".join(status_lines(r["model"], r["nodes"], now)))
    return code


def upgrade_lines(r: dict[str, Any]) -> list[str]:
    """Which vLLM serves, which is kept for `vllmctl rollback`, and a candidate under way
    (ctl/upgrade.py); nothing for a model that was never upgraded."""
    engine, prev = r.get("engine") or {}, r.get("previous")
    cand = (r.get("upgrade") or {}).get("candidate")
    if not prev and not cand:
        return []
    out = [f"  {r['model']}: serves {engine.get('distribution')} {engine.get('version')} "
           f"from {engine.get('venv')}"]  # fmt: skip
    if prev:
        what = f"{prev.get('distribution') or '?'} {prev.get('version') or prev.get('error')}"
        out.append(f"  {r['model']}: kept for rollback: {prev.get('venv')} ({what})")
    if cand and not cand.get("gone"):
        out.append(f"  {r['model']}: upgrade candidate {cand.get('version')} {cand.get('phase')} "
                   f"on port {cand.get('port')}")  # fmt: skip
    return out


def gpu_cell(held: dict[str, int] | None) -> str:
    """GPU-MEM: what the engine's processes hold, per GPU ("0:14.2G,1:14.1G"); "-" without
    a GPU or an engine."""
    if not held:
        return "-"
    return ",".join(f"{gpu}:{n / 1024**3:.1f}G" for gpu, n in sorted(held.items()))


def _last_failure(roots: list[Path], model: str) -> dict[str, Any] | None:
    for root in roots:
        try:
            data = json.loads((root / model / "last-failure.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None


def follow(
    args: argparse.Namespace, url: str, body: dict[str, Any], done_ok: set[str] | None
) -> tuple[int, dict[str, Any]]:
    """POST and follow the NDJSON state stream; print progress; exit code by the final state
    (in done_ok, or with done_ok None anything but failed) and that final state."""
    client = Client(base(args), args.model)
    tty = sys.stdout.isatty() and not args.json
    last: dict[str, Any] = {}

    def show(raw: bytes) -> None:
        nonlocal last
        if not raw.strip():
            return
        last = json.loads(raw)
        if tty:
            print(
                f"\r\033[K{args.model}: {last.get('status', last.get('state'))}", end="", flush=True
            )
        elif not args.json:
            print(f"{args.model}: {last.get('status', last.get('state'))}", flush=True)

    client.stream("POST", url, body, show, timeout=body.get("timeout", 900) + 30)
    if tty:
        print()
    if args.json:
        print(json.dumps(last, indent=2))
    if last.get("timeout"):
        print(f"{args.model}: timed out, still {last.get('state')}", file=sys.stderr)
        return exitcodes.FAILED, last
    state = last.get("state")
    if (state != State.FAILED) if done_ok is None else (state in done_ok):
        return exitcodes.OK, last
    diag = last.get("diagnosis") or {}
    if diag and not args.json:
        print(
            f"{args.model}: {diag.get('title')}: {diag.get('cause')}\n  fix: {diag.get('fix')}",
            file=sys.stderr,
        )
    return exitcodes.FAILED, last


def cmd_activate(args: argparse.Namespace, url: str = "/v1/activate") -> int:
    # A gpu_group peer that is active refuses the activation (409: exit 1, naming it);
    # --swap deactivates it first.
    swap = {"swap": True} if getattr(args, "swap", False) else {}
    if args.no_wait:
        st = Client(base(args), args.model).post_json(url, {"wait": False, **swap})
        print(json.dumps(st, indent=2) if args.json else f"{args.model}: {st.get('status')}")
        return exitcodes.OK
    code = follow(args, url, {"wait": True, "timeout": args.timeout, **swap}, {State.READY})[0]
    tell_gateway(args.model)
    return code


def tell_gateway(model: str) -> None:
    """A running gateway looks at MODEL now, not at its next refresh (ctl/gateway.py)."""
    from vllm_supervisor.ctl.gateway import running_gateway

    gateway = running_gateway(model)
    if gateway is not None:
        with contextlib.suppress(CtlError):
            gateway.post_json("/admin/state", {"model": model})


def cmd_restart(args: argparse.Namespace) -> int:
    return cmd_activate(args, "/v1/restart")


def cmd_reload(args: argparse.Namespace) -> int:
    # An invalid config answers 422, which the client turns into exit 78.
    code, last = follow(
        args, "/v1/reload", {"wait": not args.no_wait, "timeout": args.timeout}, None
    )
    detail = (last.get("last_reload") or {}).get("detail")
    if detail and not args.json:
        print(f"{args.model}: reload: {detail}")
    return code


def cmd_deactivate(args: argparse.Namespace) -> int:
    body = {
        "wait": not args.no_wait,
        "drain_timeout": args.drain_timeout,
        # A level-1 sleep copies the weights to host RAM: allow for it (runtime/sleep.py).
        "timeout": args.drain_timeout + 420.0,
        **({"stop": True} if getattr(args, "stop", False) else {}),
    }
    if args.no_wait:
        st = Client(base(args), args.model).post_json("/v1/deactivate", body)
        print(json.dumps(st, indent=2) if args.json else f"{args.model}: {st.get('status')}")
        return exitcodes.OK
    from vllm_supervisor.ctl.gateway import running_gateway

    gateway = None if getattr(args, "direct", False) else running_gateway(args.model)
    if gateway is not None:
        # Through the gateway: it stops routing to the model first, and refuses (409) while
        # it has requests for it in flight or waiting; --direct goes to the instance.
        gateway.timeout = body["timeout"] + 30
        opts: dict[str, Any] = {k: body[k] for k in ("drain_timeout", "stop") if k in body}
        st = gateway.post_json("/admin/deactivate", {"model": args.model, **opts})
        print(json.dumps(st, indent=2) if args.json else f"{args.model}: {st.get('state')}")
        return exitcodes.OK if st.get("state") in DEACTIVATED else exitcodes.FAILED
    return follow(args, "/v1/deactivate", body, set(DEACTIVATED))[0]


def cmd_logs(args: argparse.Namespace) -> int:
    url = f"/v1/logs?n={args.n}" + ("&follow=1" if args.follow else "")
    client = Client(base(args), args.model, timeout=None if args.follow else 10)  # type: ignore[arg-type]

    def write(line: bytes) -> None:
        sys.stdout.write(line.decode("utf-8", errors="replace"))
        sys.stdout.flush()

    try:
        client.stream("GET", url, None, write)
    except KeyboardInterrupt:
        return exitcodes.OK
    return exitcodes.OK


def cmd_metrics(args: argparse.Namespace) -> int:
    sys.stdout.write(Client(base(args), args.model).get_text("/v1/metrics"))
    return exitcodes.OK


def cmd_config(args: argparse.Namespace) -> int:
    import shlex

    cfg = Client(base(args), args.model).get_json("/v1/config")
    if args.json:
        print(json.dumps(cfg, indent=2))
        return exitcodes.OK
    print(f"{args.model} ({cfg.get('file')}:{cfg.get('line')})")
    print(f"  command  {shlex.join(cfg.get('argv', []))}")
    for k, v in sorted(cfg.get("env", {}).items()):
        print(f"  env      {k}={v}")
    return exitcodes.OK


def cmd_export(args: argparse.Namespace) -> int:
    from vllm_supervisor.config.problems import ConfigInvalid
    from vllm_supervisor.config.registry import default_config_dir, load_registry
    from vllm_supervisor.ctl.export import model_list, render_yaml, unreachable

    try:
        reg = load_registry(Path(args.config_dir) if args.config_dir else default_config_dir())
    except ConfigInvalid as exc:
        print(exc, file=sys.stderr)
        return exitcodes.CONFIG
    gateway = reg.gateway if getattr(args, "via_gateway", False) else None
    for warning in unreachable(reg.models, args.host, gateway):
        print(f"vllmctl: warning: {warning}", file=sys.stderr)
    entries = model_list(reg.models, args.host, gateway)
    print(
        json.dumps({"model_list": entries}, indent=2) if args.json else render_yaml(entries),
        end="" if not args.json else "\n",
    )
    return exitcodes.OK


def cmd_models(args: argparse.Namespace) -> int:
    """Configured and running model names, one a line (for shell completion)."""
    print("\n".join(sorted(set(configured(args)) | set(running_models(base(args))))))
    return exitcodes.OK
