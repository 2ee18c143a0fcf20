"""The engine's output as the supervisor keeps it: the recent lines (for `vllmctl logs` and
diagnosis), the journal (each line once), and the followers of `vllmctl logs -f`.

Lines arrive in batches (process.pump); the work per batch is a deque extend, one journal
write and a queue offer per follower, so a log flood stays cheap (scripts/bench/log_pump.py).
"""

from __future__ import annotations

from collections import deque

from vllm_supervisor.runtime.broadcast import Broadcast
from vllm_supervisor.runtime.effects import LinesSink

RECENT_LINES = 2000  # engine lines kept for `logs` and diagnosis


class EngineLog:
    def __init__(self, journal: LinesSink, keep: int = RECENT_LINES) -> None:
        self.recent: deque[str] = deque(maxlen=keep)
        self.followers: Broadcast[list[str]] = Broadcast()
        self.seen = 0  # lines taken so far: a generation's lines start at its mark
        self._journal = journal

    def take(self, lines: list[str], text: str) -> None:
        self.recent.extend(lines)
        self.seen += len(lines)
        self._journal(lines, text)
        if self.followers:
            self.followers.offer(lines)

    def since(self, mark: int) -> list[str]:
        """The lines taken after MARK (a former `seen`) that are still kept."""
        count = min(self.seen - mark, len(self.recent))
        return list(self.recent)[len(self.recent) - count :] if count > 0 else []
