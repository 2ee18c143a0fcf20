"""HTTP probes against the engine: readiness (health, served names, one token) and liveness.

vLLM does not listen before it is ready (connection refused = still loading), answers
/health 503 once its engine is dead, and answers /v1/models without touching the engine, so
a hung engine can keep /health at 200: only a real generation proves it serves
(docs/vllm-behaviour.md, upstream issue 39863).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from vllm_supervisor.host.locations import http_base, local_host
from vllm_supervisor.runtime.metrics import running_requests


@dataclass(frozen=True)
class EngineAddress:
    host: str
    port: int
    served_names: tuple[str, ...]
    api_key: str | None = None

    @property
    def base(self) -> str:
        # An engine bound to every address is probed on loopback.
        return http_base(local_host(self.host), self.port)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


class Prober:
    def __init__(self, address: EngineAddress, session: aiohttp.ClientSession) -> None:
        self.address = address
        self.session = session

    def aim(self, address: EngineAddress) -> None:
        """Probe ADDRESS from now on (a reload may change the port, names or key)."""
        self.address = address

    async def health(self, timeout: float) -> int | str:
        """HTTP status of GET /health, or 'refused' / 'timeout' / 'error: ...'."""
        try:
            async with self.session.get(
                self.address.base + "/health", timeout=aiohttp.ClientTimeout(total=timeout)
            ) as r:
                return r.status
        except aiohttp.ClientConnectorError:
            return "refused"
        except TimeoutError:
            return "timeout"
        except aiohttp.ClientError as exc:
            return f"error: {type(exc).__name__}"

    async def models(self, timeout: float) -> str | None:
        """None when /v1/models lists every served name, else why not."""
        try:
            async with self.session.get(
                self.address.base + "/v1/models",
                headers=self.address.headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as r:
                if r.status != 200:
                    return f"/v1/models answered {r.status}"
                data = await r.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return f"/v1/models failed: {type(exc).__name__}"
        listed = {m.get("id") for m in data.get("data", []) if isinstance(m, dict)}
        missing = [n for n in self.address.served_names if n not in listed]
        return f"/v1/models does not list {', '.join(missing)}" if missing else None

    async def one_token(self, timeout: float) -> str | None:
        """None when a 1-token completion succeeds, else why not."""
        body = {
            "model": self.address.served_names[0],
            "prompt": "ping",
            "max_tokens": 1,
            "temperature": 0,
        }
        try:
            async with self.session.post(
                self.address.base + "/v1/completions",
                json=body,
                headers=self.address.headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as r:
                if r.status != 200:
                    text = (await r.text())[:200]
                    return f"1-token generation answered {r.status}: {text}"
                data = await r.json()
        except TimeoutError:
            return f"1-token generation timed out after {timeout:g} s"
        except (aiohttp.ClientError, ValueError) as exc:
            return f"1-token generation failed: {type(exc).__name__}"
        return None if data.get("choices") else "1-token generation returned no choices"

    async def metrics_text(self, timeout: float) -> str | None:
        """The engine's Prometheus /metrics text, or None."""
        try:
            async with self.session.get(
                self.address.base + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout)
            ) as r:
                return await r.text() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def running_requests(self, timeout: float) -> float | None:
        """Sum of vllm:num_requests_running over its label sets, or None when unreadable."""
        text = await self.metrics_text(timeout)
        if text is None:
            return None
        return running_requests(text)

    async def dev(
        self, method: str, path: str, timeout: float, body: dict[str, Any] | None = None
    ) -> tuple[int, str]:
        """One call to vLLM's dev endpoints (sleep mode, runtime/sleep.py): (HTTP status,
        body text), or (0, why) when no answer came. vLLM does not check the key on them
        (docs/vllm-behaviour.md, "Security surface"); it is sent anyway, harmlessly."""
        try:
            async with self.session.request(
                method,
                self.address.base + path,
                json=body,
                headers=self.address.headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as r:
                return r.status, await r.text()
        except TimeoutError:
            return 0, f"no answer within {timeout:g} s"
        except aiohttp.ClientError as exc:
            return 0, f"{type(exc).__name__}: {exc}"
