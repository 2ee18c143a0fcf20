"""The key table (config/key_table.py) is the one place a model key lives: a key added there
alone is parsed, documented and in the schema (issue 19, item 3)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from vllm_supervisor.config import key_parsers, key_table, settings
from vllm_supervisor.config.gateway_keys import ModelGateway
from vllm_supervisor.config.registry import ConfigInvalid, load_registry
from vllm_supervisor.reference import docgen, schema

from tests.helpers import write_config


def test_every_key_is_documented_and_has_a_schema() -> None:
    for k in key_table.KEYS:
        assert k.type and k.shown_default and k.help and k.schema, k.name
    names = set(key_table.MODEL_KEYS)
    assert {f.name for f in fields(ModelGateway)} <= names  # read by gateway_keys
    assert set(settings.BLOCKS) <= names  # read by the supervision reader
    assert len(names) == len(key_table.KEYS)  # no key twice


def test_a_key_added_to_the_table_alone_is_parsed_documented_and_in_the_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = key_table.ModelKey(
        "warm_pool", "bool", "`false`", "keep a warm spare (a key this test adds)",
        {"type": "boolean", "default": False}, key_parsers.boolean, False,
    )  # fmt: skip
    keys = (*key_table.KEYS, new)
    monkeypatch.setattr(key_table, "KEYS", keys)
    monkeypatch.setattr(key_table, "BY_NAME", {k.name: k for k in keys})
    monkeypatch.setattr(key_table, "MODEL_KEYS", tuple(k.name for k in keys))
    # The parser: a good value passes, as a default too; a bad one names file, line, key.
    good = "defaults: {warm_pool: true}\nmodels:\n  m: {model: o/m, port: 8001}\n"
    load_registry(write_config(tmp_path / "a", good))
    bad = "models:\n  m: {model: o/m, port: 8001, warm_pool: soon}\n"
    with pytest.raises(ConfigInvalid) as exc:
        load_registry(write_config(tmp_path / "b", bad))
    assert [str(p).split("models.yaml:")[1] for p in exc.value.problems] == [
        "2: models.m.warm_pool: expected true or false, got 'soon'"
    ]
    # The docs and the schema, from the same entry.
    assert "| `warm_pool` | bool | `false` | keep a warm spare (a key this test adds) |" in (
        docgen.render()
    )
    rendered = schema.render()["properties"]
    assert rendered["models"]["additionalProperties"]["properties"]["warm_pool"] == new.schema
    assert rendered["defaults"]["properties"]["warm_pool"] == new.schema
