"""`nodes:` (issue 21): each rule names file, line and key; what vLLM would refuse at every
rank's start is said from the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from vllm_supervisor.config.nodes_keys import Nodes
from vllm_supervisor.config.registry import ConfigInvalid, load_registry

from tests.helpers import write_config

BASE = """
models:
  big:
    model: org/big
    port: 8001
    engine:
      tensor_parallel_size: 2
    nodes:
{nodes}
"""
GOOD = """      hosts: [10.0.0.1, 10.0.0.2]
      interface: eth1
      key_file: group.key"""


def load(tmp_path: Path, nodes: str, extra: str = "") -> Nodes | None:
    cfg = write_config(tmp_path, BASE.format(nodes=nodes) + extra)
    return load_registry(cfg).models["big"].nodes


def errors(tmp_path: Path, nodes: str, extra: str = "") -> list[str]:
    with pytest.raises(ConfigInvalid) as exc:
        load(tmp_path, nodes, extra)
    return [str(p) for p in exc.value.problems if p.severity == "error"]


def test_a_good_block_and_its_defaults(tmp_path: Path) -> None:
    n = load(tmp_path, GOOD)
    assert n is not None
    assert n.hosts == ("10.0.0.1", "10.0.0.2") and n.interface == "eth1"
    assert n.key_file == tmp_path / "etc" / "group.key"  # relative to the file that names it
    assert (n.master_port, n.link_port) == (29500, 29600)


def test_each_host_finds_its_rank_by_its_addresses(tmp_path: Path) -> None:
    n = load(tmp_path, GOOD.replace("10.0.0.2", "fd00::0002"))
    assert n is not None
    assert n.rank_of(frozenset({"10.0.0.1", "fe80::1"})) == 0
    assert n.rank_of(frozenset({"fd00::2"})) == 1  # compared as addresses, not as text
    assert n.rank_of(frozenset({"10.0.0.3"})) is None


@pytest.mark.parametrize(
    ("nodes", "line", "key", "words"),
    [
        ("      hosts: [10.0.0.1]\n      interface: eth1\n      key_file: k", 8,
         "nodes.hosts", "at least two addresses"),
        ("      hosts: [10.0.0.1, node2]\n      interface: eth1\n      key_file: k", 8,
         "nodes.hosts", "expected an IP address, got 'node2'"),
        ("      hosts: [10.0.0.1, 10.0.0.1]\n      interface: eth1\n      key_file: k", 8,
         "nodes.hosts", "listed twice"),
        ("      hosts: [10.0.0.1, 0.0.0.0]\n      interface: eth1\n      key_file: k", 8,
         "nodes.hosts", "not one host's address"),
        ("      hosts: [10.0.0.1, 10.0.0.2]\n      interface: 'eth 1'\n      key_file: k", 9,
         "nodes.interface", "expected an interface name"),
        ("      hosts: [10.0.0.1, 10.0.0.2]\n      key_file: k", 8,
         "nodes.interface", "is required"),
        ("      hosts: [10.0.0.1, 10.0.0.2]\n      interface: eth1", 8,
         "nodes.key_file", "is required"),
        (GOOD + "\n      master_port: .nan", 11, "nodes.master_port", "expected a TCP port"),
        (GOOD + "\n      master_port: 29600", 8, "nodes.link_port", "must differ"),
        (GOOD + "\n      masterport: 1", 11, "nodes.masterport", "unknown key"),
        ("      - 10.0.0.1", 8, "nodes", "expected a mapping"),
    ],
)  # fmt: skip
def test_bad_blocks_name_file_line_and_key(
    tmp_path: Path, nodes: str, line: int, key: str, words: str
) -> None:
    found = errors(tmp_path, nodes)
    want = f"models.yaml:{line}: models.big.{key}: "
    assert any(want in e and words in e for e in found), found


def test_hosts_that_do_not_divide_the_world_size(tmp_path: Path) -> None:
    three = GOOD.replace("10.0.0.2]", "10.0.0.2, 10.0.0.3]")
    found = errors(tmp_path, three)
    assert any("models.big.nodes.hosts" in e and "do not evenly divide the world size 2" in e
               for e in found), found  # fmt: skip


def test_sleep_and_port_clashes_are_refused(tmp_path: Path) -> None:
    found = errors(tmp_path, GOOD + "\n      link_port: 8001", "    deactivate: sleep\n")
    assert any("models.big.nodes.link_port" in e and "engine's port 8001" in e for e in found)
    assert any("models.big.deactivate" in e and "multi-node" in e for e in found), found
