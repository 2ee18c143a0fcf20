"""An upgrade's golden check, judged: the serving engine's answers beside the candidate's
(runtime/golden.py asks both). An error, an invalid JSON answer or a broken tool call of the
candidate fails the upgrade; a different text is a warning, since releases change outputs
(kernels, sampling, chat templates) without being wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHECKS = ("chat", "json_schema", "tool_call", "tokenize")
VALUE = {"chat": "text", "json_schema": "text", "tool_call": "arguments", "tokenize": "count"}


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.failures)


def short(value: object, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def compare(serving: dict[str, Any], candidate: dict[str, Any]) -> Report:
    out = Report()
    if not candidate:
        out.failures.append("the candidate gave no answers")
        out.lines.append("FAILED: the candidate gave no answers")
        return out
    for check in CHECKS:
        old, new = serving.get(check), candidate.get(check)
        if new is None and old is None:
            out.lines.append(f"{check}: skipped (no tool-call parser)" if check == "tool_call"
                             else f"{check}: not asked")  # fmt: skip
            continue
        if not isinstance(new, dict):
            out.failures.append(f"{check}: no answer")
            out.lines.append(f"{check}: FAILED: the candidate did not answer")
            continue
        if new.get("error") and isinstance(old, dict) and old.get("error"):
            # The serving engine fails it too: the model's (or the config's) doing, not the
            # new vLLM's; the upgrade makes nothing worse.
            out.lines.append(f"{check}: fails on both engines (warning): {new['error']}")
            continue
        if new.get("error"):
            out.failures.append(f"{check}: {new['error']}")
            out.lines.append(f"{check}: FAILED: {new['error']}")
            continue
        key = VALUE[check]
        before = old.get(key) if isinstance(old, dict) else None
        after = new.get(key)
        if isinstance(old, dict) and old.get("error"):
            out.lines.append(f"{check}: ok (the serving engine failed it: {old['error']})")
        elif before == after:
            out.lines.append(f"{check}: same ({short(after)})")
        else:
            out.lines.append(f"{check}: differs (warning): {short(before)} -> {short(after)}")
    return out
