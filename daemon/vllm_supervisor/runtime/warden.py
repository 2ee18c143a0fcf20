"""The engine's direct parent: ties the engine's whole process group to the supervisor's life.

    python -m vllm_supervisor.runtime.warden SUPERVISOR_PID -- ARGV...

Why a separate process: prctl(PR_SET_PDEATHSIG) on vLLM's API server would kill only the
server, and a killed server leaves VLLM::EngineCore and VLLM::Worker running and holding
memory (docs/vllm-behaviour.md). The warden leads the group (the supervisor spawned it with
setsid), asks for SIGUSR1 when the supervisor dies (prctl(2), PR_SET_PDEATHSIG), and answers
by SIGKILLing the whole group, itself included. It ignores SIGTERM, so the supervisor's
graceful stop (SIGTERM to the group) reaches vLLM and the warden waits for it. It exits the way
the engine did: same code, or the same signal re-raised. Under systemd, KillMode=mixed does
the same job; the warden covers every other way the supervisor can run (and die).
Imports only the standard library: it starts in tens of milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(
            "usage: python -m vllm_supervisor.runtime.warden SUPERVISOR_PID -- ARGV...",
            file=sys.stderr,
        )
        return 2
    supervisor = int(argv[0])
    group = os.getpgrp()

    def kill_group(_sig: int = 0, _frame: object = None) -> None:
        os.killpg(group, signal.SIGKILL)

    signal.signal(signal.SIGUSR1, kill_group)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGUSR1, 0, 0, 0)
    if os.getppid() != supervisor:  # it died before prctl took effect
        kill_group()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The engine inherits our stdout/stderr (the supervisor's pipe) and our process group;
    # it must not inherit the ignored SIGTERM: restore defaults in the child.
    child = subprocess.Popen(
        argv[2:],
        restore_signals=True,
        preexec_fn=_default_signals,
        close_fds=True,
        env=engine_env(os.environ),
    )
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
    if code < 0:
        # Die of the same signal, so the supervisor sees what killed the engine. SIGKILL and
        # SIGSTOP cannot have handlers (signal(7)): nothing to reset for them.
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


# process.spawn put the supervisor's own folder on PYTHONPATH for this module, and the
# engine's own PYTHONPATH here ("" when it had none): the engine gets its environment as the
# supervisor rendered it (process.ENGINE_PYTHONPATH names the same variable).
ENGINE_PYTHONPATH = "VSUP_ENGINE_PYTHONPATH"


def engine_env(env: Mapping[str, str]) -> dict[str, str]:
    out = dict(env)
    original = out.pop(ENGINE_PYTHONPATH, None)
    if original is not None:
        if original:
            out["PYTHONPATH"] = original
        else:
            out.pop("PYTHONPATH", None)
    return out


def _default_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
