"""The gateway's HTTP server: aiohttp's, with its answer to a request it cannot parse made
ours.

aiohttp answers malformed HTTP (a 64 KB header, 1000 headers, a bad header line,
`Content-Length: -5`, `HTTP/9.9`) in its protocol handler, before any handler or middleware
runs: a text/plain 400, and `log_exception` writes the whole traceback to the journal. That
traceback quotes the offending line, so `Authorization: Bearer KEY\\x0b` put a valid client
key into the journal (issue 18, item 5). `RequestHandler.handle_error` is the one place both
happen (aiohttp 3.9-3.14, web_protocol.py), so the server hands out a handler class whose
handle_error answers in OpenAI's shape and logs one line: the status, the error's class and
the peer, no header content and no traceback. A handler's own exception (a 500: our bug)
keeps its traceback in the log, where it is needed, but never reaches the client.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from vllm_supervisor.gateway import errors


class _Handler(RequestHandler):
    __slots__ = ()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        log = getattr(self._manager, "log", None) or errors.QuietLog()
        peer = request.remote if request is not None else None
        if status == 500 and exc is not None:
            log.error("handler failed", error=type(exc).__name__, peer=peer, exc_info=exc)
            text, code = "the gateway failed to handle this request; try again", "internal_error"
        else:
            what = type(exc).__name__ if exc is not None else f"HTTP {status}"
            log.info("malformed request refused", status=status, error=what, peer=peer)
            text, code = f"malformed HTTP request ({what})", "malformed_request"
        if request is not None and request.writer.output_size > 0:
            # Part of an answer went out already: the connection is all there is to close.
            raise ConnectionError("response already started")
        resp = errors.answer(status, text, code)
        resp.force_close()
        return resp


class _Server(web.Server):
    log: Any = None

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """web.AppRunner whose connections are handled by _Handler."""

    def __init__(self, app: web.Application, log: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.log = log

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        made.__class__ = _Server  # the same object, only its factory method differs
        made.log = self.log  # type: ignore[attr-defined]
        return made
