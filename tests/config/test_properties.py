"""Property-based: whatever a config file or an admin body holds, the reader answers with
values or problems (file, line, key), never another exception (issue 18, item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vllm_supervisor.config.problems import ConfigInvalid
from vllm_supervisor.config.registry import Registry, load_registry
from vllm_supervisor.config.yamltree import load
from vllm_supervisor.protocol import jsonbody

SOME = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from([".nan", ".inf", "~", "0x1F", "2026-12-02", "!!binary aGk=", "&a", "*a"]),
)  # fmt: skip
TREES = st.recursive(
    SCALARS,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=30,
)
# YAML-looking text: the pieces a hostile file is made of.
PIECES = st.sampled_from(
    ["models:", "\n", "  ", "- ", ": ", "&a ", "*a", "[", "]", "{", "}", "<<: *a", "!!python/",
     "port: ", "8001", ".nan", "'", '"', "#", "---", "...", "? ", "|", ">", "%YAML 1.1", "\t"]
)  # fmt: skip
TEXTS = st.one_of(st.text(max_size=300), st.lists(PIECES, max_size=60).map("".join))


@settings(max_examples=400, deadline=None)
@given(text=TEXTS)
def test_any_text_loads_to_nodes_or_problems(text: str) -> None:
    root, problems = load(text, "models.yaml")
    assert (
        root is not None
        or problems
        or not text.strip()
        or text.strip().startswith(("#", "---", "...", "%"))
        or root is None
    )
    assert all(p.file == "models.yaml" for p in problems)


@settings(max_examples=200, deadline=None)
@given(tree=TREES, shared=st.booleans())
def test_a_dumped_tree_loads_back_with_its_aliases_expanded(tree: object, shared: bool) -> None:
    doc = {"a": tree, "b": tree} if shared else {"a": tree}  # shared: PyYAML writes an alias
    root, problems = load(yaml.safe_dump(doc), "f")
    if root is None:  # only a value no setting takes (a NaN, an inf) becomes text
        return
    assert problems == []
    assert set((root.mapping or {}).keys()) == set(doc)
    if shared:
        assert root.mapping is not None and root.mapping["a"].plain() == root.mapping["b"].plain()


@SOME
@given(text=TEXTS)
def test_any_models_yaml_is_a_registry_or_config_problems(tmp_path: Path, text: str) -> None:
    (tmp_path / "models.d").mkdir(exist_ok=True)
    (tmp_path / "models.yaml").write_text(text)
    try:
        got = load_registry(tmp_path)
    except ConfigInvalid as exc:
        assert exc.problems and all(p.file.endswith("models.yaml") for p in exc.problems)
    else:
        assert isinstance(got, Registry)


@settings(max_examples=400, deadline=None)
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                     st.sampled_from([b"NaN", b'{"drain_timeout": NaN}', b'{"a": 1e999}',
                                      b"[" * 10000, b'{"stop": -Infinity}'])))  # fmt: skip
def test_any_admin_body_is_fields_or_a_bad_body(raw: bytes) -> None:
    try:
        got = jsonbody.fields(raw, {"drain_timeout": float, "stop": bool, "model": str})
    except jsonbody.BadBody as exc:
        assert str(exc)
    else:
        assert isinstance(got, dict)
        assert all(jsonbody.finite(v) for k, v in got.items() if k == "drain_timeout")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "1"])
def test_finite_refuses_what_is_no_number(value: object) -> None:
    assert not jsonbody.finite(value)
