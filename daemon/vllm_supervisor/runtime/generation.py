"""One engine generation: everything about one start of the engine, created by the
supervisor at each start and dropped when the next one begins.

Watchers get the generation they belong to, read it, and post events tagged with its number;
the supervisor alone writes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from vllm_supervisor.preflight.render import Command
from vllm_supervisor.runtime.diagnose import first_fatal_line
from vllm_supervisor.runtime.effects import EngineHandle
from vllm_supervisor.runtime.progress import READY_HINTS, Progress


class Wakeup:
    """Wakes whoever waits, once per fire(). Each waiter waits on its own future, so no
    waiter ever has to reset shared state (unlike an asyncio.Event)."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def fire(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def wait(self, timeout: float) -> None:
        """Return at the next fire(), or after TIMEOUT seconds."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.discard(fut)


@dataclass
class Generation:
    number: int
    spawned_at: float  # clock() at spawn
    first_line: int  # count of engine lines seen before this start: its log begins there
    command: Command | None = None  # what this engine was started with
    engine: EngineHandle | None = None  # None before spawn and once stopped or killed
    progress: Progress = field(default_factory=Progress)
    ready_at: float | None = None
    # Fired when the engine's log says the HTTP server is coming up: probe /health at once
    # instead of waiting out the poll interval.
    server_starting: Wakeup = field(default_factory=Wakeup)
    fatal_reported: bool = False  # a fatal log line was reported already
    # A multi-node rank's start that waits for its group before it spawns (runtime/nodelink.py).
    held: bool = False
    # The port this engine listens on when it is not the configured one: an upgrade's
    # candidate, promoted (runtime/candidate.py). A later start uses the configured port.
    port: int | None = None

    def scan(self, lines: list[str], text: str, loading: bool) -> tuple[bool, str | None]:
        """Called by the supervisor with each batch of this engine's lines: feeds the load
        progress while LOADING, fires `server_starting` on a readiness hint. Returns whether
        a load phase started, and the first fatal line (once per generation)."""
        phases = self.progress.feed_batch(lines, text) if loading else []
        if any(p in READY_HINTS for p in phases):
            self.server_starting.fire()
        fatal = None if self.fatal_reported else first_fatal_line(text)
        self.fatal_reported = self.fatal_reported or fatal is not None
        return bool(phases), fatal
