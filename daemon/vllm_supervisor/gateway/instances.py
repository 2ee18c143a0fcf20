"""The model instances through their admin sockets (runtime/admin.py's protocol): what the
gateway uses them by, and what an instance uses to see its gpu_group peers (runtime/group.py).

A socket that is absent or refuses means the instance's service is not running: "down".
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from vllm_supervisor.host.locations import socket_path

DOWN = "down"  # the instance's service does not answer


@dataclass(frozen=True)
class Seen:
    """An instance's state as its admin socket last answered it."""

    state: str  # runtime/states.py's value, or DOWN
    reason: str = ""
    diagnosis: dict[str, Any] | None = None
    refused: str | None = None  # a 409: the gpu_group peer that holds the group
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    # Another 4xx: the instance refused the call itself (a bad option, a newer protocol),
    # which the gateway's admin passes on as it is, never as a state.
    rejected: tuple[int, str] | None = None

    @classmethod
    def of(cls, status: int, answers: list[dict[str, Any]]) -> Seen:
        last = answers[-1] if answers else {}
        error = str(last.get("error") or f"HTTP {status}")
        return cls(
            str(last.get("state") or DOWN),
            str(last.get("reason") or ""),
            last.get("diagnosis") if isinstance(last.get("diagnosis"), dict) else None,
            error if status == 409 else None,
            last,
            (status, error) if 400 <= status < 500 and status != 409 else None,
        )


class Instances:
    def __init__(self, runtime_bases: Path | list[Path]) -> None:
        # Where to look, in order (host/locations.runtime_dirs: the user's, then the system's).
        self.bases = [runtime_bases] if isinstance(runtime_bases, Path) else runtime_bases

    async def request(
        self,
        model: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        timeout: float,
        on_line: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[int, str] | None:
        """(HTTP status, the answer's text), or None when the service is down. ON_LINE: each
        JSON line of an NDJSON answer as it comes (an activation's states, for the gateway's
        load progress)."""
        sock = next((p for b in self.bases if (p := socket_path(b, model)).exists()), None)
        if sock is None:
            return None
        try:
            async with (
                aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as s,
                s.request(
                    method,
                    f"http://localhost{path}",
                    json=body,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as r,
            ):
                if on_line is None:
                    return r.status, await r.text()
                lines = []
                async for raw in r.content:  # line by line, as the instance writes them
                    line = raw.decode("utf-8", errors="replace")
                    lines.append(line)
                    with contextlib.suppress(ValueError):
                        value = json.loads(line)
                        if isinstance(value, dict):
                            on_line(value)
                return r.status, "".join(lines)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def call(
        self,
        model: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        timeout: float,
        on_line: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[int, list[dict[str, Any]]] | None:
        """(HTTP status, every JSON line of the answer), or None when the service is down."""
        got = await self.request(model, method, path, body, timeout, on_line)
        if got is None:
            return None
        answers = []
        for line in got[1].splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                answers.append(value)
        return got[0], answers

    async def text(self, model: str, path: str, timeout: float) -> str | None:
        """A plain-text answer (`/v1/metrics`), or None when down or not 200."""
        got = await self.request(model, "GET", path, None, timeout)
        return got[1] if got is not None and got[0] == 200 else None

    async def state(self, model: str, timeout: float = 3.0) -> Seen:
        got = await self.call(model, "GET", "/v1/state", None, timeout)
        return Seen(DOWN) if got is None else Seen.of(*got)

    async def activate(
        self,
        model: str,
        swap: bool,
        timeout: float,
        on_state: Callable[[dict[str, Any]], None] | None = None,
    ) -> Seen:
        """Activate and wait until ready (or failed, or refused): the last state seen.
        ON_STATE: each state the instance reports on the way."""
        body = {"wait": True, "timeout": timeout, "swap": swap}
        got = await self.call(model, "POST", "/v1/activate", body, timeout + 10, on_state)
        return Seen(DOWN) if got is None else Seen.of(*got)

    async def deactivate(
        self, model: str, timeout: float, options: dict[str, Any] | None = None
    ) -> Seen:
        """Deactivate (its drain, then stop or sleep as configured) and wait until it ends.
        OPTIONS: the admin call's drain_timeout and stop, as an operator gave them."""
        body = {"wait": True, "timeout": timeout, **(options or {})}
        got = await self.call(model, "POST", "/v1/deactivate", body, timeout + 10)
        return Seen(DOWN) if got is None else Seen.of(*got)
