"""Can the user that runs a model's service use every path it needs?

A path the service user cannot read shows up late and badly: vLLM reports an unreadable
`model.safetensors` as `FileNotFoundError`, an unexecutable venv python is a traceback, and
`ProtectHome=yes` turns an interpreter under /root into `status=203/EXEC` with no hint
(docs/design.md, "Running as the given user"). This module answers before anything starts,
naming the path, the user, what blocks it (the first folder that cannot be entered, or the
file's mode) and the fix.

Checks run as the user in question: in-process when that is us (os.access(2) uses the real
ids, which systemd sets to User=), and in a forked child that drops to the user when we are
root and check for the unit's User= (so ACLs and group membership count exactly as the
kernel counts them). Standard library only.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

R, W, X = os.R_OK, os.W_OK, os.X_OK
# ProtectHome=yes|tmpfs hides these from the service (systemd.exec(5)).
HOME_DIRS = (Path("/home"), Path("/root"), Path("/run/user"))
MAX_FILES = 10_000  # a model folder is flat and small; a runaway tree is not walked whole
MISSING = "finds no such file"


@dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    @classmethod
    def current(cls) -> Identity:
        uid = os.getuid()
        return cls(user_name(uid), uid, os.getgid(), tuple(os.getgroups()))

    @classmethod
    def of(cls, user: str, group: str | None = None, extra_groups: Iterable[str] = ()) -> Identity:
        """The ids systemd gives User=/Group=/SupplementaryGroups=: the user's groups from
        the group database (initgroups(3), which systemd calls), plus the extra ones."""
        pw = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group else pw.pw_gid
        groups = set(os.getgrouplist(user, gid))
        for g in extra_groups:
            try:
                groups.add(grp.getgrnam(g).gr_gid)
            except KeyError:
                continue  # systemd fails the unit on an unknown group; not ours to report
        return cls(user, pw.pw_uid, gid, tuple(sorted(groups)))


@dataclass(frozen=True)
class Need:
    path: Path
    mode: int  # R | W | X, combined
    key: str  # the config key it comes from ("model", "venv", ...), "" for none
    what: str  # "the engine's python", "a weight file", ...
    create: bool = False  # may be missing: then the folder that would hold it must be writable
    fix: str = ""  # what to do instead of changing permissions (a folder that is not ours)


@dataclass(frozen=True)
class Denied:
    need: Need
    reason: str  # what blocks it, e.g. "cannot enter /root (drwx------ root:root)"
    at: str = ""  # the path that blocks (a folder above, the file, the folder to create in)
    bits: str = ""  # what is missing there: "x", "r", "rw", ...

    @property
    def missing(self) -> bool:
        return self.reason == MISSING

    def message(self, user: str) -> str:
        return f"{self.need.what} {self.need.path}: user {user} {self.reason}; {self.fix(user)}"

    def fix(self, user: str) -> str:
        if self.need.fix:
            return self.need.fix
        if "ProtectHome" in self.reason:
            return (
                "move it out of /home and /root (for example under /opt or /srv), or "
                "relax ProtectHome= in a drop-in (docs/deployment.md)"
            )
        if not self.at:
            return "create it, or correct the path in the config"
        group = _group_hint(user)
        return (
            f"fix: chgrp {group} {self.at} && chmod g+{self.bits} {self.at} (or chmod "
            f"o+{self.bits} {self.at}), or point the config at a copy {user} can use"
        )


def _bits(mode: int) -> str:
    return "".join(c for c, m in (("r", R), ("w", W), ("x", X)) if mode & m)


def _verbs(mode: int) -> str:
    return "/".join(v for v, m in (("read", R), ("write", W), ("execute", X)) if mode & m)


def _group_hint(user: str) -> str:
    try:
        return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    except KeyError:
        return user


def describe(path: Path) -> str:
    """`drwx------ root:root`, as ls shows it."""
    try:
        st = path.lstat()
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{stat.filemode(st.st_mode)} {user_name(st.st_uid)}:{group}"


def user_name(uid: int) -> str:
    """The login name of UID, or the number where the user database has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def hidden_by_protect_home(path: Path) -> bool:
    try:
        real = Path(os.path.realpath(path))
    except OSError:
        real = path
    return any(real == h or h in real.parents for h in HOME_DIRS)


Answer = tuple[str, str, str]  # (reason, the path that blocks, the missing bits)


def blocker(need: Need) -> Answer | None:
    """Why the current real ids cannot use NEED, or None when they can."""
    path = need.path
    if need.create and not os.path.lexists(path):
        holder = path.parent
        while not os.path.lexists(holder) and holder.parent != holder:
            holder = holder.parent
        return _reach(holder) or _may(holder, W | X, f"cannot create it: cannot write in {holder}")
    reached = _reach(path)
    if reached is not None:
        return reached
    if not os.path.exists(path):
        if hidden_by_protect_home(path) and os.environ.get("INVOCATION_ID"):
            return (
                "cannot see it: the unit's ProtectHome= hides /home, /root and /run/user "
                "from the service",
                "",
                "",
            )
        return (MISSING, "", "")
    return _may(path, need.mode, f"cannot {_verbs(need.mode)} it")


def _reach(path: Path) -> Answer | None:
    """Every folder above PATH must be enterable (search permission, path_resolution(7))."""
    for folder in reversed(path.parents):  # "/" first: name the outermost folder that blocks
        if not os.access(folder, X):
            if not os.path.exists(folder):
                return None  # a missing folder: the path itself is reported as missing
            return f"cannot enter {folder} ({describe(folder)})", str(folder), "x"
    return None


def _may(path: Path, mode: int, verb: str) -> Answer | None:
    if os.access(path, mode):
        return None
    return f"{verb} ({describe(path)})", str(path), _bits(mode)


def check(needs: list[Need], as_user: Identity | None = None) -> list[Denied] | None:
    """The needs AS_USER (default: us) cannot meet; None when we cannot tell (checking for
    another user needs root)."""
    if as_user is None or as_user.uid == os.getuid():
        return _check_here(needs)
    if os.geteuid() != 0:
        return None
    return _check_as(needs, as_user)


def _check_here(needs: list[Need]) -> list[Denied]:
    return [Denied(n, *why) for n in needs if (why := blocker(n)) is not None]


def _check_as(needs: list[Need], who: Identity) -> list[Denied]:
    """fork(2), drop to WHO (setgroups, setgid, setuid: the order setuid(2) requires), ask
    the kernel, send the answers back through a pipe. The child runs no Python threads and
    exits with os._exit, so nothing of the parent is flushed twice."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(rd)
            os.setgroups(list(who.groups))
            os.setgid(who.gid)
            os.setuid(who.uid)
            answers = [blocker(n) for n in needs]
            os.write(wr, json.dumps(answers).encode())
        finally:
            os._exit(0)
    os.close(wr)
    chunks = []
    with os.fdopen(rd, "rb") as f:
        while chunk := f.read(65536):
            chunks.append(chunk)
    os.waitpid(pid, 0)
    answers = json.loads(b"".join(chunks) or b"null")
    if not isinstance(answers, list) or len(answers) != len(needs):
        raise RuntimeError(f"the access check as {who.name} gave no answer")
    return [Denied(n, *why) for n, why in zip(needs, answers, strict=True) if why is not None]


def model_files(folder: Path) -> list[Path]:
    """Every file a local model folder holds (weights, config, tokenizer), symlinks followed
    as vLLM follows them."""
    out: list[Path] = []
    for dirpath, _dirs, files in os.walk(folder, followlinks=True):
        out += [Path(dirpath) / f for f in sorted(files)]
        if len(out) >= MAX_FILES:
            break
    return out[:MAX_FILES]


def venv_needs(venv: Path, entry: Path | None = None) -> list[Need]:
    """The engine venv: the program the supervisor executes (ENTRY, default bin/python) must
    run, and the interpreter bin/python points at (a symlink, or pyvenv.cfg's `home` for a
    copied one) must be there for the user too."""
    python = venv / "bin" / "python"
    entry = entry or python
    needs = [
        Need(venv / "pyvenv.cfg", R, "venv", "the engine venv's"),
        Need(entry, R | X, "venv", "the engine's executable"),
    ]
    real = Path(os.path.realpath(python))
    if real != python:
        needs.append(Need(real, R | X, "venv", "the interpreter the engine venv points at"))
    home = _pyvenv_home(venv)
    if home is not None:
        needs.append(
            Need(home, R | X, "venv", "the base Python of the engine venv (pyvenv.cfg home)")
        )
    return needs


def _pyvenv_home(venv: Path) -> Path | None:
    try:
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                return Path(value.strip())
    except OSError:
        pass
    return None


def protect_home_denials(needs: list[Need]) -> list[Denied]:
    """What a unit with ProtectHome=yes (or tmpfs) would not see at all."""
    return [
        Denied(
            n,
            "cannot see it: the unit's ProtectHome= hides /home, /root and "
            "/run/user from the service",
        )
        for n in needs
        if hidden_by_protect_home(n.path)
    ]


def env_paths(env: Mapping[str, str]) -> list[Need]:
    """Caches vLLM writes into, where the model's environment names them."""
    out = []
    for var, what in (("VLLM_CACHE_ROOT", "vLLM's compile cache"),):
        if env.get(var):
            out.append(Need(Path(env[var]), R | W | X, f"env.{var}", what, create=True))
    return out
