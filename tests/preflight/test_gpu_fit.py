"""Does a model fit its GPUs: `gpus:` against the machine, and the memory estimate against
gpu_memory_utilization, on recorded NVML answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.engine.detect import EngineInfo
from vllm_supervisor.gpu.estimate import Estimate
from vllm_supervisor.gpu.nvml import NoGpus, Recorded
from vllm_supervisor.preflight.gpu_fit import (
    engine_gpus,
    fit_problems,
    model_estimate,
    resolve,
    sleep_ram_problems,
)

from tests.gpu.test_estimate import MISTRAL_7B, write_safetensors
from tests.helpers import fake_venv, write_config

GIB = 1024**3


def engine(distribution: str = "vllm") -> EngineInfo:
    v = Path("/opt/e")
    return EngineInfo(v, v / "bin/python", distribution, "0.33.0", "0.1", v / "x.dist-info")


def gpus(*totals_gib: int) -> Recorded:
    devices = [
        {"index": i, "uuid": f"GPU-0000000{i}", "name": "NVIDIA L4", "total": t * GIB, "used": 0}
        for i, t in enumerate(totals_gib)
    ]
    return Recorded({"devices": devices})


def model(tmp_path: Path, body: str) -> ModelConfig:
    folder = tmp_path / "mistral"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(MISTRAL_7B))
    write_safetensors(folder / "model.safetensors", {"w": 1024})  # the header says 1 KiB
    reg = load_registry(
        write_config(tmp_path, f"models:\n  m:\n    model: {folder}\n    port: 8001\n{body}")
    )
    return reg.models["m"]


def test_which_gpus_an_engine_uses(tmp_path: Path) -> None:
    assert engine_gpus(model(tmp_path, ""), engine()) == (0,)
    tp = model(tmp_path, "    engine: {tensor_parallel_size: 2}\n")
    assert engine_gpus(tp, engine()) == (0, 1)
    assert engine_gpus(model(tmp_path, "    gpus: [3]\n"), engine()) == (3,)
    assert engine_gpus(tp, engine("vllm-cpu")) == ()  # a CPU engine uses none


def test_a_model_that_fits_has_no_problem(tmp_path: Path) -> None:
    cfg = model(tmp_path, "    engine: {max_model_len: 8192}\n")
    est = model_estimate(cfg)
    assert isinstance(est, Estimate) and est.kv_cache == 1 * GIB  # 8192 x 128 KiB
    assert fit_problems(cfg, engine(), gpus(24), est) == []
    assert fit_problems(cfg, engine(), NoGpus("no NVIDIA GPU"), est) == []  # nothing to compare


def test_an_estimate_over_the_budget_is_a_warning_naming_the_figures(tmp_path: Path) -> None:
    cfg = model(tmp_path, "    engine: {gpu_memory_utilization: 0.5}\n")  # 32768 tokens: 4 GiB
    est = model_estimate(cfg)
    [p] = fit_problems(cfg, engine(), gpus(12), est)  # 0.5 x 12 GiB = 6 GiB < 6.0 + ...
    assert p.severity == "warning" and p.key == "models.m.engine"
    assert "exceeds gpu_memory_utilization x memory = 6.0 GiB" in p.message
    assert "KV cache 4.0 GiB (32768 tokens x 128 KiB)" in p.message


def test_gpus_are_checked_against_the_machine(tmp_path: Path) -> None:
    cfg = model(tmp_path, "    gpus: [1, 4]\n")
    [p] = fit_problems(cfg, engine(), gpus(24, 24), model_estimate(cfg))
    assert (
        p.key == "models.m.gpus"
        and p.message == "no GPU 4 here (GPUs: 0 (GPU-00000000), 1 (GPU-00000001))"
    )
    assert p.severity == "error"


def test_gpus_by_uuid_resolve_to_nvml_indexes(tmp_path: Path) -> None:
    machine = gpus(24, 24)
    cfg = model(tmp_path, "    gpus: [GPU-00000001, 0]\n")
    assert cfg.gpus == ("GPU-00000001", 0)
    assert resolve(engine_gpus(cfg, engine()), machine) == ((1, 0), [])
    assert fit_problems(cfg, engine(), machine, model_estimate(cfg)) == []
    gone = model(tmp_path, "    gpus: [GPU-5c8a9d2e-0000]\n")
    [p] = fit_problems(gone, engine(), machine, model_estimate(gone))
    assert p.message == "no GPU GPU-5c8a9d2e-0000 here (GPUs: 0 (GPU-00000000), 1 (GPU-00000001))"
    # Without NVML a UUID can be neither resolved nor refuted.
    assert resolve(("GPU-5c8a9d2e-0000", 2), NoGpus("no driver")) == ((2,), [])


def test_vllmctl_check_shows_the_estimate_for_a_cuda_engine(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, dist="vllm", version="0.33.0")
    cfg = model(tmp_path, f"    venv: {venv}\n    engine: {{max_model_len: 8192}}\n")
    etc = Path(cfg.file).parent
    argv = [sys.executable, "-m", "vllm_supervisor.ctl.main", "check", "--no-probe"]
    res = subprocess.run([*argv, "--config-dir", str(etc)], capture_output=True, text=True)
    line = "  GPU mem  weights 0.0 GiB + KV cache 1.0 GiB (8192 tokens x 128 KiB) + overhead"
    assert line in res.stdout, res.stdout + res.stderr
    res = subprocess.run(
        [*argv, "--json", "--config-dir", str(etc)], capture_output=True, text=True
    )
    got = json.loads(res.stdout)["models"]["m"]["estimate"]
    assert got["kv_cache"] == GIB and got["max_model_len"] == 8192


def test_level_1_sleep_warns_when_the_host_lacks_ram_for_the_weights(tmp_path: Path) -> None:
    cfg = model(tmp_path, "    deactivate: sleep\n")
    est = Estimate(weights=14 * GIB, kv_per_token=0, max_model_len=0, overhead=0)
    [p] = sleep_ram_problems(cfg, est, available=8 * GIB)
    assert p.severity == "warning" and p.key == "models.m.sleep_level"
    assert "copies the weights (14.0 GiB) to host RAM, but 8.0 GiB is available" in p.message
    assert sleep_ram_problems(cfg, est, available=32 * GIB) == []
    level2 = model(tmp_path, "    deactivate: sleep\n    sleep_level: 2\n")
    assert sleep_ram_problems(level2, est, available=1 * GIB) == []  # nothing goes to RAM
    assert sleep_ram_problems(model(tmp_path, ""), est, available=1 * GIB) == []


def test_vllmctl_add_sizes_the_context_to_the_smallest_gpu(tmp_path: Path) -> None:
    """Issue 20: `add` on a CUDA host writes the longest max_model_len the estimate fits."""
    import struct

    from vllm_supervisor.preflight.gpu_fit import context_that_fits

    folder = tmp_path / "mistral"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(MISTRAL_7B))
    weights = 14 * GIB  # the header claims it; only the header is read
    header = json.dumps({"w": {"dtype": "BF16", "shape": [weights // 2],
                               "data_offsets": [0, weights]}}).encode()  # fmt: skip
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)

    def devices(*gib: int) -> list:  # type: ignore[type-arg]
        return gpus(*gib).devices()

    fits, why = context_that_fits(folder, 32768, devices(80))
    assert fits == 32768 and why.startswith("the checkpoint's context fits GPU 0")
    # 24 GiB x 0.9 = 21.6; weights 14 + overhead 4.8 leave 2.8 GiB = 22937 tokens of 128 KiB.
    fits, why = context_that_fits(folder, 32768, devices(80, 24))
    assert fits == 22528, why
    assert "GPU 1 (NVIDIA L4, 24 GiB) at 0.9" in why
    fits, why = context_that_fits(folder, 32768, devices(16))
    assert fits is None and why.startswith("does not fit GPU 0") and "tensor_parallel_size" in why
