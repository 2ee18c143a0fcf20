"""Engine log lines -> load progress (phase, facts such as KV cache size) and readiness hints.

Wording from vLLM 0.11/0.32/0.33 (docs/vllm-behaviour.md). Only lines holding one of a few
keywords reach a regex: the pump calls this for every line, floods included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# (phase shown in STATUS=, pattern). Order is the order vLLM prints them.
PHASES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (p, re.compile(r))
    for p, r in (
        ("loading weights", r"Starting to load model"),
        ("weights loaded", r"Loading weights took"),
        ("model loaded", r"Model loading took (?P<model_gib>[\d.]+) GiB"),
        # Not a bare "torch.compile": `enforce_eager` logs "disabling torch.compile".
        ("compiling", r"Compiling a graph|torch\.compile takes|Dynamo bytecode transform time"),
        ("profiling memory", r"Available KV cache memory: (?P<kv_gib>[\d.]+) GiB"),
        ("allocating KV cache", r"KV cache size: (?P<kv_tokens>[\d,]+) tokens"),
        ("capturing CUDA graphs", r"Capturing CUDA graph"),
        ("engine initialised", r"init engine \(profile, create kv cache, warmup model\) took"),
        ("starting HTTP server", r"Starting vLLM (?:API )?server"),
        ("HTTP server up", r"Application startup complete"),
    )
)
_KEYWORDS = (
    "load",
    "Load",
    "compile",
    "Compil",
    "Dynamo",
    "KV cache",
    "CUDA graph",
    "init engine",
    "Starting vLLM",
    "startup complete",
    "version",
)
_CONCURRENCY = re.compile(
    r"Maximum concurrency for (?P<len>[\d,]+) tokens per request: "
    r"(?P<x>[\d.]+)x"
)
_VERSION = re.compile(r"vLLM (?:API )?server version (?P<v>\S+)|vLLM API server version (\S+)")
# These mean "the port is about to answer": probe at once instead of waiting for the poll.
READY_HINTS = ("starting HTTP server", "HTTP server up")


@dataclass
class Progress:
    phase: str = "spawned"
    facts: dict[str, str] = field(default_factory=dict)
    changes: int = 0  # bumps on every recognised line: the stall timer watches it
    _index: int = -1

    def download(self, size: int, rate: float) -> str | None:
        """The model's files grew in the download cache (runtime/watchers.downloads): that is
        progress, though vLLM logs nothing until the download ends (issue 20). Shown as the
        phase until the weights are loaded; returns the phase shown, or None once past it."""
        self.facts["download_bytes"] = str(size)
        self.facts["download_rate"] = f"{rate:.0f}"
        self.changes += 1
        if self._index > 0:  # the weights are loaded: a late file (a tokenizer) is no phase
            return None
        self.phase = f"downloading weights ({_human(size)}, {_human(rate)}/s)"
        return self.phase

    def feed_batch(self, lines: list[str], text: str) -> list[str]:
        """New phases started by these lines; one regex scan when none is relevant."""
        if not any(k in text for k in _KEYWORDS):  # substring checks: far faster than a regex
            return []
        return [p for ln in lines if (p := self.feed(ln)) is not None]

    def feed(self, line: str) -> str | None:
        """The new phase when this line starts one, else None. Facts are kept either way."""
        if not any(k in line for k in _KEYWORDS):
            return None
        m = _CONCURRENCY.search(line)
        if m:
            self.facts["max_concurrency"] = m.group("x")
            self.facts["concurrency_len"] = m.group("len").replace(",", "")
        v = _VERSION.search(line)
        if v:
            self.facts["engine_version"] = v.group("v") or v.group(2)
            self.changes += 1
        for index, (phase, rx) in enumerate(PHASES):
            m = rx.search(line)
            if m:
                for k, val in m.groupdict().items():
                    if val:
                        self.facts[k] = val.replace(",", "")
                self.changes += 1
                # Phases only move forward: a late "compiling" line (a graph compiled during
                # warm-up) must not make STATUS= go back.
                if index > self._index:
                    self._index, self.phase = index, phase
                    return phase
                return None
        return None


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
