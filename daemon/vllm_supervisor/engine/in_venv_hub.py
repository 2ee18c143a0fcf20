"""Runs INSIDE the engine venv (never imported by the supervisor): the Hugging Face Hub
through huggingface_hub, which vLLM already depends on, for `vllmctl pull` and `search`.

Usage:
    ENGINE_PYTHON in_venv_hub.py pull REPO [--revision R]
    ENGINE_PYTHON in_venv_hub.py search TEXT [--author A] [--filter TAG]... [--task T]
                                             [--sort downloads|likes|last_modified] [--limit N]

The download and the search are the library's own (resume, the cache layout vLLM reads,
HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE); this script only turns its answers and its errors
into one JSON line on stdout: {"ok": true, ...} or {"ok": false, "kind": K, "message": M}.
huggingface_hub draws its own progress bars on stderr when that is a terminal.
"""

import argparse
import importlib
import json
import os
import sys
from typing import Any


def _hub(module: str = "") -> Any:
    """huggingface_hub (or one of its modules): the engine venv's, imported by name so the
    supervisor's own type check does not look for it."""
    return importlib.import_module("huggingface_hub" + (f".{module}" if module else ""))


def _say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _endpoint() -> str:
    return str(_hub("constants").ENDPOINT)


def _failure(exc: BaseException, repo: str) -> dict[str, str]:
    """The kind of failure, and what to do, by huggingface_hub's own exception types."""
    errors = _hub("errors")
    name = type(exc).__name__
    if isinstance(exc, errors.GatedRepoError):
        return {
            "kind": "gated",
            "message": f"{repo} is gated: accept its terms on the Hub with your account, then "
            "give the unit's user a token (HF_TOKEN in its environment, or `hf auth login` as "
            "that user)",
        }
    if isinstance(exc, errors.RevisionNotFoundError):
        return {"kind": "revision", "message": f"{repo} has no such revision: {exc}"}
    if isinstance(exc, errors.RepositoryNotFoundError):
        return {
            "kind": "not-found",
            "message": f"{repo} not found on {_endpoint()} (or private: a token is needed)",
        }
    # An HTTP answer is not "offline", though huggingface_hub's HTTP errors are OSErrors, and
    # snapshot_download wraps one in LocalEntryNotFoundError when nothing is cached.
    answered = next((e for e in _chain(exc) if isinstance(e, errors.HfHubHTTPError)), None)
    if answered is not None:
        return {"kind": "http", "message": f"{_endpoint()} refused {repo}: {answered}"}
    if isinstance(exc, PermissionError):
        return {
            "kind": "access",
            "message": f"{exc}: this user cannot write the Hugging Face cache "
            f"({_hub('constants').HF_HUB_CACHE}); make it theirs, or set HF_HOME",
        }
    if isinstance(exc, errors.OfflineModeIsEnabled) or os.environ.get("HF_HUB_OFFLINE") in (
        "1",
        "true",
        "True",
    ):
        return {
            "kind": "offline",
            "message": "HF_HUB_OFFLINE is set: nothing is fetched. Pull on a connected host, "
            "then copy its hub/models--ORG--NAME folder into this host's cache",
        }
    if isinstance(exc, (errors.LocalEntryNotFoundError, ConnectionError, OSError)) or (
        "Connect" in name or "Timeout" in name
    ):
        return {
            "kind": "offline",
            "message": f"cannot reach {_endpoint()} ({name}): this host looks offline. Pull on "
            "a connected host, then copy its hub/models--ORG--NAME folder into this host's "
            "cache (or set HF_ENDPOINT to a mirror)",
        }
    return {"kind": "error", "message": f"{name}: {exc}"}


def _chain(exc: BaseException) -> list[BaseException]:
    """EXC and the exceptions it was raised from or during, outermost first."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out and len(out) < 10:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def pull(repo: str, revision: str | None) -> int:
    try:
        path = _hub().snapshot_download(repo, revision=revision)
    except Exception as exc:  # every failure becomes one line the operator can act on
        _say(ok=False, **_failure(exc, repo))
        return 1
    size = 0
    for dirpath, _dirs, names in os.walk(path, followlinks=True):
        size += sum(os.path.getsize(os.path.join(dirpath, n)) for n in names)
    _say(ok=True, path=path, revision=os.path.basename(path), bytes=size)
    return 0


def search(args: argparse.Namespace) -> int:
    try:
        found = list(
            _hub()
            .HfApi()
            .list_models(
                search=args.text or None,
                author=args.author,
                filter=args.filter or None,
                pipeline_tag=args.task or None,
                sort=args.sort,
                limit=args.limit,
            )
        )
    except Exception as exc:  # as for pull
        _say(ok=False, **_failure(exc, args.text))
        return 1
    models = [
        {
            "id": m.id,
            "downloads": m.downloads,
            "likes": m.likes,
            "gated": m.gated,
            "task": m.pipeline_tag,
            "tags": list(m.tags or []),
        }
        for m in found
    ]
    _say(ok=True, models=models)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("pull")
    p.add_argument("repo")
    p.add_argument("--revision", default=None)
    s = sub.add_parser("search")
    s.add_argument("text")
    s.add_argument("--author", default=None)
    s.add_argument("--filter", action="append", default=[])
    s.add_argument("--task", default="text-generation")
    s.add_argument("--sort", default="downloads")
    s.add_argument("--limit", type=int, default=20)
    args = ap.parse_args()
    if args.what == "pull":
        return pull(args.repo, args.revision)
    return search(args)


if __name__ == "__main__":
    sys.exit(main())
