"""A client's request body: read whole, however it arrives, bounded by `gateway.max_body`;
the model it names found (a JSON field, or a multipart form field for audio); and an
alias swapped for the name the engine serves.

`request.content.read(n)` returns what has arrived so far, not n bytes: a 1 MB prompt sent
in one write, or 30 KB in two writes 50 ms apart, was cut and answered `400 malformed JSON`,
and a body over the bound got that 400 instead of a 413 (issue 18, item 1). Here the body
is read until its end (Content-Length or the chunked terminator; aiohttp's StreamReader
decodes the framing), and refused with a 413 as soon as it passes the bound: at once when
Content-Length already says so, without reading a byte of it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from vllm_supervisor.gateway.routes import ClientRoute
from vllm_supervisor.protocol import jsonbody


class Refusal(Exception):
    """The body cannot be forwarded: (status, message, code), in OpenAI's error shape."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


async def read(request: web.Request, limit: int) -> bytes:
    """The whole body, or Refusal(413) once it is over LIMIT bytes."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> Refusal:
    return Refusal(
        413,
        f"the request body is over {limit} bytes, the most this gateway takes "
        "(gateway.max_body); send a smaller prompt or image",
        "body_too_large",
    )


@dataclass
class Parsed:
    """A body's model, and what the rest of the gateway reads of it."""

    model: str
    json: dict[str, Any] | None  # a JSON body, parsed (None: a form)
    boundary: bytes | None = None  # a form's multipart boundary


def parse(raw: bytes, route: ClientRoute, content_type: str) -> Parsed:
    """The model the body names, or Refusal(400) saying what is missing."""
    if route.body == "form":
        boundary = form_boundary(content_type)
        if boundary is None:
            raise Refusal(
                400,
                f"{route.path} takes a multipart/form-data body (the audio file and a "
                "'model' field)",
                "invalid_request",
            )
        name = form_field(raw, boundary, "model")
        if not name:
            raise Refusal(400, "the form must have a 'model' field", "no_model")
        return Parsed(name, None, boundary)
    try:
        body: Any = jsonbody.loads(raw) if raw.strip() else None
    except jsonbody.BadBody as exc:
        raise Refusal(400, f"the body is not valid JSON: {exc}", "invalid_json") from None
    name = body.get("model") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise Refusal(400, "the body must be a JSON object naming a 'model'", "no_model")
    return Parsed(name, body)


def renamed(raw: bytes, parsed: Parsed, served: str) -> bytes:
    """The body naming SERVED instead of the alias it named: vLLM knows only its served
    names (`--served-model-name`) and answered an alias `The model 'X' does not exist`
    (issue 18, item 3). The engine's answer then names SERVED, as LiteLLM's export does."""
    if parsed.json is not None:
        parsed.json["model"] = served
        return json.dumps(parsed.json).encode()
    assert parsed.boundary is not None
    return replace_form_field(raw, parsed.boundary, "model", served.encode())


# ---- multipart/form-data (RFC 7578), read only as far as routing needs --------------------
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.I)
_NAME = re.compile(rb'name="([^"]*)"', re.I)


def form_boundary(content_type: str) -> bytes | None:
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    m = _BOUNDARY.search(content_type)
    return m.group(1).encode() if m else None


def _parts(raw: bytes, boundary: bytes) -> list[tuple[int, int, bytes]]:
    """(start, end) of each part's content in RAW, with the part's field name."""
    delim = b"--" + boundary
    out = []
    pos = raw.find(delim)
    while pos != -1:
        head_start = pos + len(delim)
        if raw.startswith(b"--", head_start):
            break  # the closing delimiter
        head_end = raw.find(b"\r\n\r\n", head_start)
        nxt = raw.find(b"\r\n" + delim, head_start)
        if head_end == -1 or nxt == -1 or head_end > nxt:
            break
        m = _NAME.search(raw, head_start, head_end)
        out.append((head_end + 4, nxt, m.group(1) if m else b""))
        pos = nxt + 2
    return out


def form_field(raw: bytes, boundary: bytes, name: str) -> str | None:
    for start, end, field in _parts(raw, boundary):
        if field == name.encode():
            return raw[start:end].decode("utf-8", errors="replace").strip()
    return None


def replace_form_field(raw: bytes, boundary: bytes, name: str, value: bytes) -> bytes:
    for start, end, field in _parts(raw, boundary):
        if field == name.encode():
            return raw[:start] + value + raw[end:]
    return raw
