"""GPU memory holders, against recorded NVML answers and a /proc written for the test: our
model's engine, an orphaned vLLM engine, a foreign process, and an amount NVML cannot read."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from vllm_supervisor.ctl.commands import gpu_cell
from vllm_supervisor.ctl.gpus import cmd_gpus
from vllm_supervisor.gpu.holders import group_memory, pgid_of, processes
from vllm_supervisor.gpu.nvml import NoGpus, Recorded, open_gpus
from vllm_supervisor.runtime.metrics import supervisor_metrics

GIB = 1024**3
H200 = "NVIDIA H200"
# Shaped as NVML answers them (nvmlDeviceGetMemoryInfo, nvmlDeviceGetComputeRunningProcesses:
# usedGpuMemory None when NVML cannot tell); written for this test, not captured on a GPU.
ANSWERS = {
    "devices": [
        {"index": 0, "uuid": "GPU-aaaa", "name": H200, "total": 140 * GIB, "used": 90 * GIB},
        {"index": 1, "uuid": "GPU-bbbb", "name": H200, "total": 140 * GIB, "used": 1 * GIB},
    ],
    "holders": {
        "0": [
            {"pid": 501, "used": 60 * GIB},  # EngineCore of model "qwen" (group 500)
            {"pid": 777, "used": 20 * GIB},  # VLLM::EngineCore left by a killed server
            {"pid": 888, "used": 10 * GIB},  # someone's notebook
        ],
        "1": [{"pid": 502, "used": None}],  # qwen's worker on GPU 1, amount unknown
    },
}  # fmt: skip
PROCS = {
    501: (500, "VLLM::EngineCore", 990),
    502: (500, "VLLM::Worker_TP1", 990),
    777: (700, "VLLM::EngineCore", 990),
    888: (888, "python3 notebook.py", 0),
}


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    for pid, (pgid, cmd, uid) in PROCS.items():
        d = root / str(pid)
        d.mkdir(parents=True)
        comm = cmd.split()[0][:15]
        (d / "stat").write_text(f"{pid} ({comm}) S 1 {pgid} {pgid} 0 -1 4194560 0 0\n")
        (d / "cmdline").write_bytes(cmd.replace(" ", "\0").encode() + b"\0")
        (d / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    return root


def test_pgid_survives_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    d = tmp_path / "42"
    d.mkdir()
    (d / "stat").write_text("42 (a (b) c) S 1 40 40 0 -1\n")
    assert pgid_of(42, tmp_path) == 40 and pgid_of(43, tmp_path) is None


def test_each_holder_is_our_model_an_orphan_or_foreign(proc: Path) -> None:
    got = {p.pid: p for p in processes(Recorded(ANSWERS), {500: "qwen"}, proc)}
    assert (got[501].kind, got[501].model, got[501].gpu) == ("model", "qwen", 0)
    assert (got[502].kind, got[502].model, got[502].gpu, got[502].used) == (
        "model",
        "qwen",
        1,
        None,
    )
    assert (got[777].kind, got[777].model) == ("orphan", None)
    assert (got[888].kind, got[888].user, got[888].command) == (
        "foreign",
        "root",
        "python3 notebook.py",
    )
    # Without the instance (its supervisor gone), its own engine is an orphan too.
    assert {p.kind for p in processes(Recorded(ANSWERS), {}, proc) if p.pid in (501, 502)} == {
        "orphan"
    }


def test_group_memory_sums_a_models_processes_per_gpu(proc: Path) -> None:
    assert group_memory(Recorded(ANSWERS), 500, proc) == {0: 60 * GIB, 1: 0}
    assert group_memory(Recorded(ANSWERS), 123, proc) == {}
    assert gpu_cell({"0": 60 * GIB, "1": 3 * GIB // 2}) == "0:60.0G,1:1.5G"
    assert gpu_cell(None) == "-" and gpu_cell({}) == "-"


def test_metrics_carry_gpu_memory_per_gpu() -> None:
    text = supervisor_metrics(
        {"model": "m", "state": "ready", "restarts": 0, "gpu_memory": {"0": 5, "1": 7}}
    )
    assert 'vllm_supervisor_gpu_memory_bytes{model="m",gpu="1"} 7' in text
    assert "gpu_memory" not in supervisor_metrics({"model": "m", "state": "ready", "restarts": 0})


def args(tmp_path: Path, as_json: bool = False) -> argparse.Namespace:
    return argparse.Namespace(json=as_json, socket_dir=str(tmp_path / "no-sockets"))


def test_vllmctl_gpus_names_holders(
    tmp_path: Path, proc: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vllm_supervisor.ctl.gpus.engine_groups", lambda bases: {500: "qwen"})
    assert cmd_gpus(args(tmp_path), Recorded(ANSWERS), proc) == 0
    out = capsys.readouterr().out
    assert "GPU 0  NVIDIA H200  GPU-aaaa  90.0G / 140.0G used" in out
    assert "model qwen" in out and "ORPHANED vLLM engine" in out and "foreign process" in out
    assert cmd_gpus(args(tmp_path, as_json=True), Recorded(ANSWERS), proc) == 0
    data = json.loads(capsys.readouterr().out)
    held = {p["pid"]: p for g in data["gpus"] for p in g["processes"]}
    assert held[777]["kind"] == "orphan" and held[501]["model"] == "qwen"
    assert [g["uuid"] for g in data["gpus"]] == ["GPU-aaaa", "GPU-bbbb"]


def test_without_a_driver_one_line_and_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    none = NoGpus("no NVIDIA GPU: NVML Shared Library Not Found")
    assert cmd_gpus(args(tmp_path), none) == 0
    assert capsys.readouterr().out == "vllmctl: no NVIDIA GPU: NVML Shared Library Not Found\n"
    assert cmd_gpus(args(tmp_path, as_json=True), none) == 0
    assert json.loads(capsys.readouterr().out) == {"gpus": [], "reason": none.reason}


def test_this_machine_has_no_nvidia_driver_and_nothing_crashes() -> None:
    gpus = open_gpus()  # the real NVML binding, no driver here (a GPU host answers available)
    if gpus.available:
        pytest.skip("an NVIDIA driver answers here: covered by the gpu marker's tests")
    assert gpus.reason.startswith("no NVIDIA GPU") and gpus.devices() == []
