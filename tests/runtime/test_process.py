"""Spawning through the warden, the batched log pump, and two-stage group stops."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest
from vllm_supervisor.runtime import process

from tests.procs import group_members


class Sink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, lines: list[str], text: str) -> None:
        assert text == "\n".join(lines)
        self.lines.extend(lines)


async def run(code: str) -> tuple[process.Exit, list[str], process.Engine]:
    sink = Sink()
    eng = await process.spawn([sys.executable, "-c", code], {"PATH": "/usr/bin:/bin"}, sink)
    ex = await eng.wait()
    assert await eng.kill() == []
    return ex, sink.lines, eng


async def test_lines_exit_code_and_partial_last_line() -> None:
    ex, lines, _ = await run(
        "import sys; print('a'); print('b\\r'); sys.stdout.write('tail');sys.exit(3)"
    )
    assert ex == process.Exit(3, None) and ex.describe() == "exited with code 3"
    assert lines == ["a", "b", "tail"]


async def test_long_lines_are_cut_not_fatal() -> None:
    n = process.MAX_LINE * 5
    ex, lines, _ = await run(f"print('x' * {n}); print('after'); print('y' * {n}, end='')")
    assert ex.code == 0
    assert lines[0] == "x" * process.MAX_LINE + process.CUT
    assert lines[1] == "after"
    assert lines[2] == "y" * process.MAX_LINE + process.CUT and len(lines) == 3


async def test_utf8_split_across_reads_and_invalid_bytes() -> None:
    ex, lines, _ = await run(
        "import sys; b = sys.stdout.buffer; b.write('é'.encode()[:1]);"
        "b.flush(); import time; time.sleep(0.05);"
        "b.write('é'.encode()[1:] + b'\\n\\xff\\n'); b.flush()"
    )
    assert ex.code == 0
    assert lines == ["é", "\ufffd"]


async def test_a_failing_line_handler_is_reported_once_and_the_pipe_still_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[str] = []

    def handler(lines: list[str], text: str) -> None:
        if "bad" in text:
            raise UnicodeEncodeError("ascii", text, 0, 1, "ordinal not in range(128)")
        seen.extend(lines)

    # More than the pipe holds after the faults: a pump that stopped reading would hang it.
    code = (
        "import sys, time\n"
        "for i in range(3): print('bad', flush=True); time.sleep(0.05)\n"
        f"for _ in range({process.PIPE_SIZE // 50}): sys.stdout.write('y' * 99 + '\\n')\n"
        "print('last')"
    )
    eng = await process.spawn([sys.executable, "-c", code], {"PATH": "/usr/bin:/bin"}, handler)
    assert (await asyncio.wait_for(eng.wait(), 30)).code == 0
    assert await eng.kill() == []
    assert seen[-1] == "last" and seen.count("y" * 99) == process.PIPE_SIZE // 50
    err = capsys.readouterr().err
    assert err.count("log pump: handling the engine's lines failed") == 1, err
    assert "UnicodeEncodeError" in err


async def test_signal_exit_is_mirrored_by_the_warden() -> None:
    ex, _, _ = await run("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert ex == process.Exit(None, signal.SIGKILL) and ex.describe() == "killed by SIGKILL"


async def test_stop_escalates_when_sigterm_is_ignored_and_takes_grandchildren() -> None:
    code = (
        "import os, signal, time, subprocess, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('up', flush=True)\ntime.sleep(60)\n"
    )
    sink = Sink()
    eng = await process.spawn([sys.executable, "-c", code], {"PATH": "/usr/bin:/bin"}, sink)
    while "up" not in sink.lines:
        await asyncio.sleep(0.02)
    assert len(group_members(eng.pgid)) == 3  # warden, child, grandchild
    escalated, left = await eng.stop(grace=0.3)
    assert escalated and left == [] and group_members(eng.pgid) == []


async def test_stop_without_escalation() -> None:
    sink = Sink()
    eng = await process.spawn(
        [sys.executable, "-c", "import time; print('up', flush=True);time.sleep(60)"],
        {"PATH": "/usr/bin:/bin"},
        sink,
    )
    while "up" not in sink.lines:
        await asyncio.sleep(0.02)
    escalated, left = await eng.stop(grace=5)
    assert not escalated and left == []
    assert (await eng.wait()).signal == signal.SIGTERM


async def test_the_engine_gets_its_environment_as_given() -> None:
    """The warden needs the supervisor's folder on PYTHONPATH; the engine must not get it
    (before, it got the package's own folder, its subpackages as top-level modules)."""
    code = "import os; print(repr(os.environ.get('PYTHONPATH'))); print(os.environ.get('X'))"
    sink = Sink()
    eng = await process.spawn([sys.executable, "-c", code], {"PATH": "/usr/bin:/bin",
                                                            "X": "y"}, sink)  # fmt: skip
    await eng.wait()
    assert await eng.kill() == []
    assert sink.lines == ["None", "y"]
    sink = Sink()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "/opt/mine"}
    eng = await process.spawn([sys.executable, "-c", code], env, sink)
    await eng.wait()
    assert await eng.kill() == []
    assert sink.lines == ["'/opt/mine'", "None"]
