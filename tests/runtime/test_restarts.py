"""Backoff and budget (pure: the clock is passed in)."""

from __future__ import annotations

from vllm_supervisor.runtime.restarts import RestartPolicy, RestartTracker


def test_backoff_grows_to_its_cap_and_a_stable_run_resets_it() -> None:
    t = RestartTracker(
        RestartPolicy(
            backoff_initial=2,
            backoff_factor=3,
            backoff_max=10,
            stable_after=300,
            budget=100,
            window=600,
        )
    )
    assert [t.next_delay(now=i, ran_for=1) for i in range(4)] == [2, 6, 10, 10]
    assert t.next_delay(now=5, ran_for=300) == 2  # it had served 300 s: start over
    assert t.used == 5


def test_budget_per_window() -> None:
    t = RestartTracker(RestartPolicy(backoff_initial=1, budget=2, window=60))
    assert t.next_delay(now=0, ran_for=0) is not None
    assert t.next_delay(now=10, ran_for=0) is not None
    assert t.next_delay(now=20, ran_for=0) is None  # two restarts in 60 s: spent
    assert t.next_delay(now=61, ran_for=0) is not None  # the first one left the window
    assert t.used == 2


def test_no_budget_means_no_restart() -> None:
    assert RestartTracker(RestartPolicy(budget=0)).next_delay(now=0, ran_for=0) is None
