"""Change one model's scalar keys in its file, in place and atomically, keeping everything
else as the operator wrote it (comments, order, quoting): `vllmctl upgrade` records the new
venv and the one kept for rollback (ctl/upgrade.py).

A YAML library that round-trips comments (ruamel) would be a new dependency for two lines,
so the edit is by line, guided by the positions config/yamltree.py keeps, and proven before
it lands: the new text must parse to the same tree with only these keys changed, and the
file is replaced by rename(2), so a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from vllm_supervisor.config.yamltree import YNode, load

Changes = dict[str, str | None]  # key -> new value; None removes the key


class RewriteError(Exception):
    pass


def _model_node(root: YNode | None, file: str, model: str) -> YNode:
    models = root.mapping.get("models") if root is not None and root.mapping else None
    node = models.mapping.get(model) if models is not None and models.mapping else None
    if node is None or node.mapping is None:
        raise RewriteError(f"{file}: no mapping for model {model} under models:")
    return node


def _parse(text: str, file: str) -> YNode:
    root, problems = load(text, file)
    if root is None or problems:
        raise RewriteError(f"cannot be parsed: {problems[0] if problems else file}")
    return root


def edit(text: str, file: str, model: str, changes: Changes) -> str:
    """TEXT with MODEL's keys changed; RewriteError where a line edit cannot be sure."""
    lines = text.splitlines(keepends=True)
    node = _model_node(_parse(text, file), file, model)
    assert node.mapping is not None
    key_lines = sorted(node.key_lines.values())
    if not key_lines:
        raise RewriteError(f"{file}: model {model} has no keys to place new ones beside")
    first = lines[key_lines[0] - 1]
    indent = first[: len(first) - len(first.lstrip(" "))]
    if first.lstrip().startswith(("{", "-")) or "{" in first.split("#")[0].split(":", 1)[0]:
        raise RewriteError(f"{file}:{key_lines[0]}: model {model} is in flow style: edit by hand")
    removals, inserts = [], []
    for key, value in changes.items():
        at = node.key_lines.get(key)
        new_line = f"{indent}{key}: {json.dumps(value)}\n" if value is not None else None
        if at is None:
            if new_line is not None:
                inserts.append(new_line)
            continue
        old = lines[at - 1]
        sub = node.mapping[key]
        if sub.mapping is not None or sub.sequence is not None or sub.line != at:
            raise RewriteError(f"{file}:{at}: {key} is not a one-line value: edit by hand")
        if not re.match(rf"^{re.escape(indent)}{re.escape(key)}\s*:", old):
            raise RewriteError(f"{file}:{at}: cannot find `{key}:` at the start of the line")
        if new_line is None:
            removals.append(at - 1)
        else:
            comment = re.search(r"\s+#.*$", old.rstrip("\n"))
            lines[at - 1] = new_line.rstrip("\n") + (comment.group(0) if comment else "") + "\n"
    for i in sorted(removals, reverse=True):
        del lines[i]
    where = key_lines[0] - sum(1 for i in removals if i < key_lines[0] - 1)
    lines[where:where] = inserts
    out = "".join(lines)
    _prove(text, out, file, model, changes)
    return out


def _prove(before: str, after: str, file: str, model: str, changes: Changes) -> None:
    """The new text parses to the old tree, but for CHANGES."""
    old_root, new_root = _parse(before, file).plain(), _parse(after, file).plain()
    assert isinstance(old_root, dict) and isinstance(new_root, dict)
    expect = dict(old_root["models"][model])
    for key, value in changes.items():
        if value is None:
            expect.pop(key, None)
        else:
            expect[key] = value
    got = new_root["models"][model]
    rest_old = {k: v for k, v in old_root.items() if k != "models"}
    rest_new = {k: v for k, v in new_root.items() if k != "models"}
    others_old = {k: v for k, v in old_root["models"].items() if k != model}
    others_new = {k: v for k, v in new_root["models"].items() if k != model}
    if got != expect or rest_old != rest_new or others_old != others_new:
        raise RewriteError(
            f"{file}: model {model} cannot be edited line by line (flow style?): edit it by hand"
        )


def write_atomic(path: Path, text: str) -> None:
    """Replace PATH by TEXT: a temporary file beside it, fsync'd, renamed over it, keeping
    the file's mode and owner (the service user must still read it)."""
    st = path.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, st.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rewrite(path: Path, model: str, changes: Changes) -> str:
    """Apply CHANGES to MODEL in PATH; returns the old text (to put back)."""
    before = path.read_text(encoding="utf-8")
    write_atomic(path, edit(before, str(path), model, changes))
    return before
