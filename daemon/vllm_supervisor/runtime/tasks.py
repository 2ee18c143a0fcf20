"""The asyncio tasks of the current engine generation (its watchers), cancelled together when
the generation ends, so no watcher of a gone engine can post into the next one's life."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class GenerationTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._drain: asyncio.Task[None] | None = None

    def start(self, coro: Coroutine[Any, Any, None], drain: bool = False) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if drain:
            self._drain = task

    def cancel_drain(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self._drain = None
