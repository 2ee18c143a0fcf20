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


def test_via_gateway_points_every_name_at_each_hosts_gateway(tmp_path: Path) -> None:
    etc = write_config(
        tmp_path,
        """
    gateway: {listen: "0.0.0.0:9000"}
    models:
      a: {model: o/a, port: 8001, served_model_name: [a, a-chat], api_key_file: /k}
      b: {model: o/b, port: 8002}
    """,
    )
    reg = load_registry(etc)
    local = model_list(reg.models, [], reg.gateway)
    assert [e["litellm_params"]["api_base"] for e in local] == ["http://127.0.0.1:9000/v1"] * 3
    assert {e["litellm_params"]["api_key"] for e in local} == {"none"}  # the gateway adds keys
    hosts = model_list(reg.models, ["gpu1.lan", "gpu2.lan"], reg.gateway)
    assert {e["litellm_params"]["api_base"] for e in hosts} == {
        "http://gpu1.lan:9000/v1",
        "http://gpu2.lan:9000/v1",
    }


def export(etc: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vllm_supervisor.ctl.main", "export", "litellm", *args,
         "--config-dir", str(etc)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_an_export_no_other_host_could_use_is_warned_about(tmp_path: Path) -> None:
    """--host gpu1.lan for models bound to 127.0.0.1 (the example config's default) wrote
    api_base http://gpu1.lan:8001/v1, which nothing can reach."""
    etc = write_config(tmp_path, "models:\n  a: {model: o/a, port: 8001}\n")
    res = export(etc, "--host", "gpu1.lan")
    assert res.returncode == 0
    assert (
        "warning: model a binds to 127.0.0.1: gpu1.lan:8001 is unreachable from other hosts; "
        "export --via-gateway" in res.stderr
    )
    res = export(etc, "--host", "gpu1.lan", "--via-gateway")  # the gateway on loopback too
    assert "the gateway listens on 127.0.0.1:8000: gpu1.lan:8000 is unreachable" in res.stderr
    assert export(etc).stderr == ""  # no --host: this host's own view, nothing to warn about


def test_entries_carry_what_a_router_routes_on(tmp_path: Path) -> None:
    """Context length, tool calling and vision, as LiteLLM's model_info reads them (issue
    18, item 4): from the config, else from the checkpoint's config.json."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"max_position_embeddings": 32768, "vision_config": {"hidden_size": 8}}'
    )
    etc = write_config(
        tmp_path,
        f"""
    models:
      t: {{model: o/t, port: 8001, tool_support: native, engine: {{max_model_len: 8192,
           tool_call_parser: hermes, enable_auto_tool_choice: true}}}}
      v: {{model: {folder}, port: 8002}}
      u: {{model: o/unknown, port: 8003}}
    """,
    )
    info = {e["model_name"]: e["model_info"] for e in model_list(load_registry(etc).models, [])}
    assert info["t"]["max_input_tokens"] == 8192 and info["t"]["supports_function_calling"]
    assert not info["t"]["supports_vision"]
    assert info["v"]["max_input_tokens"] == 32768 and info["v"]["supports_vision"]
    assert not info["v"]["supports_function_calling"]
    assert "max_input_tokens" not in info["u"]  # not on this host: not guessed


def test_a_multi_node_model_is_exported_for_its_rank_0_only(tmp_path: Path) -> None:
    """Issue 21: the other hosts of a group run headless ranks, with no API to route to."""
    etc = write_config(
        tmp_path,
        """
    models:
      big:
        model: o/big
        port: 8001
        host: 0.0.0.0
        engine: {tensor_parallel_size: 2}
        nodes: {hosts: [10.0.0.1, 10.0.0.2], interface: eth1, key_file: k}
      small: {model: o/s, port: 8002, host: 0.0.0.0}
    """,
    )
    entries = model_list(load_registry(etc).models, ["gpu1.lan", "gpu2.lan"])
    bases = {(e["model_name"], e["litellm_params"]["api_base"]) for e in entries}
    assert bases == {
        ("big", "http://gpu1.lan:8001/v1"),
        ("small", "http://gpu1.lan:8002/v1"),
        ("small", "http://gpu2.lan:8002/v1"),
    }
    res = export(etc, "--host", "gpu1.lan", "--host", "gpu2.lan")
    assert "model big is multi-node: exported for gpu1.lan only, which must be its rank 0" in (
        res.stderr
    )
