"""`vllmctl probe MODEL`: the deployment guide's preflight against a running model.

Checks, one line each with its time: the served names are listed, a short chat answers,
a json_schema structured output parses and has the required keys, and, for models that
declare `vision`, a chat with a 1x1 image answers. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vllm_supervisor import exitcodes
from vllm_supervisor.ctl.client import Client, CtlError
from vllm_supervisor.host import files
from vllm_supervisor.host.locations import local_host
from vllm_supervisor.protocol.states import State

# A 1x1 transparent PNG.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhf"
    "DwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


class EngineClient:
    """A blocking OpenAI-API client for one engine (vllmctl imports no aiohttp)."""

    def __init__(
        self, host: str, port: int, names: list[str], key: str | None, timeout: float
    ) -> None:
        self.host = local_host(host)
        self.port, self.names, self.key, self.timeout = port, names, key, timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {raw[:200].decode(errors='replace')}")
        data = json.loads(raw)
        return data if isinstance(data, dict) else {}

    def chat(self, content: Any, **extra: Any) -> str:
        return self.answer(content, **extra)[0]

    def answer(self, content: Any, **extra: Any) -> tuple[str, str]:
        """The first choice's text and finish_reason."""
        body = {
            "model": self.names[0],
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 32,
            "temperature": 0,
            **extra,
        }
        choice = self.call("POST", "/v1/chat/completions", body)["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str) or not text:
            raise RuntimeError("empty answer")
        return text, str(choice.get("finish_reason"))


def cmd_probe(args: argparse.Namespace) -> int:
    from vllm_supervisor.ctl.commands import base, configured

    try:
        st = Client(base(args), args.model).get_json("/v1/state")
    except CtlError as exc:
        print(exc, file=sys.stderr)
        return exc.code
    if st.get("state") != State.READY:
        print(
            f"{args.model}: not ready ({st.get('state')}): vllmctl activate {args.model}",
            file=sys.stderr,
        )
        return exitcodes.FAILED
    cfg = configured(args).get(args.model)
    key = None
    if cfg is not None and cfg.api_key_file is not None:
        try:
            key = files.read_text(Path(cfg.api_key_file), files.SECRET_CAP).strip()
        except (OSError, ValueError):
            print(f"note: cannot read {cfg.api_key_file}; probing without the API key")
    caps = set(cfg.capabilities) if cfg is not None else set()
    t = EngineClient(st["host"], st["port"], st["served_names"], key, args.timeout)
    checks: list[tuple[str, Callable[[], str]]] = [
        ("models listed", lambda: _models(t)),
        ("text chat", lambda: f"{len(t.chat('Say hello.'))} chars"),
        ("json_schema output", lambda: _json_schema(t)),
    ]
    if "vision" in caps:
        checks.append(("1x1 image chat", lambda: _image(t)))
    failed = 0
    for name, check in checks:
        t0 = time.monotonic()
        try:
            detail, ok = check(), True
        except (OSError, RuntimeError, ValueError, KeyError, IndexError) as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
        failed += not ok
        print(
            f"{'ok  ' if ok else 'FAIL'} {name:<20} {(time.monotonic() - t0) * 1000:7.0f} ms"
            f"  {detail}"
        )
    return exitcodes.FAILED if failed else exitcodes.OK


def _image(t: EngineClient) -> str:
    url = "data:image/png;base64," + base64.b64encode(PIXEL).decode()
    answer = t.chat(
        [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
    )
    return f"{len(answer)} chars"


def _models(t: EngineClient) -> str:
    listed = {m.get("id") for m in t.call("GET", "/v1/models").get("data", [])}
    missing = [n for n in t.names if n not in listed]
    if missing:
        raise RuntimeError(f"not listed: {', '.join(missing)}")
    return ", ".join(t.names)


# Every document SCHEMA allows, whitespace removed: what a constrained answer cut short
# must be a prefix of.
WHOLE = ('{"ok":true}', '{"ok":false}')


def _json_schema(t: EngineClient) -> str:
    text, finish = t.answer(
        "Answer in JSON.",
        max_tokens=64,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "probe", "schema": SCHEMA, "strict": True},
        },
    )
    try:
        data = json.loads(text)
    except ValueError:
        # The grammar allows any whitespace between tokens (xgrammar's any_whitespace, unless
        # the engine sets structured_outputs_config.disable_any_whitespace), and a weak model
        # may pad it until max_tokens (issue 20: a healthy engine failed here). Cut short,
        # a constrained answer is still a prefix of a document of the schema; free text is not.
        compact = "".join(text.split())
        if finish == "length" and compact and any(w.startswith(compact) for w in WHOLE):
            return (
                f"constrained, cut at max_tokens after {compact!r} (the model padded "
                "whitespace; structured_outputs_config: {disable_any_whitespace: true} stops it)"
            )
        raise ValueError(f"not JSON ({finish}): {text[:100]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool) or set(data) != {"ok"}:
        raise ValueError(f"does not match the schema: {text[:100]}")
    return text.strip()
