"""Release numbers of vLLM as comparable tuples ("0.32.0+cpu" -> (0, 32, 0))."""

from __future__ import annotations

import re

Version = tuple[int, int, int]

_RE = re.compile(r"^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse(text: str) -> Version:
    """Leading major.minor.patch of a PEP 440 string; local and pre/post parts are ignored."""
    m = _RE.match(text)
    if not m:
        raise ValueError(f"not a version: {text!r}")
    return (int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0))


def show(v: Version) -> str:
    return ".".join(str(p) for p in v)
