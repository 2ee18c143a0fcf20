"""The host's available RAM, from /proc/meminfo (proc(5)): level-1 sleep copies the model's
weights into it (runtime/sleep.py)."""

from __future__ import annotations

from pathlib import Path

MEMINFO = Path("/proc/meminfo")


def available(path: Path = MEMINFO) -> int | None:
    """MemAvailable in bytes (the kernel's estimate of what can be allocated without
    swapping), or None where it cannot be read."""
    try:
        for line in path.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file counts kB
    except (OSError, ValueError, IndexError):
        return None
    return None
