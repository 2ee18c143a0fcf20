"""The group link's signing (issue 21): a request is taken once, from the group's own key,
within the time window; everything else is refused with a reason. An answer is bound to the
request it answers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vllm_supervisor.protocol import nodes as proto

KEY = b"k" * 32


def signed(
    key: bytes = KEY,
    group: str = "big",
    body: bytes = b"{}",
    now: float = 1000.0,
    path: str = proto.SYNC,
) -> dict[str, str]:
    return proto.sign_request(key, group, "POST", path, body, now)


def verifier(now: float = 1000.0) -> proto.Verifier:
    return proto.Verifier(KEY, "big", clock=lambda: now)


def test_the_groups_own_request_is_taken_once() -> None:
    v = verifier()
    h = signed()
    assert v.check("POST", proto.SYNC, h, b"{}") is None
    assert v.check("POST", proto.SYNC, h, b"{}") == "replayed request"


def test_a_wrong_key_a_changed_body_path_or_method_is_refused() -> None:
    v = verifier()
    assert "bad signature" in (v.check("POST", proto.SYNC, signed(b"x" * 32), b"{}") or "")
    assert "bad signature" in (v.check("POST", proto.SYNC, signed(), b'{"a":1}') or "")
    assert "bad signature" in (v.check("POST", proto.LEAVE, signed(), b"{}") or "")
    assert "bad signature" in (v.check("GET", proto.SYNC, signed(), b"{}") or "")
    assert v.check("POST", proto.SYNC, {}, b"{}") == "unsigned request"


def test_another_groups_key_holder_is_refused() -> None:
    assert "signed for group 'other'" in (
        verifier().check("POST", proto.SYNC, signed(group="other"), b"{}") or ""
    )


def test_old_future_and_nan_times_are_refused() -> None:
    for when in (1000.0 - 31, 1000.0 + 31):
        assert "check NTP" in (verifier().check("POST", proto.SYNC, signed(now=when), b"{}") or "")
    h = signed()
    h[proto.H_TIME] = "nan"  # re-signed below: only the time is wrong
    h[proto.H_SIG] = proto._mac(KEY, "POST", proto.SYNC, "big", "nan", h[proto.H_NONCE], body=b"{}")
    assert "check NTP" in (verifier().check("POST", proto.SYNC, h, b"{}") or "")
    assert math.isnan(float("nan"))


def test_an_answer_is_bound_to_its_request() -> None:
    a = proto.sign_answer(KEY, "n1", 200, b"{}")
    assert a != proto.sign_answer(KEY, "n2", 200, b"{}")
    assert a != proto.sign_answer(KEY, "n1", 200, b'{"x":1}')


@given(
    st.dictionaries(
        st.sampled_from([proto.H_GROUP, proto.H_TIME, proto.H_NONCE, proto.H_SIG, "x"]),
        st.text(max_size=80),
    ),
    st.binary(max_size=200),
)
def test_forged_headers_never_pass(headers: dict[str, str], body: bytes) -> None:
    assert verifier().check("POST", proto.SYNC, headers, body) is not None


def test_a_signed_message_is_checked_field_by_field() -> None:
    from vllm_supervisor.protocol.jsonbody import BadBody

    good = b'{"epoch": "ab.1", "state": "ready", "held": false, "want": true, "reason": ""}'
    assert proto.message(proto.SYNC, good)["want"] is True
    for bad in (
        b'{"epoch": "ab.1", "state": "ready", "held": false, "reason": ""}',  # no want
        b'{"epoch": "ab.1", "state": "ready", "held": false, "want": 1, "reason": ""}',
        b'{"epoch": "ab.1", "state": "gone", "held": false, "want": true, "reason": ""}',
        b'{"epoch": NaN, "state": "ready", "held": false, "want": true, "reason": ""}',
        b"[1, 2]",
        b"{",
    ):
        with pytest.raises(BadBody):
            proto.message(proto.SYNC, bad)
    assert proto.message(proto.LEAVE, b'{"rank": 1, "reason": "SIGTERM"}')["rank"] == 1
    with pytest.raises(BadBody):
        proto.message(proto.LEAVE, b'{"rank": true, "reason": "SIGTERM"}')  # a bool is no rank
