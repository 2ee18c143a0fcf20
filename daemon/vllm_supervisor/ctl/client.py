"""vllmctl's client for the admin socket: HTTP over AF_UNIX with the standard library only,
so `vllmctl status` does not pay for importing aiohttp (docs/performance.md)."""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vllm_supervisor import exitcodes
from vllm_supervisor.host.locations import socket_path


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


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


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
        self, method: str, url: str, body: dict[str, Any] | None, timeout: float | None = None
    ) -> http.client.HTTPResponse:
        conn = _UnixConnection(str(self.path), timeout or self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, url, body=data, headers=headers)
            resp = conn.getresponse()
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
        except OSError as exc:
            code = exitcodes.PERMISSION if exc.errno == errno.EACCES else exitcodes.FAILED
            raise CtlError(f"{self.model}: {exc}", code) from None
        if resp.status == 403:
            raise CtlError(f"{self.model}: {_error(resp)}", exitcodes.PERMISSION)
        if resp.status == 422:  # the supervisor refused the config (reload)
            raise CtlError(f"{self.model}: {_error(resp)}", exitcodes.CONFIG)
        if resp.status >= 400:
            raise CtlError(f"{self.model}: {_error(resp)}", exitcodes.FAILED)
        return resp

    def get_json(self, url: str) -> dict[str, Any]:
        data = json.loads(self._open("GET", url, None).read())
        return data if isinstance(data, dict) else {}

    def get_text(self, url: str) -> str:
        return self._open("GET", url, None).read().decode("utf-8", errors="replace")

    def stream(
        self, method: str, url: str, body: dict[str, Any] | None, timeout: float | None = None
    ) -> Iterator[bytes]:
        resp = self._open(method, url, body, timeout)
        while True:
            line = resp.readline()
            if not line:
                return
            yield line

    def post_json(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.loads(self._open("POST", url, body).read())
        return data if isinstance(data, dict) else {}


def _error(resp: http.client.HTTPResponse) -> str:
    raw = resp.read()
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
