"""Shared fixtures. The real-engine tier is not optional in CI: a missing engine there fails."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class EngineEnv:
    venv: Path
    model: Path


def _missing(why: str) -> None:
    if IN_CI:
        pytest.fail(f"real-engine tier cannot run in CI: {why} (run scripts/test)")
    pytest.skip(f"{why}; scripts/test sets up the engine venv and tiny model")


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder other users may enter: pytest's own tmp root is 0700, which would block a
    test that checks paths as another user before the path it means to test."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture(scope="session")
def engine_env() -> EngineEnv:
    venv = os.environ.get("VSUP_TEST_ENGINE_VENV")
    model = os.environ.get("VSUP_TEST_MODEL")
    if not venv or not model:
        _missing("VSUP_TEST_ENGINE_VENV / VSUP_TEST_MODEL are not set")
    assert venv and model
    if not (Path(venv) / "bin" / "python").exists():
        _missing(f"no engine venv at {venv}")
    if not (Path(model) / "config.json").exists():
        _missing(f"no tiny model at {model}")
    return EngineEnv(Path(venv), Path(model))


# Tests that share state keep to one pytest-xdist worker (scripts/test runs the tiers side by
# side): the real-systemd tier boots one container per module and drives it test after test;
# a real-engine module shares its engines between its tests (module fixtures); the
# transition-table test reads what the recording modules' tests saw in its process.
# pytest-xdist's own grouping (--dist loadgroup, the xdist_group mark) does nothing under
# pytest 9: it renames item._nodeid, which pytest 9 no longer reads. So the scheduler is
# ours: LoadScopeScheduling, whose scope is the group of a test's file. The suite is bound by
# the CPU (a vLLM start costs ~28 s of it, three imports of ~7 s): the engine modules are
# groups of their own, so that the workers stay busy to the end rather than one tier
# finishing alone on one core.
ROOT = Path(__file__).resolve().parents[1]
GROUPS = {
    "tests/runtime/test_supervisor.py": "transitions",
    "tests/runtime/test_supervisor_sleep.py": "transitions",
    "tests/runtime/test_supervisor_upgrade.py": "transitions",
}
_TIER = re.compile(r"^pytestmark = pytest\.mark\.(engine|systemd)\b", re.M)


@functools.cache
def group_of(path: str) -> str | None:
    """The worker group of a test file: GROUPS', the systemd tier's, a real-engine module's
    own (the file), or none (its tests go wherever a worker is free)."""
    if path in GROUPS:
        return GROUPS[path]
    try:
        found = _TIER.search((ROOT / path).read_text())
    except OSError:
        return None
    if found is None:
        return None
    return "systemd" if found.group(1) == "systemd" else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class Grouped(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid.split("::", 1)[0]) or nodeid

    return Grouped(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests on a fresh event loop (no pytest-asyncio needed), bounded."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {k: pyfuncitem.funcargs[k] for k in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), timeout=120))
    return True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped `engine` or `systemd` test is a failure: the real tiers must have run."""
    if not IN_CI:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    for tier in ("engine", "systemd"):
        skips = [r for r in skipped if tier in getattr(r, "keywords", {})]
        if skips:
            print(f"\nCI: {len(skips)} {tier}-tier test(s) were skipped; that is a failure")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
