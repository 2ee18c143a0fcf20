"""Restart bookkeeping under the configured RestartPolicy (config/settings.py): exponential
backoff with a cap, reset after a stable run, and a budget of restarts per window. Pure: the
caller passes the clock."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from vllm_supervisor.config.settings import RestartPolicy
from vllm_supervisor.runtime.diagnose import Finding


@dataclass
class RestartTracker:
    policy: RestartPolicy
    attempts: int = 0  # consecutive failures since the last stable run
    delayed: int = 0  # of those, restarts that waited out a backoff
    history: deque[float] = field(default_factory=deque)

    def next_delay(self, now: float, ran_for: float | None) -> float | None:
        """Seconds to wait before the next start, or None when the budget is spent. RAN_FOR:
        how long the engine had served, None when it never got READY.

        The first failure after a READY run restarts at once: a fixed delay would only be
        downtime (the supervisor still waits for the old engine's GPU memory first). The
        backoff grows over consecutive failures: starts that fail, or runs shorter than
        restart.stable_after."""
        if ran_for is not None and ran_for >= self.policy.stable_after:
            self.attempts = self.delayed = 0
        while self.history and now - self.history[0] > self.policy.window:
            self.history.popleft()
        if len(self.history) >= self.policy.budget:
            return None
        self.history.append(now)
        first_after_serving = ran_for is not None and self.attempts == 0
        self.attempts += 1
        if first_after_serving:
            return 0.0
        delay = min(
            self.policy.backoff_max,
            self.policy.backoff_initial * self.policy.backoff_factor**self.delayed,
        )
        self.delayed += 1
        return delay

    @property
    def used(self) -> int:
        return len(self.history)


@dataclass(frozen=True)
class Verdict:
    """What a failure of one engine generation means."""

    delay: float | None  # seconds until the next start; None: no restart (FAILED)
    permanent: bool  # restarting cannot help: the config or the host must change

    @property
    def why_final(self) -> str:
        return "restarting cannot fix this" if self.permanent else "restart budget spent"


def judge(
    tracker: RestartTracker, finding: Finding | None, ready_at: float | None, now: float
) -> Verdict:
    """A start that never got READY and failed for a cause restarting cannot fix ends at
    once (no restart storm); any other failure takes the backoff, within the budget."""
    permanent = ready_at is None and finding is not None and not finding.cause.retry
    ran = now - ready_at if ready_at is not None else None
    return Verdict(None if permanent else tracker.next_delay(now, ran), permanent)
