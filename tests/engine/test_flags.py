"""Flags that vLLM moved between releases, judged per installed version."""

from __future__ import annotations

import pytest
from vllm_supervisor.engine import flags


@pytest.mark.parametrize(
    ("flag", "version", "verdict"),
    [
        ("--disable-log-requests", (0, 10, 0), None),
        ("--disable-log-requests", (0, 11, 0), "warning"),
        ("--disable-log-requests", (0, 20, 0), "error"),
        ("--disable-log-requests", (0, 32, 0), "error"),
        ("--disable-log-requests", (0, 33, 0), "warning"),
        ("--task", (0, 11, 0), None),
        ("--task", (0, 20, 0), "error"),
        ("--swap-space", (0, 19, 9), None),
        ("--swap-space", (0, 32, 0), "error"),
        ("--guided-decoding-backend", (0, 11, 0), None),
        ("--guided-decoding-backend", (0, 20, 1), "error"),
        ("--enable-log-requests", (0, 32, 0), None),
    ],
)
def test_moved(flag: str, version: tuple[int, int, int], verdict: str | None) -> None:
    got = flags.moved_problem(flag, version)
    assert (got[0] if got else None) == verdict


def test_moved_message_says_what_to_do() -> None:
    got = flags.moved_problem("--guided-decoding-backend", (0, 32, 0))
    assert got == (
        "error",
        "--guided-decoding-backend is rejected by vLLM 0.32.0: use "
        "engine.structured_outputs_config",
    )


@pytest.mark.parametrize(
    ("token", "flag"),
    [
        ("--x=1", "--x"),
        ("--x", "--x"),
        ("value", None),
        ("-O3", None),
        ("--", None),
    ],
)
def test_flag_of(token: str, flag: str | None) -> None:
    assert flags.flag_of(token) == flag


def test_unrelated_flags_pass() -> None:
    assert flags.extra_arg_problem("--disable-uvicorn-access-log") is None
