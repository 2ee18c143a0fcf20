"""Which raw flags and env vars a model may not use, and which moved between vLLM releases.

Facts from docs/vllm-behaviour.md (each version's real parser): an unknown flag
makes vLLM exit 2 only after ~13 s of imports, so catching these at check time saves a
failed start per typo.
"""

from __future__ import annotations

from dataclasses import dataclass

from vllm_supervisor.engine import options as engine_options
from vllm_supervisor.engine.versions import Version

# The supervisor decides these: they must match the admin socket, health probes and the
# LiteLLM export, and the key must never be in argv (/proc/PID/cmdline is world-readable).
OWNED_FLAGS: dict[str, str] = {
    "--host": "set `host:` on the model",
    "--port": "set `port:` on the model",
    "--api-key": "set `api_key_file:` (the key goes to the engine's environment, not argv)",
    "--served-model-name": "set `served_model_name:` on the model",
    "--model": "set `model:` on the model",
    "--config": "put engine options under `engine:`; a vLLM config file could override "
    "host, port and served names behind the supervisor's back",
    "--uds": "the supervisor probes the engine over TCP on host:port",
    "--headless": "the supervisor needs the API server it probes",
}

# Sampling parameters are per request (or in the model's generation_config.json); as server
# flags vLLM rejects them with `unrecognized arguments`.
REQUEST_TIME = frozenset(
    {
        "--temperature",
        "--top-p",
        "--top-k",
        "--min-p",
        "--max-tokens",
        "--best-of",
        "--n",
        "--presence-penalty",
        "--frequency-penalty",
        "--repetition-penalty",
        "--stop",
        "--logprobs",
        "--stream",
    }
)


@dataclass(frozen=True)
class Moved:
    """A flag (or flag prefix ending in '-') that some releases reject."""

    flag: str
    rejected_from: Version
    rejected_until: Version | None  # first release that accepts it again
    hint: str
    warn_from: Version | None = None  # deprecated (still accepted) from here


MOVED: tuple[Moved, ...] = (
    Moved(
        "--disable-log-requests",
        (0, 20, 0),
        (0, 33, 0),
        "requests are not logged by default; remove it (enable_log_requests turns logging on)",
        warn_from=(0, 11, 0),
    ),
    Moved("--task", (0, 20, 0), None, "use --runner / --convert"),
    Moved("--swap-space", (0, 20, 0), None, "removed from vLLM; remove it"),
    Moved("--guided-decoding-", (0, 20, 0), None, "use engine.structured_outputs_config"),
)

# Env vars that vLLM dropped: it only logs "Unknown vLLM environment variable", so an
# operator would believe the setting took effect.
GONE_ENV: dict[str, tuple[Version, str]] = {
    "VLLM_USE_V1": ((0, 20, 0), "vLLM >= 0.20 has only the V1 engine; remove it"),
    "VLLM_ATTENTION_BACKEND": ((0, 20, 0), "use engine.attention_backend"),
}

# Env the supervisor sets or strips itself.
OWNED_ENV: dict[str, str] = {
    "VLLM_API_KEY": "use api_key_file:",
    "CUDA_VISIBLE_DEVICES": "use gpus:",
    "HF_HUB_OFFLINE": "use offline:",
    "VLLM_SERVER_DEV_MODE": "set by deactivate: sleep, on loopback engines only (it opens "
    "unauthenticated dev endpoints)",
    "NOTIFY_SOCKET": "the supervisor talks to systemd; the engine must not",
    "WATCHDOG_USEC": "the supervisor owns the systemd watchdog",
    "WATCHDOG_PID": "the supervisor owns the systemd watchdog",
}


def flag_of(token: str) -> str | None:
    """'--max-model-len=4' -> '--max-model-len'; values and positionals -> None."""
    if not token.startswith("--") or token == "--":
        return None
    return token.split("=", 1)[0]


def extra_arg_problem(flag: str) -> str | None:
    """Why a raw flag in extra_args is refused regardless of vLLM version, or None."""
    base = "--" + flag[5:] if flag.startswith("--no-") else flag
    if base in OWNED_FLAGS:
        return f"{base} is owned by the supervisor: {OWNED_FLAGS[base]}"
    if base in REQUEST_TIME:
        return (
            f"{base} is a request-time parameter, not a server flag: set it per request "
            "or in the model's generation_config.json"
        )
    opt = engine_options.BY_FLAG.get(base)
    if opt is not None:
        return f"{base} has a typed key: set engine.{opt.name} instead"
    return None


def moved_problem(flag: str, version: Version) -> tuple[str, str] | None:
    """('error'|'warning', message) when this vLLM version rejects or deprecates the flag."""
    for m in MOVED:
        hit = flag.startswith(m.flag) if m.flag.endswith("-") else flag == m.flag
        if not hit:
            continue
        until_ok = m.rejected_until is None or version < m.rejected_until
        if m.rejected_from <= version and until_ok:
            return "error", f"{flag} is rejected by vLLM {_v(version)}: {m.hint}"
        if m.warn_from is not None and m.warn_from <= version:
            return "warning", f"{flag} is deprecated in vLLM {_v(version)}: {m.hint}"
    return None


def _v(version: Version) -> str:
    return ".".join(str(p) for p in version)
