"""chat_fallback's rules and reshaping (gateway/fallback.py), on answers as vLLM 0.32 gives
them; the real engine's side is tests/e2e/test_gateway_chat_fallback_real_engine.py."""

from __future__ import annotations

import json

import pytest
from vllm_supervisor.gateway import fallback

NO_TEMPLATE = json.dumps(
    {
        "error": {
            "message": "As of transformers v4.44, default chat template is no longer allowed, "
            "so you must provide a chat template if the tokenizer does not define one.",
            "type": "BadRequestError",
            "code": 400,
        }
    }
).encode()


def test_when_to_fall_back() -> None:
    assert fallback.wants_fallback_after(400, NO_TEMPLATE) == "template"
    other = json.dumps({"error": {"message": "max_tokens must be at least 1"}}).encode()
    assert fallback.wants_fallback_after(400, other) is None  # the client's own mistake
    empty = {"choices": [{"message": {"role": "assistant", "content": ""}}]}
    assert fallback.wants_fallback_after(200, json.dumps(empty).encode()) == "empty"
    tools = {"choices": [{"message": {"content": None, "tool_calls": [{"id": "x"}]}}]}
    assert fallback.wants_fallback_after(200, json.dumps(tools).encode()) is None
    text = {"choices": [{"message": {"content": "hi"}}]}
    assert fallback.wants_fallback_after(200, json.dumps(text).encode()) is None


def test_events_are_split_as_their_bytes_come() -> None:
    events = fallback.Events()
    assert events.feed(b'data: {"a": 1}\n\ndata: {"b"') == [b'{"a": 1}']
    assert events.feed(b": 2}\n") == []  # half a blank line: the event is not over
    assert events.feed(b"\n: a comment\n\ndata: [DONE]\n\n") == [b'{"b": 2}', b"[DONE]"]
    assert events.pending == b""


def test_which_stream_events_show_an_answer() -> None:
    """What on_failure holds back in a stream: vLLM 0.32's role-only first chunk and empty
    deltas; what it relays from: content, tool calls, reasoning, an error."""

    def chunk(**delta: object) -> bytes:
        return json.dumps(
            {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
        ).encode()

    assert not fallback.shows_answer(chunk(role="assistant", content=""))
    assert not fallback.shows_answer(chunk(content=""))
    assert not fallback.shows_answer(b'{"choices": [], "usage": {"total_tokens": 3}}')
    assert fallback.shows_answer(chunk(content="Hi"))
    assert fallback.shows_answer(chunk(tool_calls=[{"index": 0, "id": "call_1"}]))
    assert fallback.shows_answer(chunk(reasoning_content="Let me think"))
    assert fallback.shows_answer(chunk(reasoning="Let me think"))
    assert fallback.shows_answer(b'{"error": {"message": "engine dead", "code": 500}}')
    assert fallback.shows_answer(b"not json")  # not ours to judge: relayed


def test_tools_are_never_silently_dropped() -> None:
    with pytest.raises(fallback.NotRewritable, match="tools would be dropped"):
        fallback.check_rewritable({"model": "m", "messages": [], "tools": [{"type": "function"}]})
    fallback.check_rewritable({"model": "m", "messages": [], "tools": []})


def test_the_plain_text_flattening() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
        },
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    assert fallback.flatten(messages) == (
        "System: Be brief.\n\nUser: Hi there\n\nAssistant: Hello.\n\nUser: Bye\n\nAssistant:"
    )
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    with pytest.raises(fallback.NotRewritable, match="image_url part cannot be flattened"):
        fallback.flatten(image)


def test_the_completion_request_keeps_the_sampling_and_maps_the_rest() -> None:
    chat = {"model": "m", "messages": [], "max_completion_tokens": 5, "temperature": 0,
            "seed": 7, "stream": True, "logprobs": True, "top_logprobs": 3, "tools": [],
            "parallel_tool_calls": False}  # fmt: skip
    assert fallback.completion_request(chat, [1, 2]) == {
        "model": "m", "prompt": [1, 2], "temperature": 0, "seed": 7, "stream": True,
        "max_tokens": 5, "logprobs": 3,
    }  # fmt: skip


def test_answers_and_chunks_are_reshaped_into_chat() -> None:
    completion = {"id": "cmpl-9", "object": "text_completion", "created": 5, "model": "m",
                  "choices": [{"index": 0, "text": "ok", "finish_reason": "length"}],
                  "usage": {"total_tokens": 3}}  # fmt: skip
    assert fallback.chat_answer(completion) == {
        "id": "chatcmpl-9", "object": "chat.completion", "created": 5, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "length", "logprobs": None}],
        "usage": {"total_tokens": 3},
    }  # fmt: skip
    r = fallback.ChunkReshaper()
    first = json.loads(r.event(json.dumps({**completion, "usage": None}).encode())[6:])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "ok"}
    second = json.loads(r.event(json.dumps(completion).encode())[6:])
    assert second["choices"][0]["delta"] == {"content": "ok"} and second["usage"]
    assert r.event(b"[DONE]") == b"data: [DONE]\n\n"


def test_whole_relays_only_whole_events_and_keeps_the_rest() -> None:
    """gateway/relay.Whole: an error event must never follow half an event."""
    from vllm_supervisor.gateway.relay import Whole

    cut = Whole(sse=True)
    assert cut.feed(b'data: {"a": 1}\n\ndata: {"b"') == b'data: {"a": 1}\n\n'
    assert cut.pending == b'data: {"b"'
    assert cut.feed(b": 2}\n") == b""  # still no blank line
    assert cut.feed(b"\ndata: [DONE]\n\n") == b'data: {"b": 2}\n\ndata: [DONE]\n\n'
    assert cut.pending == b""
    whole = b"data: x\r\n\r\n"
    assert cut.feed(whole) is whole  # a read that ends on an event's end: not copied
    assert Whole(sse=False).feed(b"half") == b"half"
    big = Whole(sse=True)
    assert big.feed(b"x" * Whole.LIMIT) == b"x" * Whole.LIMIT  # no blank line for 1 MiB
