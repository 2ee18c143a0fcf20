"""Runs INSIDE the engine venv (never imported by the supervisor): dumps vLLM's CLI flags.

Usage: ENGINE_PYTHON in_venv_probe.py [--parse < argv-lists.json]
Prints JSON {"flags": {...}} or, with --parse, {"results": [{"ok": bool, "error": str}]}.
vLLM has no machine-readable flag list, and the module that builds its parser moved
between releases (docs/vllm-behaviour.md), so try each known home. Importing it pulls in
torch: 6-9 s, which is why the supervisor caches the answer per venv and version.
"""

import argparse
import contextlib
import importlib
import io
import json
import sys

_HOMES = (
    "vllm.entrypoints.common.cli_args",  # 0.33
    "vllm.entrypoints.launchers.cli_args",  # 0.32
    "vllm.entrypoints.openai.cli_args",  # 0.11 - 0.20
)
_PARSERS = ("vllm.utils.argparse_utils", "vllm.utils")


def build() -> argparse.ArgumentParser:
    make = None
    for home in _HOMES:
        try:
            make = importlib.import_module(home).make_arg_parser
            break
        except (ImportError, AttributeError):
            continue
    if make is None:
        raise SystemExit(json.dumps({"error": "make_arg_parser not found in " + ", ".join(_HOMES)}))
    for home in _PARSERS:
        try:
            flexible = importlib.import_module(home).FlexibleArgumentParser
            break
        except (ImportError, AttributeError):
            continue
    else:
        raise SystemExit(json.dumps({"error": "FlexibleArgumentParser not found"}))
    parser: argparse.ArgumentParser = make(flexible(description="probe"))
    return parser


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> dict[str, object]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
        return {"ok": True, "error": ""}
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        # pydantic errors span lines; keep from the `error:` line on.
        start = max((i for i, ln in enumerate(lines) if "error:" in ln), default=len(lines) - 1)
        return {"ok": False, "error": " ".join(ln.strip() for ln in lines[start : start + 3])}


def main() -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        parser = build()
    if sys.argv[1:2] == ["--parse"]:
        # stdin: a JSON list of argv lists; one parser (one torch import) judges them all.
        print(json.dumps({"results": [_parse(parser, a) for a in json.load(sys.stdin)]}))
        return
    flags: dict[str, dict[str, object]] = {}
    for action in parser._actions:
        for opt in action.option_strings:
            if opt.startswith("--"):
                flags[opt] = {
                    "negatable": isinstance(action, argparse.BooleanOptionalAction),
                    "takes_value": action.nargs != 0,
                }
    print(json.dumps({"flags": flags}))


if __name__ == "__main__":
    main()
