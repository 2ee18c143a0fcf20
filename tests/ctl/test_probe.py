"""`vllmctl probe`'s json_schema check judges what an engine answers, not how it pads it.

Issue 20: a healthy engine whose grammar allows any whitespace padded it to the 64-token cap,
and the probe called that a failure. The answers below are the shapes vLLM returns; the real
engine runs the probe in tests/e2e/test_admin_real_engine.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from vllm_supervisor.ctl import probe


class Answers(probe.EngineClient):
    """An EngineClient whose chat completion is TEXT with FINISH (no socket)."""

    def __init__(self, text: str, finish: str) -> None:
        super().__init__("127.0.0.1", 1, ["m"], None, 1.0)
        self.text, self.finish = text, finish
        self.sent: dict[str, Any] = {}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.sent = body or {}
        msg = {"role": "assistant", "content": self.text}
        return {"choices": [{"message": msg, "finish_reason": self.finish}]}


def test_a_whole_document_passes() -> None:
    t = Answers('{"ok": true}', "stop")
    assert probe._json_schema(t) == '{"ok": true}'
    assert t.sent["response_format"]["json_schema"]["schema"] == probe.SCHEMA


@pytest.mark.parametrize("text", ["{\n\n" + " " * 60, '{ "ok" :' + "\n" * 55, '{"ok": fal  '])
def test_a_constrained_answer_cut_while_padding_whitespace_passes(text: str) -> None:
    got = probe._json_schema(Answers(text, "length"))
    assert got.startswith("constrained, cut at max_tokens after")


@pytest.mark.parametrize(
    ("text", "finish"),
    [
        ("Sure! Here is JSON: {", "length"),  # free text: no grammar held it
        ('{"ok": "yes"', "length"),  # not a prefix of any document of the schema
        ("{\n\n   ", "stop"),  # stopped, yet not JSON
        ('{"ok": true, "x": 1}', "stop"),  # parses, but not the schema
        ("   ", "length"),  # whitespace only
    ],
)
def test_what_no_grammar_would_allow_still_fails(text: str, finish: str) -> None:
    with pytest.raises(ValueError):
        probe._json_schema(Answers(text, finish))
