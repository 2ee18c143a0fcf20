"""A real systemd, booted in a container, for the `systemd` test tier.

The base root (Debian bookworm with systemd and a CPU engine venv) is built once by
scripts/make-systemd-root and cached beside the engine venv. Each test session boots a copy
of it: an overlayfs whose upper layer is thrown away afterwards, so the cached root stays
pristine and every session installs on a clean host. `systemd-nspawn -b` boots it; commands
run inside with nsenter(1) and a clean environment (this machine's PATH must not leak in).
The container shares this machine's network (unless booted in a network namespace of the
multi-node tier): engines it runs on 127.0.0.1 are reachable
from the tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

CLEAN_ENV = [
    "env",
    "-i",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    "HOME=/root",
]
REBOOT_EXIT = 133  # systemd-nspawn(1): the container asked for a reboot


class Container:
    def __init__(
        self, base: Path, work: Path, binds: dict[Path, str], netns: str | None = None
    ) -> None:
        """NETNS: boot inside that network namespace (ip-netns(8); a "host" of the multi-node
        tier) instead of sharing this machine's network."""
        self.base, self.work, self.binds, self.netns = base, work, binds, netns
        self.root = work / "merged"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self.console = work / "console.log"

    # ---- life ---------------------------------------------------------------------------
    def mount(self) -> None:
        for d in ("upper", "work", "merged"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={self.base},upperdir={self.work / 'upper'},workdir={self.work / 'work'}",
                str(self.root),
            ],
            check=True,
        )

    def boot(self, timeout: float = 90, settled: bool = True) -> None:
        """Boot and wait for systemd inside to answer. SETTLED: also wait for boot's job
        queue to empty ("running"/"degraded"); without it "starting" (basic.target reached,
        jobs still queued, systemctl(1) is-system-running) is enough. A boot that starts an
        enabled model stays "starting" until that engine serves, for as long as its load
        takes: CI on a slow machine passed 90 s there."""
        up = ("running", "degraded") if settled else ("starting", "running", "degraded")
        args = [
            "systemd-nspawn",
            "-D",
            str(self.root),
            "-b",
            "--register=no",
            "--keep-unit",
            "-q",
            "--console=read-only",
        ]
        args += [f"--bind-ro={src}:{dst}" for src, dst in self.binds.items()]
        if self.netns is not None:
            args.append(f"--network-namespace-path=/run/netns/{self.netns}")
        with self.console.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, (
                f"nspawn exited {self.proc.returncode}: "
                + self.console.read_text(errors="replace")[-2000:]
            )
            assert time.monotonic() < deadline, "the container did not boot in time"
            self.leader = self._leader()
            if self.leader:
                state = self.sh("systemctl is-system-running", check=False).stdout.strip()
                if state in up:
                    return
            time.sleep(0.5)

    def _leader(self) -> int:
        """The container's PID 1 seen from here: systemd-nspawn's child."""
        assert self.proc is not None
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return 0
        for pid in kids.split():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        return 0

    def reboot(self) -> None:
        """Reboot and return once systemd inside answers; what the boot starts (an enabled
        model's engine) is the caller's to wait for, with its own bound."""
        assert self.proc is not None
        self.sh("systemctl reboot", check=False)
        assert self.proc.wait(timeout=120) == REBOOT_EXIT, self.proc.returncode
        self.boot(settled=False)

    def shutdown(self) -> None:
        """Power off (every unit stopped by systemd itself); kill what is left if it hangs,
        then check that no process of the container's PID namespace remains."""
        if self.proc is not None and self.proc.poll() is None:
            ns = _pid_ns(self.leader)
            self.sh("systemctl poweroff", check=False)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.leader, signal.SIGKILL)  # PID 1 of a namespace takes all
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
            deadline = time.monotonic() + 15
            while ns and _in_ns(ns) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not ns or not _in_ns(ns), f"processes left in the container: {_in_ns(ns)}"

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.root)], check=False)

    # ---- inside -------------------------------------------------------------------------
    def sh(
        self,
        script: str,
        user: str | None = None,
        check: bool = True,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run SCRIPT with bash inside the container, as root or as USER (setpriv with the
        user's own groups, like a login would give)."""
        inner = ["bash", "-c", script]
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        if user is not None:
            inner = [
                "setpriv",
                f"--reuid={user}",
                f"--regid={user}",
                "--init-groups",
                "--reset-env",
                "env",
                *extra,
                *inner,
            ]
            extra = []
        cmd = ["nsenter", "-t", str(self.leader), "-a", *CLEAN_ENV, *extra, *inner]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(
                f"in the container: {script}\nrc={res.returncode}\n"
                f"stdout:{res.stdout[-3000:]}\nstderr:{res.stderr[-3000:]}"
            )
        return res

    def spawn(
        self, script: str, user: str, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start SCRIPT as USER in its own session inside the container and return at once.
        Its output goes to LOG (here); `setsid -w` makes it a session and group leader
        there, so `kill -- -PID` from inside reaches its whole group."""
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        cmd = [
            "nsenter",
            "-t",
            str(self.leader),
            "-a",
            *CLEAN_ENV,
            "setpriv",
            f"--reuid={user}",
            f"--regid={user}",
            "--init-groups",
            "--reset-env",
            "env",
            *extra,
            "setsid",
            "-w",
            "bash",
            "-c",
            script,
        ]
        with log.open("ab") as out:
            return subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        self.sh(
            f"install -D -m {mode:o} /dev/stdin {shlex.quote(path)} <<'VSUP_EOF'\n{text}\nVSUP_EOF"
        )

    def show(self, unit: str, prop: str) -> str:
        return self.sh(f"systemctl show -p {prop} --value {shlex.quote(unit)}").stdout.strip()

    def journal(self, unit: str, *args: str) -> str:
        return self.sh(
            f"journalctl --no-pager -o cat -u {shlex.quote(unit)} "
            + " ".join(shlex.quote(a) for a in args),
            check=False,
        ).stdout

    def journal_until(self, unit: str, pattern: str, *args: str, timeout: float = 15) -> str:
        """The unit's journal once `pattern` (a regex) is in it. journald reads a service's
        stdout stream on its own schedule: a line the service wrote before answering can
        still be missing from a query made the moment after (CI saw it, with '-p err')."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, text := self.journal(unit, *args)):
            assert time.monotonic() < deadline, f"no /{pattern}/ in the journal:\n{text[-3000:]}"
            time.sleep(0.2)
        return text

    def wait_for(self, what: str, check: object, timeout: float = 300, every: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(every)


def _pid_ns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def _in_ns(ns: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _pid_ns(int(entry)) == ns:
            found.append(int(entry))
    return found
