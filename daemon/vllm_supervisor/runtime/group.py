"""GPU groups: at most one member active at a time, enforced by every instance itself.

An instance asked to activate looks at its peers (the other members of its gpu_group)
through their admin sockets, beside its own in the runtime dir. A peer whose service does not
answer counts as inactive; one in any state but inactive, failed or sleeping holds the group
(a peer that is restarting or stopping still has, or will have, an engine on the GPUs; a
sleeping one has freed its memory, runtime/sleep.py). Deciding and starting happen under one
lock file per group (flock(2)), so two activations or two swaps racing in one group cannot
both win. The lock lives in $CACHE_DIRECTORY when systemd gives
one (/var/cache/vllm-supervisor: shared by the instances and kept, unlike a shared
RuntimeDirectory, which systemd removes when any instance stops), else in the runtime dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from vllm_supervisor.protocol.admin import Instances
from vllm_supervisor.protocol.states import DOWN, HOLDS_NO_GPU, State

LOCK_WAIT = 300.0  # a swap holds the lock through the peer's drain, stop and memory release
DEACTIVATE_WAIT = 300.0


class Group:
    def __init__(self, runtime_base: Path, lock_dir: Path) -> None:
        self.instances, self.lock_dir = Instances(runtime_base), lock_dir

    async def _state(self, peer: str) -> str:
        """The peer's state; inactive when its service does not answer."""
        seen = await self.instances.state(peer)
        return State.INACTIVE if seen.state == DOWN else seen.state

    async def active_peer(self, peers: tuple[str, ...]) -> tuple[str, str] | None:
        """(name, state) of a peer that holds the group, or None."""
        for peer in peers:
            state = await self._state(peer)
            if state not in HOLDS_NO_GPU:
                return peer, state
        return None

    async def deactivate(self, peer: str) -> str | None:
        """Deactivate PEER (its own drain, then stop or sleep, and its GPU memory release)
        and wait until it is free; None on success, else why not."""
        await self.instances.deactivate(peer, DEACTIVATE_WAIT)
        state = await self._state(peer)
        return None if state in HOLDS_NO_GPU else f"peer {peer} did not deactivate (it is {state})"

    @contextlib.asynccontextmanager
    async def lock(self, group: str) -> AsyncIterator[None]:
        path = self.lock_dir / f"gpu-group-{group}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
        try:
            # Polled without blocking: a thread stuck in flock could not be called off.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + LOCK_WAIT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if loop.time() > deadline:
                        raise TimeoutError(f"{path} held for {LOCK_WAIT:g} s") from None
                    await asyncio.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock


class Peers(Protocol):
    async def active_peer(self, peers: tuple[str, ...]) -> tuple[str, str] | None: ...
    async def deactivate(self, peer: str) -> str | None: ...


async def make_room(
    port: Peers, group: str, peers: tuple[str, ...], swap: bool, log: Any, model: str
) -> str | None:
    """None when no peer of the gpu_group is active (or, with SWAP, once the active one has
    been deactivated); else why this model may not start."""
    peer = await port.active_peer(peers)
    if peer is None:
        return None
    name, state = peer
    if not swap:
        return f"gpu_group {group}: {name} is {state}; deactivate it first, or activate with --swap"
    log.info("swap: deactivating the group's active peer", model=model, peer=name, group=group)
    return await port.deactivate(name)


class NoGroup:
    """A model in no gpu_group, and the default in tests."""

    async def active_peer(self, peers: tuple[str, ...]) -> tuple[str, str] | None:
        return None

    async def deactivate(self, peer: str) -> str | None:
        return None

    @contextlib.asynccontextmanager
    async def lock(self, group: str) -> AsyncIterator[None]:
        yield
