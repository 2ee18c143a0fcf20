"""Restart bookkeeping under the configured RestartPolicy (config/settings.py): exponential
backoff with a cap, reset after a stable run, and a budget of restarts per window. Pure: the
caller passes the clock."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from vllm_supervisor.config.settings import RestartPolicy


@dataclass
class RestartTracker:
    policy: RestartPolicy
    attempts: int = 0  # consecutive failures since the last stable run
    history: deque[float] = field(default_factory=deque)

    def next_delay(self, now: float, ran_for: float) -> float | None:
        """Seconds to wait before the next start, or None when the budget is spent."""
        if ran_for >= self.policy.stable_after:
            self.attempts = 0
        while self.history and now - self.history[0] > self.policy.window:
            self.history.popleft()
        if len(self.history) >= self.policy.budget:
            return None
        self.history.append(now)
        delay = min(self.policy.backoff_max,
                    self.policy.backoff_initial * self.policy.backoff_factor ** self.attempts)
        self.attempts += 1
        return delay

    @property
    def used(self) -> int:
        return len(self.history)
