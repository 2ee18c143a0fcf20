"""The router's admin calls to the instances, each run as a task that posts its outcome back
to the router's inbox (router.py decides what it means), and the router's clock tick."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from vllm_supervisor.gateway.slots import Busy, InstancePort, Message, Outcome, Progress, Tick


class Calls:
    def __init__(
        self,
        instances: InstancePort,
        inbox: asyncio.Queue[Message],
        clock: Callable[[], float],
        load_timeout: float,
    ) -> None:
        self.instances, self.inbox, self.clock = instances, inbox, clock
        self.load_timeout = load_timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def activate(self, model: str, swap: bool) -> None:
        self._start(self._activate(model, swap))

    def deactivate(self, model: str, options: dict[str, Any] | None = None) -> None:
        self._start(self._deactivate(model, options))

    def look(self, model: str) -> None:
        self._start(self._look(model))

    async def tick(self, every: float) -> None:
        while True:
            self.inbox.put_nowait(Tick())
            await asyncio.sleep(every)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Each outcome carries when its call was asked: a view older than a request is not final.
    async def _activate(self, model: str, swap: bool) -> None:
        asked = self.clock()

        def on_state(state: dict[str, Any]) -> None:
            self.inbox.put_nowait(Progress(model, state))

        seen = await self.instances.activate(model, swap, self.load_timeout, on_state)
        self.inbox.put_nowait(Outcome(model, seen, Busy.ACTIVATING, asked))

    async def _deactivate(self, model: str, options: dict[str, Any] | None) -> None:
        asked = self.clock()
        seen = await self.instances.deactivate(model, self.load_timeout, options)
        self.inbox.put_nowait(Outcome(model, seen, Busy.DEACTIVATING, asked))

    async def _look(self, model: str) -> None:
        asked = self.clock()
        self.inbox.put_nowait(Outcome(model, await self.instances.state(model), asked=asked))
