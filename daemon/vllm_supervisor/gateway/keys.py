"""Bearer keys from a file: one key a line, an optional label after it (`KEY label words`),
`#` comments. A key is compared in constant time against every key (hmac.compare_digest),
so neither a match nor its position shows in the timing; only the label is ever logged."""

from __future__ import annotations

import hmac
from pathlib import Path

from vllm_supervisor.host import files


class Keys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: list[tuple[bytes, str]] = []
        self.load()

    def load(self) -> int:
        """(Re-)read the file (SIGHUP); the number of keys. An unreadable file keeps none."""
        keys = []
        try:
            text = files.read_text(self.path, files.KEYS_CAP)
        except (OSError, ValueError):  # absent, unreadable, a FIFO, too large, not UTF-8
            text = ""
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, label = line.partition(" ")
            keys.append((key.encode(), label.strip() or f"line {n}"))
        self._keys = keys
        return len(keys)

    def label(self, authorization: str | None) -> str | None:
        """The label of the key in an `Authorization: Bearer KEY` header, or None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        given = authorization[len("Bearer ") :].strip().encode()
        found = None
        for key, label in self._keys:  # no early exit: every key costs the same
            if hmac.compare_digest(given, key):
                found = label
        return found
