"""config/rewrite.py: one model's keys changed by line, everything else kept as written, the
edit proven against a re-parse, and the file replaced atomically with its mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vllm_supervisor.config.registry import load_registry
from vllm_supervisor.config.rewrite import RewriteError, edit, rewrite

TEXT = """\
# the operator's comment stays
models:
  tiny:   # the demo
    model: /m
    port: 8001
    venv: /a   # pinned
  other: {model: /y, port: 8002}
"""


def test_a_value_is_replaced_and_a_key_added_keeping_comments() -> None:
    out = edit(TEXT, "f", "tiny", {"venv": "/new", "previous_venv": "/a"})
    assert '    venv: "/new"   # pinned\n' in out
    assert '    previous_venv: "/a"\n' in out
    assert out.startswith("# the operator's comment stays\n")
    assert "  other: {model: /y, port: 8002}\n" in out


def test_a_key_is_removed_and_the_rest_is_untouched() -> None:
    with_prev = edit(TEXT, "f", "tiny", {"previous_venv": "/a"})
    assert edit(with_prev, "f", "tiny", {"previous_venv": None}) == TEXT


@pytest.mark.parametrize(
    ("text", "model", "changes", "said"),
    [
        (TEXT, "other", {"venv": "/n"}, "edit it by hand"),  # flow style
        (TEXT, "ghost", {"venv": "/n"}, "no mapping for model ghost"),
        (
            TEXT.replace("    venv: /a   # pinned\n", "    venv:\n      - /a\n"),
            "tiny",
            {"venv": "/n"},
            "not a one-line value",
        ),
        ("models: [1, 2]\n", "tiny", {"venv": "/n"}, "no mapping"),
        ("models:\n  tiny: {\n", "tiny", {"venv": "/n"}, "cannot be parsed"),
    ],
)
def test_an_edit_that_cannot_be_sure_is_refused(
    text: str, model: str, changes: dict[str, str | None], said: str
) -> None:
    with pytest.raises(RewriteError, match=said):
        edit(text, "f", model, changes)


def test_a_hostile_value_is_written_as_a_quoted_string() -> None:
    out = edit(TEXT, "f", "tiny", {"venv": '/x"\n  evil: [1]\n# '})
    assert "evil" not in out.split("venv:")[0]
    assert out.count("\n") == TEXT.count("\n")  # json.dumps keeps it on one line


def test_rewrite_replaces_the_file_atomically_and_keeps_its_mode(tmp_path: Path) -> None:
    (tmp_path / "models.d").mkdir()
    f = tmp_path / "models.yaml"
    f.write_text(TEXT.replace("  other: {model: /y, port: 8002}\n", ""))
    os.chmod(f, 0o640)
    before = rewrite(f, "tiny", {"venv": "/new", "previous_venv": "/a"})
    assert "venv: /a" in before and oct(f.stat().st_mode & 0o777) == "0o640"
    cfg = load_registry(tmp_path).models["tiny"]
    assert (str(cfg.venv), str(cfg.previous_venv)) == ("/new", "/a")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
