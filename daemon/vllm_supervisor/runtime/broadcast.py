"""Bounded fan-out of the supervisor's state snapshots and engine lines to admin clients.

A slow reader loses items; it never blocks the supervisor (each queue is bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Generic, TypeVar

T = TypeVar("T")
QUEUE = 1000  # items a subscriber may lag behind before losing some


class Broadcast(Generic[T]):
    def __init__(self, size: int = QUEUE) -> None:
        self._size = size
        self._queues: set[asyncio.Queue[T]] = set()

    def subscribe(self) -> asyncio.Queue[T]:
        q: asyncio.Queue[T] = asyncio.Queue(maxsize=self._size)
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[T]) -> None:
        self._queues.discard(q)

    def __bool__(self) -> bool:  # anyone listening: the caller skips building the item
        return bool(self._queues)

    def offer(self, item: T) -> None:
        for q in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(item)
