"""Every answer the gateway itself makes, in OpenAI's error shape
(`{"error": {"message", "type", "param", "code"}}`), so clients' SDKs raise the right
exception (openai-python maps 400/404/409/429/5xx to its error classes by status).

Two readers, two texts (issue 18, item 8): the message goes to the person behind the
client (a chat user: what happened, whether to retry; never `systemctl`), and the
operator's fix goes to the journal, one line per error answer with the model, the status
and the reason, at a priority that says who must act: info for a client's own mistake,
warning for a model that is busy or loading, err for one that cannot serve.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "service_unavailable",
    504: "timeout",
}
WAITING = (429, 503, 504)  # busy, loading, slow: a warning, the model may come back
# Request key: the StreamResponse whose headers went out, if any. A typed key (aiohttp
# 3.14, hence pyproject's floor): a str key warned NotAppKeyWarning on every request.
OUT: web.RequestKey[web.StreamResponse] = web.RequestKey("vsup_out", web.StreamResponse)
ENGINE_DIED = "stopped while answering, so this answer is incomplete. Try again in a moment."


def body(status: int, message: str, code: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": TYPES.get(status, "api_error"),
            "param": None,
            "code": code,
        }
    }


def answer(status: int, message: str, code: str, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": f"{max(1, round(retry_after))}"} if retry_after else None
    return web.json_response(body(status, message, code), status=status, headers=headers)


def sse_event(status: int, message: str, code: str) -> bytes:
    """An error as one server-sent event: what a client mid-stream can still be told."""
    return b"data: " + json.dumps(body(status, message, code)).encode() + b"\n\n"


def level(status: int) -> str:
    if status in WAITING:
        return "warning"
    return "error" if status >= 500 else "info"


def log_answer(
    log: Any, status: int, code: str, model: str | None, message: str, fix: str | None = None
) -> None:
    """The operator's line for one error answer (structlog: `<N>event key=value`). MESSAGE is
    the client's; FIX is the operator's, when there is one. No header and no body in it."""
    fields: dict[str, Any] = {"status": status, "code": code, "message": message}
    if model is not None:
        fields = {"model": model, **fields}
    if fix:
        fields["fix"] = fix
    getattr(log, level(status))("request answered with an error", **fields)


class QuietLog:
    """The logger when none is given (tests)."""

    def info(self, event: str, **kw: Any) -> None: ...
    def warning(self, event: str, **kw: Any) -> None: ...
    def error(self, event: str, **kw: Any) -> None: ...
