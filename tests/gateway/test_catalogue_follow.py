"""gateway/catalogue.py's follow: a ready instance says where its engine serves (an upgrade's
promoted candidate), and the model's new requests go there; anything else moves nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.gateway.catalogue import Catalogue
from vllm_supervisor.protocol.admin import Seen

from tests.helpers import write_config


@pytest.fixture
def catalogue(tmp_path: Path) -> Catalogue:
    cfg = write_config(tmp_path, """
    models:
      tiny:
        model: /m
        port: 8001
        aliases: [small]
    """)  # fmt: skip
    return Catalogue(load_registry(cfg))


def test_a_ready_instance_on_another_port_moves_new_requests(catalogue: Catalogue) -> None:
    held = catalogue.find("tiny")
    assert held is not None and held.base == "http://127.0.0.1:8001"
    old = catalogue.follow("tiny", Seen("ready", extra={"host": "127.0.0.1", "port": 9001}))
    assert old == "http://127.0.0.1:8001"
    for name in ("tiny", "small"):
        route = catalogue.find(name)
        assert route is not None and route.base == "http://127.0.0.1:9001"
    assert held.base == "http://127.0.0.1:8001"  # a request under way keeps its engine
    assert (
        catalogue.follow("tiny", Seen("ready", extra={"host": "127.0.0.1", "port": 9001})) is None
    )


@pytest.mark.parametrize(
    "seen",
    [
        Seen("starting", extra={"host": "127.0.0.1", "port": 9001}),
        Seen("ready", extra={"host": "127.0.0.1", "port": "9001"}),
        Seen("ready", extra={"host": "127.0.0.1", "port": True}),
        Seen("ready", extra={"port": 9001}),
        Seen("down"),
    ],
)
def test_nothing_else_moves_it(catalogue: Catalogue, seen: Seen) -> None:
    assert catalogue.follow("tiny", seen) is None
    route = catalogue.find("tiny")
    assert route is not None and route.base == "http://127.0.0.1:8001"
