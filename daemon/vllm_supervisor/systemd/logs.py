"""Logging for journald: one event per line on stdout, sd-daemon(3) `<N>` priority prefixes.

Supervisor events go through structlog as `<N>event key=value ...`; tracebacks are plain
text without local variables (structlog's dict tracebacks default to show_locals=True, which
would put API keys in the journal: docs/systemd-behaviour.md). Engine lines are
re-emitted as `<N>[model] line`, the priority mapped from vLLM's level.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

# sd-daemon(3): <3> err, <4> warning, <6> info, <7> debug.
PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
_VLLM_LEVEL = re.compile(r"^(?:\(\w+ pid=\d+\) )?(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
_UVICORN = re.compile(r"^(INFO|WARNING|ERROR|CRITICAL):\s")
_ERRORISH = re.compile(r"^Traceback \(most recent call last\)|^[\w.]+(?:Error|Exception)\b")
# engine_priority answers anything but 6 only for a line holding one of these words (see the
# three patterns above; tests/systemd/test_logs.py checks it): a batch without any is all info.
NOT_INFO = ("WARNING", "ERROR", "CRITICAL", "DEBUG", "Traceback", "Error", "Exception")


def engine_priority(line: str) -> int:
    m = _VLLM_LEVEL.match(line) or _UVICORN.match(line)
    if m:
        return PRIORITY[m.group(1).lower()]
    return 3 if _ERRORISH.match(line) else 6


class EngineLineWriter:
    """Writes batches of engine lines to stdout for journald; one write and one flush per
    batch. The flush matters: stdout under systemd is a socket, not a tty, so Python buffers
    it by blocks, and a line held there reached `journalctl -f` only at the next supervisor
    event (structlog's print flushes), minutes later on a model that just serves."""

    def __init__(self, model: str, out: TextIO | None = None) -> None:
        self.prefix = f"[{model}] "
        self.out = out or sys.stdout

    def __call__(self, lines: list[str], text: str) -> None:
        # The common case, decided at C speed: no line can be above info, so the batch goes
        # out in one write (log_pump.py bench). Counting " INFO " instead could be fooled by
        # a logged prompt holding it twice, and an ERROR line beside it would go out as info.
        if not any(w in text for w in NOT_INFO):
            head = "<6>" + self.prefix
            self.out.write(head + ("\n" + head).join(lines) + "\n")
        else:
            self.out.write("".join(f"<{engine_priority(ln)}>{self.prefix}{ln}\n" for ln in lines))
        self.out.flush()


def _render(_logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
    level = event.pop("level", method)
    msg = str(event.pop("event", ""))
    exc = event.pop("exception", None)
    parts = [f"<{PRIORITY.get(level, 6)}>{msg}"]
    for k, v in event.items():
        text = str(v)
        parts.append(f"{k}={text!r}" if (" " in text or not text) else f"{k}={text}")
    line = " ".join(parts)
    if exc:
        # One journal entry per line would split the traceback; indent it under the event.
        line += "\n" + "\n".join(
            f"<{PRIORITY.get(level, 6)}>  {ln}" for ln in str(exc).splitlines()
        )
    return line


def setup(out: TextIO | None = None) -> None:
    if out is None and isinstance(sys.stdout, io.TextIOWrapper):
        # systemd.exec(5): services get $LANG from locale.conf(5). On a host whose locale is not
        # UTF-8, stdout's encoding is narrow and strict, and one prompt vLLM logs in another
        # script raised in the log pump and ended the supervisor. Escape what cannot be said.
        sys.stdout.reconfigure(errors="backslashreplace")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,  # traceback.format_exception: no locals
            _render,
        ],
        logger_factory=structlog.PrintLoggerFactory(out or sys.stdout),
        cache_logger_on_first_use=False,
    )


def get() -> Any:
    return structlog.get_logger()
