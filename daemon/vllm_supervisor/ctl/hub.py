"""`vllmctl pull REPO` and `vllmctl search TEXT`: the Hugging Face Hub, through the engine
venv's huggingface_hub (engine/in_venv_hub.py), never imported here (issue 20).

A pull lands where the unit reads: the unit's own environment (its HF_HOME, HF_TOKEN,
HF_ENDPOINT), and, when root pulls for the config the installed unit reads, as the unit's
User= (files root made would be unreadable or unwritable to the service). The library draws
its progress bar on a terminal and resumes a partial download.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

from vllm_supervisor import exitcodes
from vllm_supervisor.config.model import default_venv
from vllm_supervisor.host import hfcache
from vllm_supervisor.host.access import Identity

SCRIPT = Path(__file__).resolve().parent.parent / "engine" / "in_venv_hub.py"


def _ask(args: argparse.Namespace, argv: list[str]) -> tuple[dict[str, Any], str] | int:
    """The hub script's answer and the user it ran as; or the exit code, once the failure
    is said (`vllmctl pull: <what to do>`)."""
    code, answer, user = _run(args, argv)
    if not answer:
        return code or exitcodes.FAILED
    if not answer.get("ok"):
        print(f"vllmctl {argv[0]}: {answer.get('message')}", file=sys.stderr)
        return exitcodes.FAILED
    return answer, user


def _run(args: argparse.Namespace, argv: list[str]) -> tuple[int, dict[str, Any], str]:
    """Run the hub script in the engine venv, as the unit's user where that applies: its exit
    code, its JSON answer, and the user it ran as."""
    from vllm_supervisor.config.registry import default_config_dir
    from vllm_supervisor.ctl.view import service_view

    how, _note = service_view(args.config_dir or default_config_dir())
    env = dict(how.environ if how.environ is not None else os.environ)
    venv = Path(args.venv) if args.venv else Path(env.get("VSUP_ENGINE_VENV") or default_venv())
    python = venv / "bin" / "python"
    if not os.access(python, os.X_OK):
        print(f"vllmctl: {venv} is not an engine venv (no bin/python): give --venv, or set "
              "it up with scripts/setup-engine", file=sys.stderr)  # fmt: skip
        return exitcodes.CONFIG, {}, ""
    ids: dict[str, Any] = {}
    who = how.who or Identity.current()
    if how.who is not None and how.who.uid != os.getuid():
        ids = {"user": who.uid, "group": who.gid, "extra_groups": list(who.groups)}
        with contextlib.suppress(KeyError):  # no home: huggingface_hub needs none here
            env["HOME"] = pwd.getpwuid(who.uid).pw_dir
        _make_managed(hfcache.hub_dir(env), how.managed, who)
    try:
        done = subprocess.run(
            [str(python), str(SCRIPT), *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=None,  # huggingface_hub's progress bars, straight to the terminal
            text=True,
            cwd="/",
            check=False,
            **ids,
        )
    except OSError as exc:
        print(f"vllmctl: cannot run {python} as {who.name}: {exc}", file=sys.stderr)
        return exitcodes.FAILED, {}, who.name
    last = done.stdout.strip().splitlines()[-1:] or [""]
    try:
        answer = json.loads(last[0])
    except ValueError:
        answer = {"ok": False, "kind": "error", "message": done.stdout.strip()[-500:] or
                  f"exit {done.returncode} with no answer"}  # fmt: skip
    return done.returncode, answer if isinstance(answer, dict) else {}, who.name


def _make_managed(cache: Path, managed: tuple[Path, ...], who: Identity) -> None:
    """Before any unit has started, the unit's CacheDirectory= (which holds HF_HOME) does not
    exist yet, and its user cannot create it under /var/cache. Make it as systemd would at
    the unit's start (systemd.exec(5): owned by User=, mode 0755), so a pull can come first."""
    for folder in managed:
        if (folder == cache or folder in cache.parents) and not os.path.lexists(folder):
            folder.mkdir(mode=0o755, parents=True)
            os.chown(folder, who.uid, who.gid)


def cmd_pull(args: argparse.Namespace) -> int:
    if not hfcache.REPO_ID.match(args.repo) or "/" not in args.repo:
        print(f"vllmctl pull: {args.repo!r} is not a repo id 'org/name'", file=sys.stderr)
        return exitcodes.USAGE
    argv = ["pull", args.repo] + (["--revision", args.revision] if args.revision else [])
    got = _ask(args, argv)
    if isinstance(got, int):
        return got
    answer, user = got
    size = int(answer.get("bytes", 0))
    print(f"pulled {args.repo} at {answer.get('revision')} ({size / 1e9:.2f} GB) into "
          f"{answer.get('path')}, as {user}")  # fmt: skip
    pin = f" and pin it: engine: {{revision: {answer.get('revision')}}}" if args.revision else ""
    print(f"next: vllmctl add NAME {args.repo}{pin}")
    return exitcodes.OK


def cmd_search(args: argparse.Namespace) -> int:
    argv = ["search", args.text, "--sort", args.sort, "--limit", str(args.limit)]
    argv += ["--task", args.task]
    if args.author:
        argv += ["--author", args.author]
    for f in args.filter:
        argv += ["--filter", f]
    got = _ask(args, argv)
    if isinstance(got, int):
        return got
    models = got[0].get("models", [])
    if args.json:
        print(json.dumps(models, indent=2))
        return exitcodes.OK
    if not models:
        print("no model matches")
        return exitcodes.OK
    print(f"{'MODEL':<48} {'DOWNLOADS':>10} {'LIKES':>6}  NOTES")
    for m in models:
        notes = [t for t in m.get("tags", []) if t in QUANT_TAGS]
        if m.get("gated"):
            notes.append("gated (needs a token)")
        print(f"{m['id']:<48} {m.get('downloads') or 0:>10} {m.get('likes') or 0:>6}  "
              f"{', '.join(notes)}")  # fmt: skip
    return exitcodes.OK


# Hub tags that tell how a model is quantized (the format `vllmctl add` then reads).
QUANT_TAGS = frozenset({"gguf", "awq", "gptq", "fp8", "bitsandbytes", "compressed-tensors", "mlx"})
