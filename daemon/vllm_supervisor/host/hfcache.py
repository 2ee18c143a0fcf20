"""Is a Hugging Face repo id in the local hub cache? (offline mode needs it there)

Layout per huggingface_hub's cache docs: <hub>/models--ORG--NAME/snapshots/<rev>/<files>.
Checked without importing huggingface_hub, which lives in the engine venv only.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def hub_dir(env: Mapping[str, str]) -> Path:
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]) / "hub"
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def is_local_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or not REPO_ID.match(ref)


def repo_dir(repo_id: str, env: Mapping[str, str]) -> Path:
    """REPO_ID's folder in the hub cache: models--ORG--NAME."""
    return hub_dir(env) / ("models--" + repo_id.replace("/", "--"))


def cached(repo_id: str, env: Mapping[str, str], revision: str | None = None) -> bool:
    """Is REPO_ID (at REVISION, when given) in the cache, with files?"""
    if revision is not None:
        snap = snapshot(repo_id, env, revision)
        try:
            return snap is not None and any(snap.iterdir())
        except OSError:
            return False
    folder = repo_dir(repo_id, env) / "snapshots"
    try:
        return any(any(snap.iterdir()) for snap in folder.iterdir() if snap.is_dir())
    except OSError:
        return False


def repo_bytes(repo_id: str, env: Mapping[str, str]) -> int:
    """Bytes of REPO_ID's files in the hub cache, partial downloads included: huggingface_hub
    writes each file to blobs/<hash>.incomplete as it arrives, then renames it (snapshots/
    holds only links, not counted). 0 before the first byte. Bounded: a repo is a few
    hundred files at most."""
    total, seen = 0, 0
    for dirpath, _dirs, names in os.walk(repo_dir(repo_id, env)):  # never follows links
        for n in names:
            seen += 1
            if seen > 100_000:
                return total
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue  # renamed between the listing and the stat: counted next time
            if not stat.S_ISLNK(st.st_mode):
                total += st.st_size
    return total


def snapshot(repo_id: str, env: Mapping[str, str], revision: str | None = None) -> Path | None:
    """The snapshot folder of REPO_ID at REVISION (a commit, or a branch or tag that refs/
    maps to one, as huggingface_hub writes them), else the newest one; None if absent."""
    repo = repo_dir(repo_id, env)
    folder = repo / "snapshots"
    if revision is not None:
        commit = revision
        if "/" not in revision and ".." not in revision:
            try:
                commit = (repo / "refs" / revision).read_text().strip() or revision
            except (OSError, ValueError):
                commit = revision
        snap = folder / commit
        return snap if "/" not in commit and os.path.isdir(snap) else None
    try:
        snaps = [s for s in folder.iterdir() if s.is_dir()]
    except OSError:
        return None
    return max(snaps, key=lambda s: s.stat().st_mtime) if snaps else None
