"""GPU memory decisions against recorded NVML answers (written in NVML's shapes for these
tests; no GPU here): a start refused because memory is held by a foreign process, an orphan
or one of our models; memory released at once, slowly, or never."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from vllm_supervisor.gpu.memory import held_by, shortfalls, start_fix, wait_released
from vllm_supervisor.gpu.nvml import NoGpus, Recorded

GIB = 1024**3
TOTAL = 80 * GIB


def answers(used: int, holders: list[dict[str, Any]]) -> dict[str, Any]:
    device = {"index": 0, "uuid": "GPU-0", "name": "NVIDIA A100", "total": TOTAL, "used": used}
    return {"devices": [device], "holders": {"0": holders}}


def write_proc(root: Path, pid: int, pgid: int, cmdline: str, uid: int = 0) -> None:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stat").write_text(f"{pid} (x) S 1 {pgid} {pgid} 0\n")
    (d / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
    (d / "status").write_text(f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    # Model "llama": supervisor 100 runs warden 200, which leads the engine group 200.
    write_proc(root, 100, 100, "/opt/vllm-supervisor/venv/bin/python vllm-supervisor run llama")
    write_proc(root, 200, 200, "python -m vllm_supervisor.runtime.warden 100 -- python -m vllm")
    write_proc(root, 201, 200, "VLLM::EngineCore")
    write_proc(root, 300, 300, "VLLM::EngineCore")  # orphan: its group has no warden
    write_proc(root, 400, 400, "python3 train.py", uid=0)
    return root


def test_enough_free_memory_starts(proc: Path) -> None:
    gpus = Recorded(answers(4 * GIB, [{"pid": 400, "used": 4 * GIB}]))
    assert shortfalls(gpus, (0,), 0.9, None, proc) == []
    assert shortfalls(NoGpus("no NVIDIA GPU"), (0,), 0.9) == []  # a CPU host: nothing to check
    assert shortfalls(gpus, (), 0.9, None, proc) == []  # a CPU engine uses no GPU


@pytest.mark.parametrize(
    ("pid", "named", "fix"),
    [
        (
            201,
            "pid 201 (model llama, 30.0 GiB)",
            "deactivate llama (vllmctl deactivate, or --swap)",
        ),
        (300, "pid 300 (orphaned vLLM engine, 30.0 GiB)", "kill the orphaned vLLM engine"),
        (400, "pid 400 (root's python3 train.py, 30.0 GiB)", "stop the other process"),
    ],
)
def test_a_start_is_refused_naming_who_holds_the_memory(
    proc: Path, pid: int, named: str, fix: str
) -> None:
    gpus = Recorded(answers(30 * GIB, [{"pid": pid, "used": 30 * GIB}]))
    found = shortfalls(gpus, (0,), 0.9, None, proc)
    assert len(found) == 1
    text = found[0].describe()
    assert text.startswith("GPU 0 has 50.0 GiB free; the model needs 72.0 GiB")
    assert named in text
    assert fix in start_fix(found) and "lower engine.gpu_memory_utilization" in start_fix(found)


class Timeline:
    """NVML answers that change as the (fake) clock runs: [(from_second, answers)]."""

    def __init__(self, steps: list[tuple[float, dict[str, Any]]]) -> None:
        self.steps, self.now = steps, 0.0

    def view(self) -> Recorded:
        return Recorded([a for t, a in self.steps if t <= self.now][-1])

    @property
    def available(self) -> bool:
        return True

    @property
    def reason(self) -> str:
        return ""

    def devices(self) -> Any:
        return self.view().devices()

    def holders(self, index: int) -> Any:
        return self.view().holders(index)

    async def sleep(self, seconds: float) -> None:
        self.now += seconds

    def clock(self) -> float:
        return self.now


HELD = answers(62 * GIB, [{"pid": 201, "used": 60 * GIB}, {"pid": 400, "used": 2 * GIB}])
PART = answers(40 * GIB, [{"pid": 400, "used": 2 * GIB}])  # the process is gone, memory not yet
FREE = answers(2 * GIB, [{"pid": 400, "used": 2 * GIB}])


@pytest.mark.parametrize(
    ("steps", "waited", "note"),
    [
        ([(0, FREE)], 0.0, None),  # released at once (the stop's proof of death came first)
        ([(0, HELD), (1.0, PART), (2.0, FREE)], 2.0, None),  # slowly: polled every 250 ms
        ([(0, HELD)], 30.0, "still held after 30 s by the old engine's processes (pids 201)"),
        ([(0, PART)], 30.0, "not back after 30 s although the old engine's processes are gone"),
    ],
)
def test_waiting_for_an_old_engines_memory(
    proc: Path, steps: list[tuple[float, dict[str, Any]]], waited: float, note: str | None
) -> None:
    held = held_by(Recorded(HELD), 200, proc)
    assert held.per_gpu == {0: 60 * GIB} and held.free_before == {0: TOTAL - 62 * GIB}
    t = Timeline(steps)
    got = asyncio.run(wait_released(t, held, 30.0, t.clock, t.sleep, proc))  # type: ignore[arg-type]
    assert t.now == pytest.approx(waited, abs=0.26)
    if note is None:
        assert got is None
    else:
        assert got is not None and note in got
