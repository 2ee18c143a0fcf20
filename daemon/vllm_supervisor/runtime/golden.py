"""An upgrade's golden check, the engine side: the same fixed requests to the serving engine
and to the candidate, answered as data (ctl/upgrade.py compares them and decides).

Temperature 0 and a fixed seed make each engine repeat itself; two vLLM releases may still
answer differently (kernels, sampling and chat-template changes), so differing text is only
a warning there. What is a failure: an error answer, a json_schema answer that is not JSON
of its schema, a forced tool call whose arguments are not JSON of the tool's parameters.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from vllm_supervisor.runtime.probes import EngineAddress

SEED = 1234
PROMPT = "Name three colours of the rainbow."
# Bounded answers: enums and a boolean, so even a model that rambles (the test tier's random
# weights) ends its JSON within max_tokens; a string or an integer could run on to the cap.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"colour": {"enum": ["red", "green", "blue"]}, "bright": {"type": "boolean"}},
    "required": ["colour", "bright"],
    "additionalProperties": False,
}
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "Lima", "Oslo"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def fits(value: object, schema: dict[str, Any]) -> bool:
    """VALUE matches SCHEMA's shape: an object with the required keys, no others, each in its
    enum or of its type (the two schemas above are all this checks)."""
    if not isinstance(value, dict):
        return False
    props: dict[str, Any] = schema["properties"]
    if set(schema["required"]) - set(value) or set(value) - set(props):
        return False
    for k, v in value.items():
        rule = props[k]
        if "enum" in rule and v not in rule["enum"]:
            return False
        if rule.get("type") == "boolean" and not isinstance(v, bool):
            return False
    return True


async def _post(
    session: aiohttp.ClientSession, address: EngineAddress, path: str, body: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    try:
        async with session.post(
            address.base + path,
            json=body,
            headers=address.headers,
            timeout=aiohttp.ClientTimeout(total=120),
        ) as r:
            text = await r.text()
            if r.status != 200:
                return None, f"HTTP {r.status}: {text[:300]}"
            data = json.loads(text)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return (data, None) if isinstance(data, dict) else (None, "the answer is not a JSON object")


def _message(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        msg = choices[0].get("message")
        return msg if isinstance(msg, dict) else {}
    return {}


async def answers(
    session: aiohttp.ClientSession, address: EngineAddress, tools: bool
) -> dict[str, dict[str, Any]]:
    """One engine's answers: each check's {"text"|"count"|"arguments": ..., "error": ...};
    TOOLS: the model has a tool-call parser (a forced call is then asked too)."""
    name = address.served_names[0]
    chat = {"model": name, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 24,
            "temperature": 0, "seed": SEED}  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    data, err = await _post(session, address, "/v1/chat/completions", chat)
    out["chat"] = {"text": _message(data).get("content") if data else None, "error": err}
    schema = {"type": "json_schema", "json_schema": {"name": "golden", "schema": SCHEMA}}
    data, err = await _post(session, address, "/v1/chat/completions",
                            {**chat, "max_tokens": 96, "response_format": schema})  # fmt: skip
    text = _message(data).get("content") if data else None
    if err is None:
        try:
            if not fits(json.loads(text or ""), SCHEMA):
                err = f"the json_schema answer does not match its schema: {text!r:.120}"
        except ValueError:
            err = f"the json_schema answer is not JSON: {text!r:.120}"
    out["json_schema"] = {"text": text, "error": err}
    if tools:
        forced = {"type": "function", "function": {"name": "get_weather"}}
        data, err = await _post(session, address, "/v1/chat/completions",
                                {**chat, "max_tokens": 64, "tools": [TOOL],
                                 "tool_choice": forced})  # fmt: skip
        calls = _message(data).get("tool_calls") if data else None
        args = None
        if err is None:
            try:
                args = calls[0]["function"]["arguments"] if isinstance(calls, list) else None
                if args is None or not fits(json.loads(args), TOOL["function"]["parameters"]):
                    err = "the tool call's arguments do not match the tool's parameters"
            except (KeyError, IndexError, TypeError, ValueError):
                err = "no well-formed tool call in the answer"
        out["tool_call"] = {"arguments": args, "error": err}
    data, err = await _post(session, address, "/tokenize", {"model": name, "prompt": PROMPT})
    count = data.get("count") if data else None
    out["tokenize"] = {"count": count, "error": err}
    return out
