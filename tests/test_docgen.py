"""docs/configuration.md is generated; a stale copy fails here."""

from __future__ import annotations

from pathlib import Path

from vllm_supervisor import docgen, fields

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_every_model_key_is_documented() -> None:
    assert set(docgen.MODEL_KEY_DOCS) == set(fields.MODEL_KEYS)


def test_configuration_md_is_fresh() -> None:
    assert DOC.read_text() == docgen.render(), (
        "docs/configuration.md is stale: python -m vllm_supervisor.docgen > "
        "docs/configuration.md")


def test_every_supervision_key_is_documented() -> None:
    from dataclasses import fields as dc_fields

    from vllm_supervisor import supervision

    keys = {f"{b}.{f.name}" for b, cls in supervision.BLOCKS.items() for f in dc_fields(cls)}
    assert keys == set(docgen.SUPERVISION_DOCS)


def test_troubleshooting_md_is_fresh() -> None:
    doc = DOC.with_name("troubleshooting.md")
    assert doc.read_text() == docgen.render_troubleshooting(), (
        "docs/troubleshooting.md is stale: python -m vllm_supervisor.docgen troubleshooting "
        "> docs/troubleshooting.md")
