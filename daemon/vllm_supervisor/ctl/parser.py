"""vllmctl's argument parser, and the bash completion read off it (ctl/main.py runs them)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def seconds(text: str) -> float:
    """A finite number of seconds >= 0 (float() takes 'nan' and 'inf')."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument(
        "--socket-dir",
        default=None,
        help="where MODEL/admin.sock live "
        "(default $VSUP_RUNTIME_DIR, else your $XDG_RUNTIME_DIR/vllm-supervisor "
        "and then /run/vllm-supervisor)",
    )
    common.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help="config directory (default $VSUP_CONFIG_DIR, else /etc/vllm-supervisor)",
    )
    common.add_argument(
        "--state-dir",
        default=None,
        help="last failures (default "
        "$VSUP_STATE_DIR, else your $XDG_STATE_HOME/vllm-supervisor and then "
        "/var/lib/vllm-supervisor)",
    )
    parser = argparse.ArgumentParser(
        prog="vllmctl",
        description="Operate vllm-supervisor "
        "instances. Exit codes: 0 ok, 1 failed, 2 usage, 3 not "
        "running, 4 permission denied, 78 config invalid.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("status", parents=[common], help="one line per model")
    s.add_argument("models", nargs="*", metavar="MODEL")
    for name, help_ in (
        ("activate", "start the engine and follow its progress until ready"),
        ("restart", "restart the engine and follow it until ready"),
        (
            "reload",
            "re-read the config; restart the engine if its command changed (the unit's ExecReload)",
        ),
    ):
        a = sub.add_parser(name, parents=[common], help=help_)
        a.add_argument("model", metavar="MODEL")
        a.add_argument("--no-wait", action="store_true", help="return once accepted")
        a.add_argument("--timeout", type=seconds, default=900.0, help="seconds to wait (900)")
        if name == "activate":
            a.add_argument(
                "--swap",
                action="store_true",
                help="in a gpu_group: deactivate the active member first, instead of refusing",
            )
    d = sub.add_parser(
        "deactivate",
        parents=[common],
        help="drain running requests, then stop the engine (or put it to sleep: deactivate:)",
    )
    d.add_argument("model", metavar="MODEL")
    d.add_argument(
        "--drain-timeout",
        type=seconds,
        default=30.0,
        help="seconds to wait for running requests (30; 0: stop at once)",
    )
    d.add_argument("--no-wait", action="store_true", help="return once accepted")
    d.add_argument(
        "--stop",
        action="store_true",
        help="stop the engine even if the model sleeps on deactivate (ends a sleep too)",
    )
    d.add_argument(
        "--direct",
        action="store_true",
        help="ask the instance even when the host gateway runs (by default the gateway, which "
        "refuses while it has requests for the model in flight)",
    )
    for name, help_ in (
        ("upgrade", "move a model to another vLLM: check, candidate, golden check, switch"),
        ("rollback", "move a model back to the venv kept by its last upgrade, the same way"),
    ):
        up = sub.add_parser(name, parents=[common], help=help_)
        up.add_argument("model", metavar="MODEL")
        up.add_argument("--drain-timeout", type=seconds, default=30.0,
                        help="seconds the old engine may finish its requests (30)")  # fmt: skip
        up.add_argument("--timeout", type=seconds, default=900.0,
                        help="seconds the candidate may take to start (900)")  # fmt: skip
        up.add_argument("--with-downtime", action="store_true",
                        help="when no candidate can run beside the engine (no room, no "
                        "gateway), restart the engine on the new venv instead")  # fmt: skip
        if name == "upgrade":
            to = up.add_mutually_exclusive_group(required=True)
            to.add_argument("--venv", help="the engine venv to move to")
            to.add_argument("--vllm-version", metavar="V",
                            help="build a venv for vLLM V beside the current one")  # fmt: skip
            to.add_argument("--forget-previous", action="store_true",
                            help="drop the venv kept for rollback (deleted if unused)")  # fmt: skip
            to.add_argument("--abort", action="store_true", help="stop a running candidate")
    lg = sub.add_parser("logs", parents=[common], help="the engine's recent log lines")
    lg.add_argument("model", metavar="MODEL")
    lg.add_argument("-n", type=int, default=100, help="lines (100)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep following")
    for name, help_ in (
        ("metrics", "Prometheus text for the supervisor and engine"),
        ("config", "the rendered command and environment (secrets redacted)"),
    ):
        sub.add_parser(name, parents=[common], help=help_).add_argument("model", metavar="MODEL")
    pr = sub.add_parser("probe", parents=[common], help="preflight: names, chat, JSON, image")
    pr.add_argument("model", metavar="MODEL")
    pr.add_argument("--timeout", type=seconds, default=60.0, help="seconds per check (60)")
    sub.add_parser(
        "gpus", parents=[common], help="GPUs, their memory, and who holds it (models, orphans)"
    )
    gw = sub.add_parser(
        "gateway", parents=[common], help="the host gateway: per model, state, requests, TTL"
    )
    gw.add_argument("action", choices=["status"])
    sub.add_parser("completion", help="print the bash completion script").add_argument(
        "shell", choices=["bash"]
    )
    ex = sub.add_parser(
        "export", parents=[common], help="a LiteLLM router model_list for the configured models"
    )
    ex.add_argument("target", choices=["litellm"])
    ex.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host the models run on (repeat for several; default: each model's own host)",
    )
    ex.add_argument(
        "--via-gateway",
        action="store_true",
        help="point every model at each host's gateway (gateway.listen), not its own port",
    )
    ad = sub.add_parser(
        "add",
        parents=[common],
        help="write models.d/NAME.yaml for a model folder, a .gguf file or a repo id, checked",
    )
    ad.add_argument("name", metavar="NAME", help="the model's name (vllm-supervisor@NAME)")
    ad.add_argument("source", metavar="SOURCE", help="a model folder, a .gguf file, or org/name")
    ad.add_argument(
        "--port", type=int, default=None, help="the engine's port (default: a free one)"
    )
    ad.add_argument("--venv", default=None, help="the engine venv (default: the config's)")
    ad.add_argument("--dry-run", action="store_true", help="print the file instead of writing it")
    pl = sub.add_parser(
        "pull", parents=[common], help="download a repo into the unit's HF cache, as its user"
    )
    pl.add_argument("repo", metavar="REPO", help="org/name")
    pl.add_argument("--revision", default=None, help="a branch, tag or commit (default main)")
    pl.add_argument("--venv", default=None, help="the engine venv whose huggingface_hub to use")
    se = sub.add_parser("search", parents=[common], help="search the Hugging Face Hub for models")
    se.add_argument("text", metavar="TEXT")
    se.add_argument("--author", default=None, help="only this org or user")
    se.add_argument(
        "--filter", action="append", default=[], metavar="TAG", help="a tag: gguf, awq, ..."
    )
    se.add_argument("--task", default="text-generation", help="pipeline tag (text-generation)")
    se.add_argument("--sort", default="downloads", choices=["downloads", "likes", "last_modified"])
    se.add_argument("--limit", type=int, default=20, help="at most this many (20)")
    se.add_argument("--venv", default=None, help="the engine venv whose huggingface_hub to use")
    sub.add_parser("_models", parents=[common])  # names for completion; not shown in help
    p = sub.add_parser(
        "check", parents=[common], help="validate the config and show what each model runs"
    )
    p.add_argument("models", nargs="*", metavar="MODEL")
    p.add_argument(
        "--no-probe",
        action="store_true",
        help="do not ask the engine venv for its flag list when it is not cached",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="also parse each rendered command with the installed vLLM's own parser "
        "(imports torch: ~10 s per engine venv)",
    )
    return parser


def completion_script(parser: argparse.ArgumentParser) -> str:
    """The bash completion, read off the parser itself: every command, its options, and the
    words its positionals take (MODEL: configured and running model names)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    cases = []
    for name, p in sub.choices.items():
        if name.startswith("_"):
            continue
        opts = sorted(o for a in p._actions for o in a.option_strings if o not in ("-h", "--help"))
        words: list[str] = []
        models = False
        for a in p._actions:
            if a.option_strings:
                continue
            if a.choices:
                words += [str(c) for c in a.choices]
            elif a.metavar == "MODEL":
                models = True
        pos = " ".join(words)
        if models:
            pos = f"{pos} $(vllmctl _models 2>/dev/null)".strip()
        cases.append(f'    {name}) opts="{" ".join(opts)}"; words="{pos}" ;;')
    commands = " ".join(n for n in sub.choices if not n.startswith("_"))
    return "\n".join(
        [
            "# bash completion for vllmctl, generated from its argument parser: source it, or",
            "# install as /usr/share/bash-completion/completions/vllmctl "
            "(vllmctl completion bash > ...)",
            "_vllmctl() {",
            '  local cur=${COMP_WORDS[COMP_CWORD]} opts="" words=""',
            '  if [ "$COMP_CWORD" -eq 1 ]; then',
            f'    COMPREPLY=($(compgen -W "{commands}" -- "$cur")); return',
            "  fi",
            "  case ${COMP_WORDS[1]} in",
            *cases,
            "  esac",
            '  case "$cur" in -*) COMPREPLY=($(compgen -W "$opts" -- "$cur")); return;; esac',
            '  COMPREPLY=($(compgen -W "$words" -- "$cur"))',
            "}",
            "complete -F _vllmctl vllmctl",
            "",
        ]
    )
