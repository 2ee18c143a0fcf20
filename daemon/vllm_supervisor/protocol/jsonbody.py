"""JSON bodies as RFC 8259 defines them, and their fields checked by type.

Python's json module takes `NaN`, `Infinity` and `1e999` (a float overflow: inf). None of
them is a number an order can mean: a NaN drain_timeout passes `< 0` and every other
comparison, so `POST /v1/deactivate {"drain_timeout": NaN}` was accepted (202) and did
nothing, and the gateway's own admin call waited out its whole load_timeout (issue 18,
item 6). Every admin body is read here; a bad one is a BadBody with the reason, which each
side answers as a 400 in its own shape.
"""

from __future__ import annotations

import json
import math
from typing import Any


class BadBody(ValueError):
    """The body, or one of its fields, is not what the path takes: the message says why."""


def _no_constant(name: str) -> Any:
    raise BadBody(f"{name} is not a JSON number (RFC 8259)")


# One decoder for every body: json.loads with an argument builds a new one per call, which
# was 1% of a gateway request (issue 23).
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def loads(raw: bytes | str) -> Any:
    """Strict JSON: NaN, Infinity and -Infinity are refused (BadBody); so is anything else
    json.loads refuses (BadBody with its reason)."""
    try:
        if not isinstance(raw, str):  # UTF-8, -16 or -32, as json.loads takes bytes
            raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
        return _DECODER.decode(raw)
    except BadBody:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadBody(f"malformed JSON: {exc}") from None


def finite(value: object) -> bool:
    """A JSON number that means one: not a bool, not inf (1e999 parses as inf)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fields(raw: bytes, types: dict[str, type]) -> dict[str, Any]:
    """The body as an object whose every field is known and of its type (float: a finite
    number; bool; str: a non-empty string). An empty body is {}."""
    if not raw.strip():
        return {}
    body = loads(raw)
    if not isinstance(body, dict):
        raise BadBody("the body must be a JSON object")
    for key, value in body.items():
        want = types.get(key)
        if want is None:
            raise BadBody(f"unknown field '{key}'; known: {', '.join(sorted(types))}")
        if want is float:
            ok = finite(value)
        elif want is bool:
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, str) and bool(value)
        if not ok:
            what = {float: "a finite number", bool: "true or false", str: "a non-empty string"}
            raise BadBody(f"field '{key}' must be {what.get(want, want.__name__)}, got {value!r}")
    return body
