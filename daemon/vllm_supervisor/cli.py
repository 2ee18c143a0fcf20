"""vllm-supervisor: the command line of the two daemons (systemd's ExecStart calls `run` for an
instance, `gateway` for the host gateway) and of `check`. Its own top module, over the
sides it starts: runtime (an instance) and gateway are siblings, neither imports the other."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vllm_supervisor import exitcodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vllm-supervisor",
        description="Supervise one vLLM model server, or run the host gateway.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("check", help="validate one model's config (exit 78 when invalid)")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--config-dir", type=Path, default=None)
    r = sub.add_parser("run", help="run and supervise MODEL's engine in the foreground")
    r.add_argument("model", metavar="MODEL")
    r.add_argument("--config-dir", type=Path, default=None)
    r.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the last failure is written (default $STATE_DIRECTORY, "
        "else $VSUP_STATE_DIR/MODEL, else /var/lib/vllm-supervisor/MODEL for "
        "root and $XDG_STATE_HOME/vllm-supervisor/MODEL for others)",
    )
    r.add_argument(
        "--runtime-dir",
        type=Path,
        default=None,
        help="holds MODEL/admin.sock (default $VSUP_RUNTIME_DIR, else "
        "systemd's $RUNTIME_DIRECTORY, else /run/vllm-supervisor for root and "
        "$XDG_RUNTIME_DIR/vllm-supervisor for others)",
    )
    r.add_argument(
        "--admin-group", default=None, help="group allowed on the admin socket (default vllm-admin)"
    )
    g = sub.add_parser(
        "gateway",
        help="the host gateway: one OpenAI endpoint for every model, started on demand",
    )
    g.add_argument("--config-dir", type=Path, default=None)
    g.add_argument("--listen", default=None, help="HOST:PORT (default: gateway.listen)")
    g.add_argument(
        "--runtime-dir",
        type=Path,
        default=None,
        help="where the instances' MODEL/admin.sock are (default: where vllmctl looks)",
    )
    g.add_argument(
        "--admin-socket",
        type=Path,
        default=None,
        help="the gateway's own admin socket (default: $RUNTIME_DIRECTORY/admin.sock under "
        "systemd, /run/vllm-gateway/admin.sock for root, else the user's runtime dir)",
    )
    args = parser.parse_args(argv)
    if args.command == "gateway":
        from vllm_supervisor.gateway.service import run as run_gateway

        return run_gateway(args.config_dir, args.listen, args.runtime_dir, args.admin_socket)
    if args.command == "run":
        from vllm_supervisor.runtime.service import run

        return run(args.model, args.config_dir, args.state_dir, args.runtime_dir, args.admin_group)
    from vllm_supervisor.config.registry import default_config_dir
    from vllm_supervisor.preflight.check import UnknownModel, run_check
    from vllm_supervisor.preflight.model_checks import AccessCheck

    config_dir = args.config_dir or default_config_dir()
    try:
        # Paths as this user: it is the service's user when the unit runs it (issue 20: a
        # model folder it cannot enter is named with its fix, here as at `run`).
        report = run_check(config_dir, [args.model], probe=False, paths=AccessCheck())
    except UnknownModel as exc:
        # The unit is vllm-supervisor@MODEL: an unknown MODEL is a config problem, not usage.
        print(f"vllm-supervisor: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    for problem in report.all_problems():
        print(problem, file=sys.stderr)
    return exitcodes.OK if report.ok else exitcodes.CONFIG


if __name__ == "__main__":
    sys.exit(main())
