"""Fakes for the supervisor's ports: an engine, a prober and a notifier that record."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from vllm_supervisor.config.settings import Health, RestartPolicy, Startup, Stop, Supervision
from vllm_supervisor.preflight.render import Command
from vllm_supervisor.runtime.probes import EngineAddress
from vllm_supervisor.runtime.process import Exit
from vllm_supervisor.systemd.notify import Notifier


class FakeEngine:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.done: asyncio.Future[Exit] = asyncio.get_running_loop().create_future()
        self.stops: list[float] = []
        self.killed = False

    def exit(self, code: int | None = 0, sig: int | None = None) -> None:
        if not self.done.done():
            self.done.set_result(Exit(code, sig))

    async def wait(self) -> Exit:
        return await asyncio.shield(self.done)

    async def stop(self, grace: float) -> tuple[bool, list[int]]:
        self.stops.append(grace)
        self.exit(0)
        return False, []

    async def kill(self) -> list[int]:
        self.killed = True
        self.exit(None, 9)
        return []


class FakeProber:
    def __init__(self) -> None:
        self.up = False  # /health answers 200 when up
        self.health_answer: int | str | None = None  # overrides when set (503, "timeout")
        self.models_error: str | None = None
        self.token_error: str | None = None
        self.hold = asyncio.Event()  # the 1-token probe waits for this when `held`
        self.held = False
        # vLLM's dev endpoints (sleep mode), as 0.32 answers them: what is asleep, by tag.
        self.asleep: set[str] = set()
        self.dev_calls: list[str] = []
        self.dev_answers: dict[str, tuple[int, str]] = {}  # a path prefix -> a forced answer

    def aim(self, address: EngineAddress) -> None:
        self.aimed_at = address

    async def health(self, timeout: float) -> int | str:
        await asyncio.sleep(0)
        if self.health_answer is not None:
            return self.health_answer
        return 200 if self.up else "refused"

    async def models(self, timeout: float) -> str | None:
        return self.models_error

    async def one_token(self, timeout: float) -> str | None:
        if self.held:
            await self.hold.wait()
        return self.token_error

    async def running_requests(self, timeout: float) -> float | None:
        return self.running

    running: float | None = 0.0

    dev_hold: asyncio.Event | None = None  # POST /sleep waits for it when set

    async def dev(
        self, method: str, path: str, timeout: float, body: dict[str, Any] | None = None
    ) -> tuple[int, str]:
        self.dev_calls.append(f"{method} {path}" + (f" {json.dumps(body)}" if body else ""))
        for prefix, answer in self.dev_answers.items():
            if path.startswith(prefix):
                return answer
        if path.startswith("/sleep"):
            if self.dev_hold is not None:
                await self.dev_hold.wait()
            self.asleep = {"weights", "kv_cache"}
        elif path.startswith("/wake_up"):
            tags = [t.split("=")[1] for t in path.partition("?")[2].split("&") if t]
            self.asleep -= set(tags) if tags else set(self.asleep)
        elif path == "/is_sleeping":
            return 200, json.dumps({"is_sleeping": bool(self.asleep)})
        return 200, "{}"


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__({})
        self.sent: list[dict[str, str]] = []
        self.at: list[float] = []  # when each was sent

    def send(self, **fields: str | int) -> bool:
        self.sent.append({k: str(v) for k, v in fields.items()})
        self.at.append(time.monotonic())
        return True

    def count(self, key: str) -> int:
        return sum(1 for s in self.sent if key in s)


class Spawner:
    """ports.spawn: hands out FakeEngines and lets a test script what each one prints."""

    def __init__(self, prober: FakeProber) -> None:
        self.prober = prober
        self.engines: list[FakeEngine] = []
        self.lines: list[str] = []  # printed by the next engine at spawn
        self.on_lines: Callable[[list[str], str], None] | None = None
        self.fail_with: OSError | None = None

    async def __call__(self, cmd: Command, on_lines: Callable[[list[str], str], None]) -> Any:
        if self.fail_with is not None:
            raise self.fail_with
        self.on_lines = on_lines
        engine = FakeEngine(1000 + len(self.engines))
        self.engines.append(engine)
        if self.lines:
            on_lines(list(self.lines), "\n".join(self.lines))
        return engine

    def say(self, line: str) -> None:
        assert self.on_lines is not None
        self.on_lines([line], line)


def fast_settings(**kw: Any) -> Supervision:
    restart = kw.pop(
        "restart", RestartPolicy(backoff_initial=0.01, backoff_max=0.05, budget=3, window=60)
    )
    return Supervision(
        autostart=kw.pop("autostart", True),
        startup=kw.pop(
            "startup",
            Startup(stall_timeout=30, start_timeout=60, poll_interval=0.01, probe_timeout=1),
        ),
        health=kw.pop("health", Health(interval=0.01, timeout=0.1, failures=3)),
        restart=restart,
        stop=Stop(grace=7.0),
    )


def command(tag: str = "a") -> Command:
    return Command(("engine", tag), {"X": tag}, (), frozenset())
