"""Engine log lines -> a named cause and what to do about it.

The supervisor applies the table (runtime/causes.py) to the engine's recent lines when a
start fails or the engine dies, and scans each batch of lines for the rows flagged
fatal-while-serving.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from vllm_supervisor.runtime.causes import TABLE, Cause


@dataclass(frozen=True)
class Finding:
    cause: Cause
    line: str
    fix: str
    why: str  # the cause text with the values from the log line filled in

    def as_dict(self) -> dict[str, str]:
        return {
            "id": self.cause.id,
            "title": self.cause.title,
            "cause": self.why,
            "fix": self.fix,
            "line": self.line,
        }


FATAL_WHILE_SERVING = re.compile(
    "|".join(f"(?:{c.pattern})" for c in TABLE if c.fatal_while_serving)
)


def diagnose(lines: Iterable[str]) -> Finding | None:
    """The best-ranked cause in the lines (the latest line wins a tie), or None."""
    best: tuple[tuple[int, int], Cause, re.Match[str], str] | None = None
    for i, line in enumerate(lines):
        for cause in TABLE:
            m = cause.regex.search(line)
            # Strictly greater: for one line, the first entry of equal rank in TABLE wins.
            if m and (best is None or (cause.rank, i) > best[0]):
                best = ((cause.rank, i), cause, m, line)
    if best is None:
        return None
    _, cause, match, line = best
    values = _Default({k: (v or "").strip() for k, v in match.groupdict().items()})
    return Finding(
        cause, line.strip()[:500], cause.fix.format_map(values), cause.cause.format_map(values)
    )


class _Default(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return f"<{key}>"


# Literal parts of FATAL_WHILE_SERVING: `in` checks gate the regex (a flood of ordinary lines
# must cost no regex scan). tests/runtime/test_diagnose.py checks that every alternative of every
# fatal row holds one of them.
FATAL_WORDS = (
    "EngineDeadError",
    "fatal error",
    "unexpectedly",
    "encountered an issue",
    "collective operation timeout",
)


def first_fatal_line(text: str) -> str | None:
    """The first fatal line in a batch of lines joined by newlines, or None."""
    if not any(w in text for w in FATAL_WORDS):
        return None
    m = FATAL_WHILE_SERVING.search(text)
    if m is None:
        return None
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.end())
    return text[start : end if end >= 0 else len(text)]
