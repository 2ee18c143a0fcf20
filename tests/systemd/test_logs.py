"""Journal lines: sd-daemon priorities, and tracebacks without local variables."""

from __future__ import annotations

import io

import pytest
from vllm_supervisor.systemd import logs


def test_engine_priorities() -> None:
    assert logs.engine_priority("(APIServer pid=1) INFO 11-22 [a.py:1] x") == 6
    assert logs.engine_priority("(EngineCore pid=2) WARNING 11-22 [a.py:1] x") == 4
    assert logs.engine_priority("(Worker pid=3) ERROR 11-22 [a.py:1] x") == 3
    assert logs.engine_priority("DEBUG 11-22 [a.py:1] x") == 7  # 0.11: no process prefix
    assert logs.engine_priority("INFO:     Application startup complete.") == 6
    assert logs.engine_priority("Traceback (most recent call last):") == 3
    assert logs.engine_priority("OSError: [Errno 98] Address already in use") == 3
    assert logs.engine_priority('  File "x.py", line 1') == 6


def test_engine_line_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    w = logs.EngineLineWriter("qwen", out)
    mixed = [
        "(Worker pid=3) ERROR 11-22 [a.py:1] boom",
        "(Worker pid=3) INFO 11-22 [a.py:2] ok",
        "INFO:     Started server process",
    ]
    w(mixed, "\n".join(mixed))
    assert out.getvalue() == (
        "<3>[qwen] (Worker pid=3) ERROR 11-22 [a.py:1] boom\n"
        "<6>[qwen] (Worker pid=3) INFO 11-22 [a.py:2] ok\n"
        "<6>[qwen] INFO:     Started server process\n"
    )

    # The common case: every line at vLLM's INFO level goes out without classifying any
    # line (the log-pump benchmark depends on it).
    def classify(line: str) -> int:
        raise AssertionError(f"the fast path classified {line!r}")

    monkeypatch.setattr(logs, "engine_priority", classify)
    out.seek(0)
    out.truncate()
    fast = ["(APIServer pid=1) INFO 11-22 [a.py:1] a", "(EngineCore pid=2) INFO 11-22 [b.py:2] b"]
    w(fast, "\n".join(fast))
    assert out.getvalue() == (
        "<6>[qwen] (APIServer pid=1) INFO 11-22 [a.py:1] a\n"
        "<6>[qwen] (EngineCore pid=2) INFO 11-22 [b.py:2] b\n"
    )


def test_a_logged_prompt_cannot_lower_an_error_line() -> None:
    """vLLM logs prompts with --enable-log-requests: one holding ' INFO ' once made the
    batch's count of ' INFO ' equal its line count, and the ERROR line went out as info."""
    out = io.StringIO()
    batch = [
        "(APIServer pid=1) INFO 11-22 [logger.py:1] prompt: 'say INFO here'",
        "(EngineCore pid=2) ERROR 11-22 [core.py:9] boom",
    ]
    logs.EngineLineWriter("m", out)(batch, "\n".join(batch))
    error = out.getvalue().splitlines()[1]
    assert error == "<3>[m] (EngineCore pid=2) ERROR 11-22 [core.py:9] boom"


@pytest.mark.parametrize(
    "line",
    [
        "(X pid=1) WARNING 11-22 w",
        "(X pid=1) ERROR 11-22 e",
        "(X pid=1) CRITICAL 11-22 c",
        "(X pid=1) DEBUG 11-22 d",
        "WARNING:  uvicorn",
        "ERROR:    uvicorn",
        "CRITICAL: uvicorn",
        "Traceback (most recent call last):",
        "OSError: [Errno 98] in use",
        "torch.OutOfMemoryError: CUDA",
        "ValueError: x",
        "KeyboardInterrupt",
        "SomeException: x",
    ],
)
def test_every_line_above_info_holds_a_gate_word(line: str) -> None:
    priority = logs.engine_priority(line)
    assert priority != 6 or line == "KeyboardInterrupt", line
    if priority != 6:
        assert any(w in line for w in logs.NOT_INFO), line


def test_events_and_tracebacks_without_locals() -> None:
    out = io.StringIO()
    logs.setup(out)
    log = logs.get()
    log.info("state", model="m", reason="two words")
    secret = "sk-live-123"  # noqa: F841 - a local that must not reach the journal
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed", model="m")
    text = out.getvalue()
    assert text.startswith("<6>state model=m reason='two words'\n")
    assert "<3>failed model=m\n<3>  Traceback (most recent call last):" in text
    assert "RuntimeError: boom" in text and "sk-live-123" not in text
