"""Shared fixtures. The real-engine tier is not optional in CI: a missing engine there fails."""

from __future__ import annotations

import asyncio
import inspect
import os
from dataclasses import dataclass
from pathlib import Path

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
# the transition-table test reads what the recording modules' tests saw in this process.
XDIST_GROUPS = {
    "tests.runtime.test_supervisor": "transitions",
    "tests.runtime.test_supervisor_sleep": "transitions",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        group = XDIST_GROUPS.get(module.__name__ if module is not None else "")
        if item.get_closest_marker("systemd") is not None:
            group = "systemd"
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


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
