"""A local stand-in for the Hugging Face Hub's HTTP API, for `vllmctl pull` and `search`
(issue 20: this machine cannot reach the Hub). It serves the routes huggingface_hub 2.x asks
for, as read from its source (hf_api.py, file_download.py, utils/_http.py):

- GET  /api/models/ORG/NAME/revision/REV      -> repo info, with the commit `sha`
- GET  /api/models/ORG/NAME/tree/SHA          -> the files (path, size, oid)
- HEAD|GET /ORG/NAME/resolve/REV/PATH         -> the file, with X-Repo-Commit, ETag and
  Content-Length; GET honours Range (a resumed download asks for the rest)
- GET  /api/models?search=...                 -> a model list
- a gated repo answers 401 with X-Error-Code: GatedRepo, as the Hub does.

The download and search code under test is the library's own; only the server is ours.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Repo:
    files: dict[str, bytes]
    sha: str = "0123456789abcdef0123456789abcdef01234567"
    gated: bool = False
    forbidden: bool = False  # the API answers 403 with no error code (a proxy's refusal)
    tags: list[str] = field(default_factory=list)
    downloads: int = 0


class HubStandIn:
    def __init__(self, repos: dict[str, Repo]) -> None:
        self.repos = repos
        self.requests: list[tuple[str, str, str]] = []  # method, path, Range header
        self.drop_after: int | None = None  # cut each file body after this many bytes once
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.answer(self, head=True)

            def do_GET(self) -> None:
                hub.answer(self, head=False)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def answer(self, h: http.server.BaseHTTPRequestHandler, head: bool) -> None:
        url = urllib.parse.urlsplit(h.path)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        self.requests.append((h.command, url.path, h.headers.get("Range", "")))
        if parts[:2] == ["api", "models"] and len(parts) == 2:
            return self._search(h, urllib.parse.parse_qs(url.query))
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo_id, what = "/".join(parts[2:4]), parts[4]
            repo = self.repos.get(repo_id)
            if repo is None:
                return self._json(h, 404, {"error": "Repository not found"}, "RepoNotFound")
            if repo.gated:
                return self._json(h, 401, {"error": "Access to model is restricted"}, "GatedRepo")
            if repo.forbidden:
                return self._json(h, 403, {"error": "Forbidden by policy"})
            if what == "revision" and parts[5] not in ("main", repo.sha):
                return self._json(h, 404, {"error": "Invalid rev id"}, "RevisionNotFound")
            if what == "revision":
                siblings = [{"rfilename": p} for p in repo.files]
                return self._json(h, 200, {"id": repo_id, "sha": repo.sha, "siblings": siblings})
            if what == "tree":
                return self._json(h, 200, [
                    {"type": "file", "path": p, "size": len(b),
                     "oid": hashlib.sha1(b).hexdigest()} for p, b in repo.files.items()
                ])  # fmt: skip
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self.repos.get("/".join(parts[:2]))
            name = "/".join(parts[4:])
            if repo is None or name not in repo.files:
                return self._json(h, 404, {"error": "Entry not found"}, "EntryNotFound")
            if repo.gated:
                return self._json(h, 401, {"error": "Access to model is restricted"}, "GatedRepo")
            return self._file(h, repo, repo.files[name], head)
        return self._json(h, 404, {"error": f"no route {url.path}"})

    def _file(self, h: http.server.BaseHTTPRequestHandler, repo: Repo, body: bytes,
              head: bool) -> None:  # fmt: skip
        start = 0
        rng = h.headers.get("Range", "")
        if rng.startswith("bytes="):
            start = int(rng[6:].split("-", 1)[0] or 0)
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", repo.sha)
        h.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        h.send_header("Content-Length", str(len(body) - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        h.end_headers()
        if head:
            return
        chunk = body[start:]
        if self.drop_after is not None and len(chunk) > self.drop_after:
            self.drop_after, cut = None, self.drop_after
            h.wfile.write(chunk[:cut])
            h.wfile.flush()
            h.close_connection = True  # a connection lost mid-file: the client resumes
            return
        h.wfile.write(chunk)

    def _search(self, h: http.server.BaseHTTPRequestHandler, q: dict[str, list[str]]) -> None:
        text = (q.get("search") or [""])[0].lower()
        wanted = set(q.get("filter", []))
        found = [
            {"id": rid, "modelId": rid, "downloads": r.downloads, "likes": 1, "gated": r.gated,
             "pipeline_tag": "text-generation", "tags": r.tags}
            for rid, r in self.repos.items()
            if text in rid.lower() and wanted <= set(r.tags)
        ]  # fmt: skip
        found.sort(key=lambda m: -int(str(m["downloads"])))
        self._json(h, 200, found[: int((q.get("limit") or ["1000"])[0])])

    def _json(self, h: http.server.BaseHTTPRequestHandler, code: int, body: object,
              error_code: str = "") -> None:  # fmt: skip
        raw = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        if error_code:
            h.send_header("X-Error-Code", error_code)
            h.send_header("X-Error-Message", str(body))
        h.end_headers()
        h.wfile.write(raw)


def tiny_repo(folder: Path) -> Repo:
    """A repo of the tiny model's files."""
    return Repo({p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()})
