"""vllmctl export litellm: names as vLLM serves them, hosts, aliases, keys by reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.ctl.export import model_list, render_yaml

from tests.helpers import write_config


def test_entries(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("s3cr3t-key")
    etc = write_config(
        tmp_path,
        f"""
    models:
      a: {{model: o/a, port: 8001, served_model_name: [a, a-chat], aliases: [fast],
           api_key_file: {tmp_path}/k}}
      b: {{model: o/b, port: 8002, host: 0.0.0.0, description: "it's \\"b\\""}}
      old: {{model: o/c, port: 8003, deprecated: use b}}
    """,
    )
    reg = load_registry(etc)
    entries = model_list(reg.models, [])
    assert [e["model_name"] for e in entries] == ["a", "a-chat", "fast", "b"]
    assert {e["litellm_params"]["model"] for e in entries[:3]} == {"hosted_vllm/a"}
    assert entries[0]["litellm_params"] == {
        "model": "hosted_vllm/a",
        "api_base": "http://127.0.0.1:8001/v1",
        "api_key": "os.environ/VLLM_API_KEY_A",
    }
    assert entries[3]["litellm_params"]["api_base"] == "http://127.0.0.1:8002/v1"
    assert entries[3]["litellm_params"]["api_key"] == "none"
    two = model_list({"b": reg.models["b"]}, ["gpu1", "fd00::2"])
    assert [e["litellm_params"]["api_base"] for e in two] == [
        "http://gpu1:8002/v1",
        "http://[fd00::2]:8002/v1",
    ]
    assert yaml.safe_load(render_yaml(entries))["model_list"] == entries
    # What an operator runs: the key file is named by reference, its content never printed.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "vllm_supervisor.ctl.main",
            "export",
            "litellm",
            "--config-dir",
            str(etc),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "os.environ/VLLM_API_KEY_A" in out.stdout and "s3cr3t" not in out.stdout
