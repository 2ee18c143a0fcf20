"""The asyncio tasks of the current engine generation (its watchers), cancelled together when
the generation ends, so no watcher of a gone engine can post into the next one's life. A task
may have a name, to be cancelled alone (the drain an activation calls off, the liveness
checks a sleeping engine must not get)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

DRAIN, LIVENESS, SLEEP = "drain", "liveness", "sleep"  # the tasks cancelled on their own


class GenerationTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._named: dict[str, asyncio.Task[None]] = {}

    def start(self, coro: Coroutine[Any, Any, None], name: str | None = None) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if name is not None:
            self._named[name] = task

    def running(self, name: str) -> bool:
        task = self._named.get(name)
        return task is not None and not task.done()

    def cancel(self, name: str) -> None:
        task = self._named.pop(name, None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self._named.clear()
