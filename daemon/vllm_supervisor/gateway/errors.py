"""Every answer the gateway itself makes, in OpenAI's error shape
(`{"error": {"message", "type", "param", "code"}}`), so clients' SDKs raise the right
exception (openai-python maps 400/404/409/429/5xx to its error classes by status)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "service_unavailable",
}


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
