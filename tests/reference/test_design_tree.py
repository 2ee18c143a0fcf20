"""docs/design.md lists every module of the package, and nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "daemon" / "vllm_supervisor"


def listed(text: str) -> set[str]:
    block = text.split("```\nvllm_supervisor/\n", 1)[1].split("```", 1)[0]
    out, folder = set(), ""
    for line in block.splitlines():
        m = re.match(r"^(\s+)(\S+)", line)
        if m is None:
            continue
        name = m.group(2)
        if name.endswith("/"):
            folder = name
        elif name.endswith(".py"):
            out.add((folder if len(m.group(1)) > 2 else "") + name)
    return out


def test_design_md_lists_every_module() -> None:
    on_disk = {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }
    doc = listed((ROOT / "docs" / "design.md").read_text())
    assert doc == on_disk, {"not in docs/design.md": on_disk - doc, "gone": doc - on_disk}


def test_the_listing_check_can_fail() -> None:
    text = (ROOT / "docs" / "design.md").read_text().replace("    tasks.py", "    chores.py")
    assert "runtime/chores.py" in listed(text) and "runtime/tasks.py" not in listed(text)
