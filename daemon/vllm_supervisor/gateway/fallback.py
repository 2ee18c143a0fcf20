"""Chat answered through `/v1/completions` (`chat_fallback: on_failure | always`), for models
without a chat template and for vLLM releases whose chat path answers empty (the imageworks
upgrade plan: 0.11 gave empty chat answers for Qwen2.5-VL; Cortex did the same for models
without a template).

The prompt is the engine's own `/tokenize` of the messages (the model's template, applied
exactly as chat would); a model without a template gets a documented plain-text flattening
instead (`flatten`). The completion is reshaped into a `chat.completion`, or into
`chat.completion.chunk` events when streaming. Requests with `tools` are never rewritten:
a completion cannot carry tool calls, so the answer is a clear 400.
"""

from __future__ import annotations

import json
import time
from typing import Any

# Chat parameters a completion takes as they are (vLLM's CompletionRequest has them all).
SAMPLING = (
    "max_tokens", "temperature", "top_p", "top_k", "min_p", "n", "stop", "seed",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "stream",
    "stream_options", "user", "response_format", "ignore_eos", "min_tokens",
    "logit_bias", "stop_token_ids", "skip_special_tokens",
)  # fmt: skip
TEMPLATE_ERROR = "chat template"  # vLLM's 400 when the tokenizer has none, or it fails


class NotRewritable(ValueError):
    """The chat request cannot become a completion without losing something."""


def wants_fallback_after(status: int, body: bytes) -> str | None:
    """The reason to fall back, given the engine's non-streamed chat answer, or None."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if status == 400:
        err = data.get("error") if isinstance(data, dict) else None
        msg = err.get("message", "") if isinstance(err, dict) else str(data)
        return "template" if TEMPLATE_ERROR in str(msg).lower() else None
    if status == 200 and isinstance(data, dict):
        choices = data.get("choices") or []
        if choices and all(
            not (c.get("message") or {}).get("content")
            and not (c.get("message") or {}).get("tool_calls")
            for c in choices
        ):
            return "empty"
    return None


class Events:
    """Server-sent events split as their bytes come: feed() returns the `data:` payloads of
    the events a chunk completed (an event ends with a blank line); the rest waits."""

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        *events, self.pending = (self.pending + chunk).split(b"\n\n")
        return [e[len(b"data: ") :] for e in events if e.startswith(b"data: ")]


def shows_answer(data: bytes) -> bool:
    """Whether one event of a streamed chat answer (its `data:` payload) shows the engine
    answering: content, tool calls or reasoning in a delta, or an error (the client's to
    see). `on_failure` holds a stream back while it shows none (the role-only first chunk,
    empty deltas) and falls back when it ends so. Reasoning counts, unlike in a whole
    answer: a stream cannot be held back for a whole reasoning phase."""
    try:
        chunk = json.loads(data)
    except ValueError:
        return True  # not a chat chunk: not ours to judge
    if not isinstance(chunk, dict) or "error" in chunk:
        return True
    for c in chunk.get("choices") or []:
        delta = (c.get("delta") if isinstance(c, dict) else None) or {}
        if any(delta.get(k) for k in ("content", "tool_calls", "reasoning_content", "reasoning")):
            return True
    return False


def check_rewritable(chat: dict[str, Any]) -> None:
    if chat.get("tools"):
        raise NotRewritable(
            "chat_fallback would answer through /v1/completions, which cannot carry tool "
            "calls: this request's tools would be dropped, so it is refused"
        )


def flatten(messages: list[Any]) -> str:
    """The plain-text prompt of a model without a chat template: one block per message,
    `Role: text`, blank-line separated, ending with `Assistant:` for the model to continue.
    Only text parts can be flattened."""
    blocks = []
    for m in messages:
        if not isinstance(m, dict):
            raise NotRewritable("a message is not an object")
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                if not (isinstance(part, dict) and part.get("type") == "text"):
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise NotRewritable(f"a {kind} part cannot be flattened into a text prompt")
                texts.append(str(part.get("text", "")))
            content = "".join(texts)
        role = str(m.get("role", "user")).capitalize()
        blocks.append(f"{role}: {content or ''}")
    return "\n\n".join([*blocks, "Assistant:"])


def completion_request(chat: dict[str, Any], prompt: str | list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"model": chat["model"], "prompt": prompt}
    for key in SAMPLING:
        if key in chat:
            out[key] = chat[key]
    if "max_completion_tokens" in chat and "max_tokens" not in chat:
        out["max_tokens"] = chat["max_completion_tokens"]
    if chat.get("logprobs"):
        out["logprobs"] = int(chat.get("top_logprobs") or 1)
    return out


def chat_answer(completion: dict[str, Any]) -> dict[str, Any]:
    """A text_completion reshaped into a chat.completion."""
    return {
        "id": "chatcmpl-" + str(completion.get("id", "")).removeprefix("cmpl-"),
        "object": "chat.completion",
        "created": completion.get("created", int(time.time())),
        "model": completion.get("model"),
        "choices": [
            {
                "index": c.get("index", i),
                "message": {"role": "assistant", "content": c.get("text", "")},
                "finish_reason": c.get("finish_reason"),
                "logprobs": None,
            }
            for i, c in enumerate(completion.get("choices") or [])
        ],
        "usage": completion.get("usage"),
    }


class ChunkReshaper:
    """text_completion stream events -> chat.completion.chunk events, one in, one out."""

    def __init__(self) -> None:
        self.started: set[int] = set()  # choices whose first delta carried the role

    def event(self, data: bytes) -> bytes:
        if data.strip() == b"[DONE]":
            return b"data: [DONE]\n\n"
        try:
            chunk = json.loads(data)
        except ValueError:
            return b"data: " + data + b"\n\n"
        if not isinstance(chunk, dict) or "error" in chunk:
            return b"data: " + data + b"\n\n"  # an error event passes as it is
        choices = []
        for i, c in enumerate(chunk.get("choices") or []):
            index = c.get("index", i)
            delta: dict[str, Any] = {"content": c.get("text", "")}
            if index not in self.started:
                self.started.add(index)
                delta = {"role": "assistant", **delta}
            choices.append(
                {"index": index, "delta": delta, "finish_reason": c.get("finish_reason"),
                 "logprobs": None}
            )  # fmt: skip
        out = {
            "id": "chatcmpl-" + str(chunk.get("id", "")).removeprefix("cmpl-"),
            "object": "chat.completion.chunk",
            "created": chunk.get("created", int(time.time())),
            "model": chunk.get("model"),
            "choices": choices,
        }
        if chunk.get("usage") is not None:
            out["usage"] = chunk["usage"]
        return b"data: " + json.dumps(out).encode() + b"\n\n"
