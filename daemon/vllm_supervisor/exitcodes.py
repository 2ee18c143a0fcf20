"""Exit codes shared by vllm-supervisor and vllmctl (documented in docs/cli.md)."""

OK = 0
FAILED = 1  # the operation was tried and failed
USAGE = 2  # argparse's own code for bad arguments
NOT_RUNNING = 3
PERMISSION = 4
# sysexits(3) EX_CONFIG, "something was found in an unconfigured or misconfigured state";
# the unit's RestartPreventExitStatus=78 keeps systemd from restart-looping on a bad file.
CONFIG = 78
