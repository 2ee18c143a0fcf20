"""Backoff and budget (pure: the clock is passed in)."""

from __future__ import annotations

from vllm_supervisor.config.settings import RestartPolicy
from vllm_supervisor.runtime.restarts import RestartTracker

POLICY = RestartPolicy(
    backoff_initial=2, backoff_factor=3, backoff_max=10, stable_after=300, budget=100, window=600
)


def test_start_failures_back_off_to_the_cap() -> None:
    t = RestartTracker(POLICY)
    # ran_for None: the engine never got READY.
    assert [t.next_delay(now=i, ran_for=None) for i in range(4)] == [2, 6, 10, 10]
    assert t.used == 4


def test_the_first_failure_after_serving_restarts_at_once_then_backoff_grows() -> None:
    t = RestartTracker(POLICY)
    assert t.next_delay(now=0, ran_for=1000) == 0  # served, then died: no fixed delay
    # It comes back and dies again soon (shorter than stable_after): consecutive failures.
    assert [t.next_delay(now=i, ran_for=5) for i in (1, 2, 3)] == [2, 6, 10]
    assert t.next_delay(now=4, ran_for=None) == 10  # a failed start continues the series
    assert t.next_delay(now=5, ran_for=300) == 0  # served stable_after: the series starts over
    assert t.used == 6


def test_budget_per_window() -> None:
    t = RestartTracker(RestartPolicy(backoff_initial=1, budget=2, window=60))
    assert t.next_delay(now=0, ran_for=None) is not None
    assert t.next_delay(now=10, ran_for=None) is not None
    assert t.next_delay(now=20, ran_for=1000) is None  # two restarts in 60 s: spent
    assert t.next_delay(now=61, ran_for=None) is not None  # the first one left the window
    assert t.used == 2


def test_no_budget_means_no_restart() -> None:
    assert RestartTracker(RestartPolicy(budget=0)).next_delay(now=0, ran_for=1000) is None
