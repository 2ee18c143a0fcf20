"""vllmctl: the operator's command line. Imports stay light so `vllmctl status` is instant:
heavy modules are imported inside the command that needs them."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from typing import TYPE_CHECKING

from vllm_supervisor import exitcodes
from vllm_supervisor.ctl.parser import build_parser, completion_script

if TYPE_CHECKING:
    from vllm_supervisor.preflight.check import Report


def main(argv: list[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        # `vllmctl logs` prints the engine's lines: a prompt in another script must not raise
        # UnicodeEncodeError on a terminal whose locale is not UTF-8 (systemd/logs.py: setup).
        sys.stdout.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    from vllm_supervisor.ctl.client import CtlError

    try:
        if args.command == "check":
            return cmd_check(args)
        if args.command == "probe":
            from vllm_supervisor.ctl.probe import cmd_probe

            return cmd_probe(args)
        if args.command == "gpus":
            from vllm_supervisor.ctl.gpus import cmd_gpus

            return cmd_gpus(args)
        if args.command in ("pull", "search"):
            from vllm_supervisor.ctl import hub

            return int(hub.cmd_pull(args) if args.command == "pull" else hub.cmd_search(args))
        if args.command == "add":
            from vllm_supervisor.ctl.add import cmd_add

            return cmd_add(args)
        if args.command in ("upgrade", "rollback"):
            from vllm_supervisor.ctl import upgrade

            return (
                upgrade.cmd_upgrade(args)
                if args.command == "upgrade"
                else upgrade.cmd_rollback(args)
            )
        if args.command == "gateway":
            from vllm_supervisor.ctl.gateway import cmd_gateway

            return cmd_gateway(args)
        if args.command == "completion":
            sys.stdout.write(completion_script(build_parser()))
            return exitcodes.OK
        from vllm_supervisor.ctl import commands

        return int(getattr(commands, "cmd_" + args.command.lstrip("_"))(args))
    except CtlError as exc:
        print(f"vllmctl: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return exitcodes.FAILED
    except BrokenPipeError:
        # `vllmctl check | head`: the reader left; no traceback. Python's docs advise pointing
        # stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exitcodes.FAILED
    return exitcodes.USAGE  # pragma: no cover - argparse requires a command


def cmd_check(args: argparse.Namespace) -> int:
    from vllm_supervisor.config.registry import default_config_dir
    from vllm_supervisor.preflight.check import UnknownModel, run_check

    config_dir = args.config_dir or default_config_dir()
    from vllm_supervisor.ctl.view import service_view

    paths, note = service_view(config_dir)
    try:
        report = run_check(
            config_dir, args.models, probe=not args.no_probe, strict=args.strict, paths=paths
        )
    except UnknownModel as exc:
        print(f"vllmctl check: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    if note:
        report.notes.append(note)
    for m in report.models:
        if m.rank is not None and m.rank.head and m.ok:
            # Rank 0 checks the whole group over its link (ctl/nodes.py).
            from vllm_supervisor.ctl.nodes import check_group

            m.problems += check_group(m.cfg, m.rank, m.engine)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "config_dir": str(config_dir),
                    "files": list(report.files),
                    "problems": [p.as_dict() for p in report.all_problems()],
                    "notes": report.notes,
                    "models": {
                        m.cfg.name: {
                            "ok": m.ok,
                            "engine": None
                            if m.engine is None
                            else {
                                "distribution": m.engine.distribution,
                                "version": m.engine.version,
                                "xgrammar": m.engine.xgrammar,
                                "venv": str(m.engine.venv),
                            },
                            "argv": None if m.command is None else list(m.command.argv),
                            "env": None if m.command is None else m.command.redacted_env(),
                            "problems": [p.as_dict() for p in m.problems],
                            "estimate": m.estimate
                            if m.estimate is None or isinstance(m.estimate, str)
                            else m.estimate.as_dict(),
                        }
                        for m in report.models
                    },
                },
                indent=2,
            )
        )
    else:
        _print_check(report)
    return exitcodes.OK if report.ok else exitcodes.CONFIG


def _print_check(report: Report) -> None:
    from vllm_supervisor.preflight.check import describe_env

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
        if m.estimate is not None:
            est = m.estimate if isinstance(m.estimate, str) else m.estimate.describe()
            print(f"  GPU mem  {est}", file=out)
        for p in m.problems:
            print(f"  {p}", file=sys.stderr if p.severity == "error" else out)
    for n in report.notes:
        print(f"note: {n}", file=out)
    errors = [p for p in report.all_problems() if p.severity == "error"]
    if errors:
        print(f"config invalid: {len(errors)} error(s)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
