"""The flags an installed vLLM accepts, asked of its real parser once per venv + version.

Building the parser imports torch (6-9 s, docs/vllm-behaviour.md), so the answer is cached
under the cache dir keyed by venv path, distribution and version: an upgrade in place gets
a new key.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from vllm_supervisor.engine.detect import EngineInfo

PROBE = Path(__file__).with_name("in_venv_probe.py")


def cache_dir() -> Path:
    base = os.environ.get("VSUP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vllm-supervisor"
    )
    return Path(base) / "flags"


def _key(info: EngineInfo) -> str:
    raw = f"{info.venv.resolve()}|{info.distribution}|{info.version}|{info.dist_info.name}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def cached_flags(info: EngineInfo) -> dict[str, dict[str, bool]] | None:
    try:
        data = json.loads((cache_dir() / f"{_key(info)}.json").read_text())
    except (OSError, ValueError):
        return None
    flags = data.get("flags") if isinstance(data, dict) else None
    return flags if isinstance(flags, dict) else None


def probe_flags(info: EngineInfo, timeout: float = 120.0) -> dict[str, dict[str, bool]]:
    """Run the real parser in the engine venv and cache its flags; raises RuntimeError."""
    out = _run(info, [], timeout)
    flags = out.get("flags")
    if not isinstance(flags, dict):
        raise RuntimeError(f"flag probe in {info.venv} failed: {out.get('error', out)}")
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{_key(info)}.{os.getpid()}"
        tmp.write_text(json.dumps({"engine": info.label, "flags": flags}))
        tmp.replace(folder / f"{_key(info)}.json")
    except OSError:
        pass  # a read-only cache only costs the next check another probe
    return flags


def parse_argv(info: EngineInfo, args: list[str], timeout: float = 120.0) -> tuple[bool, str]:
    """Does the installed vLLM's own parser accept these server args? (ok, its error)"""
    return parse_many(info, [args], timeout)[0]


def parse_many(
    info: EngineInfo, argvs: list[list[str]], timeout: float = 120.0
) -> list[tuple[bool, str]]:
    """Judge several argv lists in one engine-venv process (one torch import, not one each)."""
    out = _run(info, ["--parse"], timeout, stdin=json.dumps(argvs))
    results = out.get("results")
    if not isinstance(results, list) or len(results) != len(argvs):
        raise RuntimeError(f"parser probe in {info.venv} failed: {out.get('error', out)}")
    return [(bool(r.get("ok")), str(r.get("error", ""))) for r in results]


def _run(
    info: EngineInfo, args: list[str], timeout: float, stdin: str | None = None
) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSUP_")}
    env["VLLM_NO_USAGE_STATS"] = "1"
    proc = subprocess.run(
        [str(info.python), str(PROBE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        input=stdin or "",
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"flag probe in {info.venv} exited {proc.returncode}: {tail}")
    data = json.loads(lines[-1])
    return data if isinstance(data, dict) else {}
