"""Validate a config dir end to end and describe what each model would run.

Shared by `vllmctl check` and `vllm-supervisor check`: same rules, same messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.nodes_keys import Rank
from vllm_supervisor.config.problems import ConfigInvalid, Problem
from vllm_supervisor.config.registry import Registry, RegistryInvalid, load_registry
from vllm_supervisor.engine import flagcache
from vllm_supervisor.engine.detect import EngineInfo, EngineNotFound
from vllm_supervisor.gpu.estimate import Estimate
from vllm_supervisor.gpu.nvml import Gpus, open_gpus
from vllm_supervisor.preflight import nodes
from vllm_supervisor.preflight.gpu_fit import (
    engine_gpus,
    fit_problems,
    gpu_capabilities,
    model_estimate,
    sleep_ram_problems,
)
from vllm_supervisor.preflight.model_checks import (
    AccessCheck,
    access_problems,
    check_model,
    engine_for,
)
from vllm_supervisor.preflight.render import Command, render


@dataclass
class ModelReport:
    cfg: ModelConfig
    engine: EngineInfo | None = None
    command: Command | None = None
    problems: list[Problem] = field(default_factory=list)
    estimate: Estimate | str | None = None  # GPU memory, for a CUDA engine
    peers: tuple[str, ...] = ()  # the other members of its gpu_group
    rank: Rank | None = None  # this host's place in the model's multi-node group

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


@dataclass
class Report:
    config_dir: Path
    files: tuple[str, ...] = ()
    models: list[ModelReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # file-level (no model to pin on)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.all_problems())

    def all_problems(self) -> list[Problem]:
        return self.problems + [p for m in self.models for p in m.problems]


class UnknownModel(Exception):
    pass


def run_check(
    config_dir: Path,
    names: list[str],
    probe: bool = True,
    strict: bool = False,
    paths: AccessCheck | None = None,
    node_ports: nodes.Severity = "warning",
    venv: Path | None = None,
) -> Report:
    """Never raises for bad config: everything lands in the report. PATHS: also check that
    the service's user can use every path each model needs (access.py). VENV: the models
    asked for run from this venv instead (an upgrade's check: ctl/upgrade.py)."""
    report = Report(config_dir)
    try:
        reg: Registry = load_registry(config_dir)
        warnings = reg.warnings
    except RegistryInvalid as exc:
        # Go on with the models that parsed, so one run lists every problem; none of them
        # can start while the file-level errors stand (report.ok is false).
        report.problems = list(exc.problems)  # its warnings among them
        reg, warnings = exc.partial, ()
        asked = names
        names = [n for n in names if n in reg.models]
        if asked and not names:
            return report  # the model asked for did not parse: its problems are listed
    except ConfigInvalid as exc:
        report.problems = exc.problems
        return report
    report.files = reg.files
    unknown = [n for n in names if n not in reg.models]
    if unknown:
        raise UnknownModel(
            f"no model {', '.join(repr(n) for n in unknown)} in {config_dir}; "
            f"configured: {', '.join(sorted(reg.models)) or 'none'}"
        )
    chosen = set(names) or set(reg.models)
    engines: dict[Path, EngineInfo | EngineNotFound] = {}
    gpus: Gpus | None = None  # NVML, opened for the first CUDA engine
    for w in warnings:
        owner = _owner(w, chosen)
        if owner is None:
            report.problems.append(w)
    for name in sorted(chosen):
        cfg = reg.models[name]
        if venv is not None:
            cfg = replace(cfg, venv=venv)
        mr = ModelReport(cfg, problems=[w for w in warnings if _owner(w, {name}) == name])
        mr.peers = tuple(
            sorted(
                n
                for n, other in reg.models.items()
                if n != name and cfg.gpu_group is not None and other.gpu_group == cfg.gpu_group
            )
        )
        engine = engine_for(cfg.venv, engines)
        known = None
        if isinstance(engine, EngineInfo) and cfg.extra_args:
            known = flagcache.cached_flags(engine)
            if known is None and probe:
                try:
                    known = flagcache.probe_flags(engine)
                except (RuntimeError, OSError) as exc:
                    report.notes.append(f"{name}: could not list vLLM's flags ({exc})")
        capabilities: dict[int, tuple[int, int]] = {}
        if isinstance(engine, EngineInfo) and engine_gpus(cfg, engine):
            gpus = gpus or open_gpus()
            capabilities = gpu_capabilities(cfg, engine, gpus)
        info, found = check_model(cfg, engines, known, capabilities=capabilities)
        mr.engine = info
        mr.problems += found
        if paths is not None:
            denied, checked = access_problems(cfg, reg.files, paths, info, reported=found)
            mr.problems += denied
            if not checked and paths.who is not None:
                report.notes.append(
                    f"{name}: paths not checked as user {paths.who.name} "
                    "(the unit's User=): run vllmctl check as root for that"
                )
        if info is not None and engine_gpus(cfg, info):
            gpus = gpus or open_gpus()
            mr.estimate = model_estimate(cfg)
            mr.problems += fit_problems(cfg, info, gpus, mr.estimate)
            mr.problems += sleep_ram_problems(cfg, mr.estimate)
        if cfg.nodes is not None:
            mr.rank, found = nodes.locate(cfg, node_ports)
            mr.problems += found
        if info is not None and mr.ok:
            mr.command = render(cfg, info, read_secret=None, rank=mr.rank)
        report.models.append(mr)
    if strict:
        _strict(report)
    return report


def server_args(cmd: Command) -> list[str]:
    """The args vLLM's parser sees: it knows `--model`, while `vllm serve MODEL` passes the
    model as a positional of the subcommand."""
    if cmd.parser_args:
        return list(cmd.parser_args)
    argv = list(cmd.argv)
    return ["--model", argv[2], *argv[3:]] if argv[1:2] == ["serve"] else argv[3:]


def _strict(report: Report) -> None:
    """Let each installed vLLM's own parser judge the rendered commands, one process per venv."""
    by_venv: dict[Path, list[ModelReport]] = {}
    for mr in report.models:
        if mr.command is not None and mr.engine is not None:
            by_venv.setdefault(mr.engine.venv, []).append(mr)
    for group in by_venv.values():
        info = group[0].engine
        assert info is not None
        try:
            verdicts = flagcache.parse_many(
                info, [server_args(mr.command) for mr in group if mr.command is not None]
            )
        except (RuntimeError, OSError) as exc:
            report.notes.append(f"strict check skipped for {info.venv}: {exc}")
            continue
        for mr, (ok, err) in zip(group, verdicts, strict=True):
            if not ok:
                mr.problems.append(
                    Problem(
                        mr.cfg.file,
                        mr.cfg.line,
                        f"models.{mr.cfg.name}",
                        f"vLLM {info.version}'s parser rejects the command: {err}",
                    )
                )


def _owner(p: Problem, names: set[str]) -> str | None:
    for n in names:
        if p.key == f"models.{n}" or p.key.startswith(f"models.{n}."):
            return n
    return None


def describe_env(cmd: Command) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(cmd.redacted_env().items())]
