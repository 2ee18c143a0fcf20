"""The NVML decisions on a real NVIDIA GPU: figures NVML reports, a helper process that holds
memory through torch named as a foreign holder, and that memory released once it is gone.
Marked `gpu`: skipped where NVML finds no GPU (CI here); run them on the GPU test machine with
VSUP_TEST_CUDA_PYTHON pointing at a Python whose torch has CUDA (and, for sleep mode,
VSUP_TEST_CUDA_VLLM_VENV and VSUP_TEST_GPU_MODEL)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vllm_supervisor.ctl.client import Client
from vllm_supervisor.gpu.holders import processes
from vllm_supervisor.gpu.memory import held_by, shortfalls, wait_released
from vllm_supervisor.gpu.nvml import Gpus, open_gpus

from tests.e2e.engine_proc import free_port
from tests.e2e.supervisor_proc import SupervisorProc
from tests.helpers import write_config

pytestmark = pytest.mark.gpu
GIB = 1024**3
HOLD = "import torch, time; x = torch.empty(2 * 1024**3, dtype=torch.uint8, device='cuda'); "
HOLD += "print('held', flush=True); time.sleep(600)"


@pytest.fixture(scope="module")
def gpus() -> Gpus:
    found = open_gpus()
    if not found.available:
        pytest.skip(f"{found.reason}: the gpu tier runs on a host with an NVIDIA GPU")
    return found


@pytest.fixture
def helper() -> Iterator[subprocess.Popen[str]]:
    python = os.environ.get("VSUP_TEST_CUDA_PYTHON")
    if not python:
        pytest.skip("VSUP_TEST_CUDA_PYTHON (a Python whose torch has CUDA) is not set")
    proc = subprocess.Popen(
        [python, "-c", HOLD], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield proc
    with pytest.raises(ProcessLookupError):  # the test took it down already, or we do now
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        os.killpg(proc.pid, 0)


def test_nvml_reports_devices_and_their_memory(gpus: Gpus) -> None:
    devices = gpus.devices()
    assert devices and all(0 < d.used <= d.total for d in devices)
    assert all(d.uuid.startswith(("GPU-", "MIG-")) for d in devices)
    for d in devices:
        print(f"GPU {d.index} {d.name} {d.uuid}: {d.used / GIB:.2f} / {d.total / GIB:.2f} GiB")


def test_a_torch_helper_is_a_foreign_holder_and_blocks_a_start(
    gpus: Gpus, helper: subprocess.Popen[str]
) -> None:
    held = [p for p in processes(gpus) if p.pid == helper.pid]
    assert held and held[0].kind == "foreign" and (held[0].used or 0) >= 2 * GIB
    device = next(d for d in gpus.devices() if d.index == held[0].gpu)
    # A model asking for all but 1 GiB of that GPU cannot start while the helper holds 2 GiB.
    util = (device.total - GIB) / device.total
    [short] = shortfalls(gpus, (device.index,), util)
    assert f"pid {helper.pid} (" in short.describe()


def test_memory_is_back_after_the_holder_is_killed(
    gpus: Gpus, helper: subprocess.Popen[str]
) -> None:
    held = held_by(gpus, helper.pid)  # the helper leads its own process group
    assert sum(held.per_gpu.values()) >= 2 * GIB
    start = time.monotonic()
    os.killpg(helper.pid, signal.SIGKILL)
    helper.wait(10)
    assert asyncio.run(wait_released(gpus, held, 30.0, time.monotonic)) is None
    print(f"memory back {time.monotonic() - start:.2f} s after SIGKILL")


def test_sleep_frees_the_memory_and_a_wake_serves_the_same_engine(
    gpus: Gpus, tmp_path: Path
) -> None:
    """Sleep mode on a CUDA engine, through the supervisor: NVML sees the memory drop, the
    wake serves from the same process, and both are timed against the cold start.
    VSUP_TEST_CUDA_VLLM_VENV: a venv with a CUDA vLLM; VSUP_TEST_GPU_MODEL: a model folder
    (head_dim >= 64 for CUDA kernels)."""
    venv, folder = os.environ.get("VSUP_TEST_CUDA_VLLM_VENV"), os.environ.get("VSUP_TEST_GPU_MODEL")
    if not venv or not folder:
        pytest.skip("VSUP_TEST_CUDA_VLLM_VENV and VSUP_TEST_GPU_MODEL are not set")
    cfg = write_config(
        tmp_path,
        f"""
    models:
      m:
        model: {folder}
        port: {free_port()}
        venv: {venv}
        offline: true
        deactivate: sleep
        engine: {{gpu_memory_utilization: 0.2, enforce_eager: true, max_model_len: 512}}
    """,
    )
    sup = SupervisorProc("m", cfg, tmp_path / "sup")
    try:
        sup.wait_for("READY", timeout=600)
        cold = time.monotonic() - sup.started

        def state() -> dict[str, Any]:
            return Client([sup.runtime_dir], "m", timeout=10).get_json("/v1/state")

        before = state()
        held = sum(before["gpu_memory"].values())
        t0 = time.monotonic()
        assert sup.ctl("deactivate", "m", "--drain-timeout", "0").returncode == 0
        asleep_s = time.monotonic() - t0
        st = state()
        assert st["state"] == "sleeping" and "sleep freed" in st["reason"], st["reason"]
        left = sum(st["gpu_memory"].values())
        t0 = time.monotonic()
        assert sup.ctl("activate", "m").returncode == 0
        woke = time.monotonic() - t0
        after = state()
        assert after["state"] == "ready" and after["pid"] == before["pid"]
        print(
            f"held {held / GIB:.2f} GiB, asleep {left / GIB:.2f} GiB; cold start {cold:.1f} s, "
            f"sleep {asleep_s:.2f} s, wake {woke:.2f} s ({woke / cold:.3f}x the cold start)"
        )
        assert left < held / 2
    finally:
        assert sup.cleanup() == [], "processes left behind"
