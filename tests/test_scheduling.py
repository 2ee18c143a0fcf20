"""The test run's own scheduling (tests/conftest.py): every module of a tier that must keep
its tests together is found by its mark, so a new engine or systemd module cannot have its
tests (and its module fixtures) spread over workers unnoticed."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.conftest import ROOT, group_of


def test_every_tier_module_is_grouped_by_its_mark() -> None:
    seen = 0
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        rel = path.relative_to(ROOT).as_posix()
        module = importlib.import_module(rel.removesuffix(".py").replace("/", "."))
        marks = getattr(module, "pytestmark", [])
        marks = marks if isinstance(marks, list) else [marks]
        tiers = {m.name for m in marks if isinstance(m, pytest.MarkDecorator)} & {
            "engine", "systemd"
        }  # fmt: skip
        if tiers:
            seen += 1
            tier = tiers.pop()
            assert group_of(rel) == ("systemd" if tier == "systemd" else rel), rel
    assert seen >= 12  # the engine modules and the systemd one, at least
    assert group_of("tests/runtime/test_supervisor_sleep.py") == "transitions"
    assert group_of("tests/gateway/test_router.py") is None
    assert Path(ROOT / "tests/e2e/test_systemd_unit.py").exists()
