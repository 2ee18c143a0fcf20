"""docs/configuration.md is generated; a stale copy fails here."""

from __future__ import annotations

from pathlib import Path

from vllm_supervisor.reference import docgen

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_md_is_fresh() -> None:
    assert DOC.read_text() == docgen.render(), (
        "docs/configuration.md is stale: python -m vllm_supervisor.reference.docgen > "
        "docs/configuration.md"
    )


def test_every_supervision_key_is_documented() -> None:
    from dataclasses import fields as dc_fields

    from vllm_supervisor.config import settings

    keys = {f"{b}.{f.name}" for b, cls in settings.BLOCKS.items() for f in dc_fields(cls)}
    assert keys == set(docgen.SUPERVISION_DOCS)


def test_troubleshooting_md_is_fresh() -> None:
    doc = DOC.with_name("troubleshooting.md")
    assert doc.read_text() == docgen.render_troubleshooting(), (
        "docs/troubleshooting.md is stale: python -m vllm_supervisor.reference.docgen "
        "troubleshooting > docs/troubleshooting.md"
    )


def test_json_schema_is_fresh_and_agrees_with_the_validator() -> None:
    import json

    import jsonschema
    import yaml
    from vllm_supervisor.reference import schema

    doc = DOC.with_name("models.schema.json")
    assert json.loads(doc.read_text()) == schema.render(), (
        "docs/models.schema.json is stale: python -m vllm_supervisor.reference.schema > "
        "docs/models.schema.json"
    )
    validator = jsonschema.Draft202012Validator(schema.render())
    etc = DOC.parent.parent / "etc"
    for f in [etc / "models.yaml", *sorted((etc / "models.d").glob("*.yaml"))]:
        assert list(validator.iter_errors(yaml.safe_load(f.read_text()))) == [], f
    bad = {
        "models": {
            "m": {
                "model": "x",
                "port": 1,
                "prot": 2,
                "engine": {"max_model_lenn": 1, "dtype": "fp12"},
            }
        },
        "defaults": {"port": 3},
    }
    paths = {"/".join(map(str, e.absolute_path)) for e in validator.iter_errors(bad)}
    assert paths == {"models/m", "models/m/engine", "models/m/engine/dtype", "defaults"}
    # Sizes: the editor's verdict is the validator's, case and all ('8gib' passed vllmctl
    # check but failed the schema before its patterns were the validator's own).
    from vllm_supervisor.engine.options import BY_NAME, coerce

    opt = BY_NAME["kv_cache_memory_bytes"]
    for size in ("8gib", "8GiB", "512 MB", "1.5t", "12", "8 gigs", "GiB", "-1G", "8GiBB"):
        doc_ok = not list(
            validator.iter_errors(
                {"models": {"m": {"model": "x", "port": 1, "engine": {opt.name: size}}}}
            )
        )
        check_ok = coerce(opt, size)[1] is None
        assert doc_ok == check_ok, (size, doc_ok, check_ok)
        assert doc_ok == (size in ("8gib", "8GiB", "512 MB", "1.5t", "12")), size
