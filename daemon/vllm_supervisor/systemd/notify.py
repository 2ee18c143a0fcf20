"""sd_notify(3) without the `sdnotify` package.

sdnotify 0.3.2 encodes with latin-1 (a non-latin-1 STATUS= is silently dropped, while
sd_notify(3) defines STATUS= as UTF-8), swallows every error, and keeps one socket open from
construction (docs/systemd-behaviour.md). The protocol is one datagram on an
AF_UNIX socket named by $NOTIFY_SOCKET: a path, or an abstract name written `@name`.
This is the one place that speaks it; without NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

# STATUS= is a human one-liner; keep datagrams small (systemd reads at most a few KiB).
MAX_STATUS = 512


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        addr = environ.get("NOTIFY_SOCKET", "")
        self._addr: str | bytes | None = None
        if addr.startswith("@"):
            self._addr = b"\0" + addr[1:].encode()  # abstract namespace, unix(7)
        elif addr.startswith("/"):
            self._addr = addr
        self.errors = 0  # sends that failed; logged by the caller, never fatal
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        # sd_watchdog_enabled(3): honour WATCHDOG_USEC only when WATCHDOG_PID is unset or ours.
        ours = not pid or pid == str(os.getpid())
        self.watchdog_usec = int(usec) if usec.isdigit() and ours else 0

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, **fields: str | int) -> bool:
        """send(READY=1, STATUS="ready") -> one datagram; False when it could not be sent."""
        if self._addr is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value).replace("\n", " ")
            if key == "STATUS" and len(text) > MAX_STATUS:
                text = text[: MAX_STATUS - 1] + "…"
            lines.append(f"{key}={text}")
        data = "\n".join(lines).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(data, self._addr)
            return True
        except OSError:
            self.errors += 1
            return False

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def stopping(self, status: str) -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def reloading(self) -> bool:
        # systemd.service(5), Type=notify-reload semantics: RELOADING=1 with MONOTONIC_USEC.
        return self.send(
            RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        )

    def extend_timeout(self, seconds: float) -> bool:
        return self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    async def keep_watchdog_fed(self) -> None:
        """sd_watchdog_enabled(3): ping at half the interval, from the event loop, so a
        stuck loop (not a slow engine) is what systemd's WatchdogSec= catches."""
        if not self.watchdog_usec:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(self.watchdog_usec / 2_000_000)

    def errno(self, code: int, status: str) -> bool:
        return self.send(ERRNO=code, STATUS=status)
