"""vllmctl's client for the admin socket: protocol/admin.py's exchange (the standard
library's asyncio, so `vllmctl status` does not pay for importing aiohttp: docs/performance.md),
with each failure said as an operator reads it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Any

from vllm_supervisor import exitcodes
from vllm_supervisor.protocol import admin
from vllm_supervisor.protocol.admin import socket_path


class CtlError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def running_models(bases: list[Path]) -> list[str]:
    found: set[str] = set()
    for base in bases:
        with contextlib.suppress(OSError):
            found |= {p.parent.name for p in base.glob("*/admin.sock")}
    return sorted(found)


def find_socket(bases: list[Path], model: str) -> Path:
    """The first folder (places.runtime_dirs order) whose MODEL/admin.sock exists; else the
    first one's path, so "not running" names where it was looked for."""
    paths = [socket_path(b, model) for b in bases]
    for p in paths:
        try:
            if p.exists() or (p.parent.exists() and not os.access(p.parent, os.X_OK)):
                return p  # present, or behind a folder we may not enter: say that, not "absent"
        except OSError:
            return p
    return paths[0]


class Client:
    def __init__(
        self, bases: list[Path], model: str, timeout: float = 10.0, path: Path | None = None
    ) -> None:
        """PATH: a socket that is not an instance's (the gateway's: model is its name)."""
        self.model = model
        self.path = path or find_socket(bases, model)
        self.timeout = timeout
        self.unit = "vllm-gateway" if path is not None else f"vllm-supervisor@{model}"

    def _open(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        timeout: float | None = None,
        on_line: admin.RawSink | None = None,
    ) -> admin.Answer:
        """One exchange (protocol/admin.py, the client every side uses), its failures turned
        into what an operator reads and the exit code that goes with it."""
        limit = timeout or self.timeout
        try:
            got = asyncio.run(admin.exchange(self.path, method, url, body, limit, on_line))
        except FileNotFoundError:
            raise CtlError(
                f"{self.model}: not running: systemctl start {self.unit}", exitcodes.NOT_RUNNING
            ) from None
        except ConnectionRefusedError:
            raise CtlError(
                f"{self.model}: not running (stale socket {self.path}): systemctl "
                f"start {self.unit}",
                exitcodes.NOT_RUNNING,
            ) from None
        except PermissionError:
            raise CtlError(
                f"{self.model}: permission denied on {self.path}: add your user to "
                "group vllm-admin (usermod -aG vllm-admin USER; log in again)",
                exitcodes.PERMISSION,
            ) from None
        except TimeoutError:
            raise CtlError(
                f"{self.model}: no answer within {limit:g} s", exitcodes.FAILED
            ) from None
        except OSError as exc:
            code = exitcodes.PERMISSION if exc.errno == errno.EACCES else exitcodes.FAILED
            raise CtlError(f"{self.model}: {exc}", code) from None
        if got.status == 403:
            raise CtlError(f"{self.model}: {_error(got)}", exitcodes.PERMISSION)
        if got.status == 422:  # the supervisor refused the config (reload)
            raise CtlError(f"{self.model}: {_error(got)}", exitcodes.CONFIG)
        if got.status >= 400:
            raise CtlError(f"{self.model}: {_error(got)}", exitcodes.FAILED)
        return got

    def get_json(self, url: str) -> dict[str, Any]:
        data = json.loads(self._open("GET", url, None).body)
        return data if isinstance(data, dict) else {}

    def get_text(self, url: str) -> str:
        return self._open("GET", url, None).body.decode("utf-8", errors="replace")

    def stream(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        on_line: admin.RawSink,
        timeout: float | None = None,
    ) -> None:
        """Each line of the answer to ON_LINE as it comes (an order followed, logs -f)."""
        self._open(method, url, body, timeout, on_line)

    def post_json(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.loads(self._open("POST", url, body).body)
        return data if isinstance(data, dict) else {}


def _error(resp: admin.Answer) -> str:
    raw = resp.body
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and "error" in data:
            extra = f"\n{data['problems']}" if data.get("problems") else ""
            err = data["error"]
            if isinstance(err, dict) and "message" in err:  # the gateway's (OpenAI's) shape
                err = err["message"]
            return str(err) + extra
    except ValueError:
        pass
    return f"HTTP {resp.status}: {raw[:200]!r}"
