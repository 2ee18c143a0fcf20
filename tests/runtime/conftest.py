"""The transition-table test runs after every test that records transitions, wherever pytest
collected it (tests/runtime/test_supervisor.py)."""

from __future__ import annotations

import pytest

LAST = "test_every_table_edge_is_taken_by_these_tests"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.name == LAST)  # stable: the rest keep their order
