"""A streamed chat that waits for its model to load, shown the load as it happens.

An on-demand load takes tens of seconds (48 s in Open WebUI here, issue 18, item 8), and a
chat UI showed it as a lone cursor, which no user can tell from a hang. With
`load_progress` (the default), a streamed chat whose model is not serving gets its answer's
headers at once, then one `chat.completion.chunk` per load phase the router learns from the
instance ("unloading B to make room on the GPU", "loading weights", "allocating KV cache",
"checking that it answers", "ready after 41 s"), and a line every 10 s while nothing
changes. The phases go in `delta.reasoning`, the field vLLM 0.32 itself streams reasoning
in (DeltaMessage) and Open WebUI shows as its "Thinking" block (it reads
`reasoning_content`, then `reasoning`): a client that prints only `content` sees nothing
but the answer. Once the model serves, the engine's own stream follows in the same
answer. A failure after the headers went out ends the stream with an OpenAI-shaped error
event and `data: [DONE]`, as vLLM ends a stream that failed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from vllm_supervisor.gateway import errors
from vllm_supervisor.gateway.router import Router
from vllm_supervisor.gateway.slots import Denial, Lease

TICK = 10.0  # seconds between "still loading" lines while no phase changes
DONE = b"data: [DONE]\n\n"
Prepare = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


class Shown:
    """The events of one waiting stream, in the shape of vLLM's chat chunks."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-load-{uuid.uuid4().hex}"
        self.model = model
        self.first = True

    def line(self, text: str) -> bytes:
        delta: dict[str, Any] = {"reasoning": text + "\n"}
        if self.first:
            delta = {"role": "assistant", "content": "", **delta}
            self.first = False
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def wait_showing(
    request: web.Request,
    out: web.StreamResponse,
    prepare: Prepare,
    router: Router,
    model: str,
    name: str,
    acquire: asyncio.Future[Lease | Denial],
    timeout: float,
) -> Lease | Denial | None:
    """Prepare OUT and show MODEL's load on it until ACQUIRE is answered; None when TIMEOUT
    passed first."""
    await prepare(request, out)
    shown, loop = Shown(name), asyncio.get_running_loop()
    start = loop.time()
    await out.write(shown.line(f"Loading {name}; it is not in memory yet."))
    since: int | None = None  # from the phase current now; then each one, in order
    while True:
        phases, since, changed = router.phases(model, since)
        for phase in phases:
            if phase:
                await out.write(shown.line(phase[:1].upper() + phase[1:] + "."))
        if acquire.done():
            return acquire.result()
        left = start + timeout - loop.time()
        if left <= 0:
            return None
        watch: asyncio.Future[Any] = asyncio.ensure_future(changed.wait())
        both: list[asyncio.Future[Any]] = [acquire, watch]
        try:
            done, _ = await asyncio.wait(
                both, timeout=min(left, TICK), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            watch.cancel()
        if not done:
            await out.write(shown.line(f"Still loading ({loop.time() - start:.0f} s)."))


async def end_with_error(out: web.StreamResponse, status: int, message: str, code: str) -> None:
    """An error event, then [DONE]: the end of a stream whose headers said 200."""
    await out.write(errors.sse_event(status, message, code) + DONE)
    await out.write_eof()


def error_of(resp: web.Response) -> tuple[int, str, str]:
    """(status, message, code) of an error answer the gateway or the engine made."""
    try:
        data = json.loads(resp.body if isinstance(resp.body, bytes) else b"{}")
    except ValueError:
        data = {}
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return resp.status, str(err.get("message", "")), str(err.get("code") or "error")
    return resp.status, str(err or data or resp.reason), "error"
