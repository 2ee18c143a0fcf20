"""Config problems: every one names file, line and key, so an operator can go straight to it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    key: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        tag = "" if self.severity == "error" else "warning: "
        key = f"{self.key}: " if self.key else ""
        return f"{where}: {tag}{key}{self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "key": self.key,
            "message": self.message,
            "severity": self.severity,
        }


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix for typos, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class ConfigInvalid(Exception):
    """Raised with every problem found, never just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class Located(Protocol):
    """Anything with a place in a file (a YAML node, config/yamltree.py)."""

    @property
    def file(self) -> str: ...
    @property
    def line(self) -> int: ...


@dataclass
class ProblemScope:
    """Problems found under one key prefix (`models.NAME`), each with its file and line."""

    file: str
    prefix: str
    problems: list[Problem]

    def err(self, node: Located, key: str, message: str, line: int = 0) -> None:
        self.problems.append(Problem(node.file, line or node.line, f"{self.prefix}.{key}", message))
