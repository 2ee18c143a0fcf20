"""ctl/golden.py and runtime/golden.py's checks: what fails an upgrade (the candidate's error,
invalid JSON, a broken tool call) and what only warns (different text; both engines fail)."""

from __future__ import annotations

import pytest
from vllm_supervisor.ctl.golden import compare
from vllm_supervisor.runtime.golden import SCHEMA, TOOL, fits

GOOD = {
    "chat": {"text": "red green blue", "error": None},
    "json_schema": {"text": '{"colour":"red","bright":true}', "error": None},
    "tokenize": {"count": 9, "error": None},
}


def test_the_same_answers_pass() -> None:
    r = compare(GOOD, GOOD)
    assert not r.failed and "tool_call: skipped (no tool-call parser)" in r.lines


def test_a_different_text_only_warns() -> None:
    new = {**GOOD, "chat": {"text": "red", "error": None}}
    r = compare(GOOD, new)
    assert not r.failed and any("differs (warning)" in line for line in r.lines)


def test_an_error_of_the_candidate_fails_and_of_both_warns() -> None:
    broken = {**GOOD, "json_schema": {"text": "{", "error": "not JSON"}}
    assert compare(GOOD, broken).failed
    both = compare(broken, broken)
    assert not both.failed and any("fails on both" in line for line in both.lines)
    assert compare(GOOD, {}).failed and compare(GOOD, {**GOOD, "tokenize": None}).failed


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ({"colour": "red", "bright": True}, True),
        ({"colour": "pink", "bright": True}, False),
        ({"colour": "red", "bright": 1}, False),
        ({"colour": "red"}, False),
        ({"colour": "red", "bright": False, "x": 1}, False),
        (["red"], False),
        (None, False),
    ],
)
def test_fits_the_schema(value: object, ok: bool) -> None:
    assert fits(value, SCHEMA) is ok


def test_fits_the_tool() -> None:
    params = TOOL["function"]["parameters"]
    assert fits({"city": "Oslo"}, params) and not fits({"city": "Rome"}, params)
