"""vllmctl: the operator's command line. Imports stay light so `vllmctl status` is instant:
heavy modules are imported inside the command that needs them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import exitcodes

if TYPE_CHECKING:
    from .check import Report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vllmctl", description="Operate vllm-supervisor "
                                     "instances.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("check", help="validate the config and show what each model runs")
    p.add_argument("models", nargs="*", metavar="MODEL")
    p.add_argument("--config-dir", type=Path, default=None,
                   help="config directory (default /etc/vllm-supervisor, or $VSUP_CONFIG_DIR)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-probe", action="store_true",
                   help="do not ask the engine venv for its flag list when it is not cached")
    p.add_argument("--strict", action="store_true",
                   help="also parse each rendered command with the installed vLLM's own parser "
                        "(imports torch: ~10 s per model)")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return cmd_check(args)
    except BrokenPipeError:
        # `vllmctl check | head`: the reader left; no traceback. Python's docs advise pointing
        # stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exitcodes.FAILED
    return exitcodes.USAGE  # pragma: no cover - argparse requires a command


def cmd_check(args: argparse.Namespace) -> int:
    from .check import UnknownModel, default_config_dir, run_check

    config_dir = args.config_dir or default_config_dir()
    try:
        report = run_check(config_dir, args.models, probe=not args.no_probe, strict=args.strict)
    except UnknownModel as exc:
        print(f"vllmctl check: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    if args.json:
        print(json.dumps({
            "ok": report.ok,
            "config_dir": str(config_dir),
            "files": list(report.files),
            "problems": [p.as_dict() for p in report.all_problems()],
            "notes": report.notes,
            "models": {m.cfg.name: {
                "ok": m.ok,
                "engine": None if m.engine is None else {
                    "distribution": m.engine.distribution, "version": m.engine.version,
                    "xgrammar": m.engine.xgrammar, "venv": str(m.engine.venv)},
                "argv": None if m.command is None else list(m.command.argv),
                "env": None if m.command is None else m.command.redacted_env(),
                "problems": [p.as_dict() for p in m.problems],
            } for m in report.models},
        }, indent=2))
    else:
        _print_check(report)
    return exitcodes.OK if report.ok else exitcodes.CONFIG


def _print_check(report: Report) -> None:
    from .check import describe_env

    out = sys.stdout
    for p in report.problems:
        print(p, file=sys.stderr if p.severity == "error" else out)
    for m in report.models:
        print(f"{m.cfg.name}: {'ok' if m.ok else 'INVALID'}", file=out)
        if m.engine is not None:
            xg = f", xgrammar {m.engine.xgrammar}" if m.engine.xgrammar else ""
            print(f"  engine   {m.engine.label}{xg} in {m.engine.venv}", file=out)
        if m.command is not None:
            print(f"  command  {m.command.shell_line()}", file=out)
            for line in describe_env(m.command):
                print(f"  env      {line}", file=out)
        for p in m.problems:
            print(f"  {p}", file=sys.stderr if p.severity == "error" else out)
    for n in report.notes:
        print(f"note: {n}", file=out)
    errors = [p for p in report.all_problems() if p.severity == "error"]
    if errors:
        print(f"config invalid: {len(errors)} error(s)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
