"""vllmctl: the operator's command line. Imports stay light so `vllmctl status` is instant:
heavy modules are imported inside the command that needs them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vllm_supervisor import exitcodes

if TYPE_CHECKING:
    from vllm_supervisor.preflight.check import Report
    from vllm_supervisor.preflight.model_checks import AccessCheck


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
        a.add_argument("--timeout", type=float, default=900.0, help="seconds to wait (900)")
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
        type=float,
        default=30.0,
        help="seconds to wait for running requests (30; 0: stop at once)",
    )
    d.add_argument("--no-wait", action="store_true", help="return once accepted")
    d.add_argument(
        "--stop",
        action="store_true",
        help="stop the engine even if the model sleeps on deactivate (ends a sleep too)",
    )
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
    pr.add_argument("--timeout", type=float, default=60.0, help="seconds per check (60)")
    sub.add_parser(
        "gpus", parents=[common], help="GPUs, their memory, and who holds it (models, orphans)"
    )
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


def main(argv: list[str] | None = None) -> int:
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


def service_view(config_dir: Path) -> tuple[AccessCheck, str | None]:
    """Check paths as the installed unit's User= would meet them when CONFIG_DIR is the one
    the unit reads (docs/design.md, "Running as the given user"); as ourselves otherwise: a
    developer's quickstart config is run by the developer, whatever units the host has."""
    from vllm_supervisor.host.access import Identity
    from vllm_supervisor.host.unitfile import installed
    from vllm_supervisor.preflight.model_checks import AccessCheck

    unit = installed()
    if (
        unit is None
        or not unit.user
        or Path(os.path.realpath(config_dir)) != Path(os.path.realpath(unit.config_dir))
    ):
        return AccessCheck(), None
    try:
        who = Identity.of(unit.user, unit.group, unit.supplementary)
    except KeyError:
        return AccessCheck(hides_home=unit.hides_home), (
            f"the unit's User={unit.user} does not exist yet (scripts/install.sh creates it "
            "with systemd-sysusers): paths not checked as that user"
        )
    # The unit's own environment decides where HF_HOME and the caches are, not root's.
    env = {**os.environ, **unit.environment}
    return AccessCheck(who=who, hides_home=unit.hides_home, environ=env, managed=unit.managed), None


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
