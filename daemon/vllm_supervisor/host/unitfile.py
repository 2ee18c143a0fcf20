"""What the installed vllm-supervisor@.service says about the user it runs as.

`vllmctl check`, run as root, checks paths as the unit's User= would meet them, and refuses
paths the unit's ProtectHome= hides (docs/design.md, "Running as the given user"). This reads
the few keys that decide that from the unit file and its drop-ins, in systemd's order
(systemd.unit(5): the first unit file found in the search path, then drop-ins sorted by name,
the template's before the instance's; later assignments win, an empty one resets a list).
Standard library only.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = "vllm-supervisor@.service"
# systemd.unit(5), system units, highest priority first.
SEARCH = (
    "etc/systemd/system",
    "run/systemd/system",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
)
DEFAULT_CONFIG_DIR = Path("/etc/vllm-supervisor")  # config.DEFAULT_CONFIG_DIR; kept light
HIDING = {"yes", "true", "on", "1", "tmpfs"}  # ProtectHome= values that hide /home and /root


@dataclass(frozen=True)
class ServiceUnit:
    path: Path
    user: str | None
    group: str | None
    supplementary: tuple[str, ...]
    protect_home: str
    config_dir: Path  # the unit's Environment=VSUP_CONFIG_DIR=, else /etc/vllm-supervisor
    environment: dict[str, str]  # Environment= and EnvironmentFile= (HF_HOME, caches, ...)
    managed: tuple[Path, ...]  # Cache/State/RuntimeDirectory=: systemd makes them the user's

    @property
    def hides_home(self) -> bool:
        return self.protect_home.lower() in HIDING


def installed(model: str | None = None, root: Path = Path("/")) -> ServiceUnit | None:
    """The template unit as systemd would load it for MODEL's instance; None if absent."""
    unit = next((root / d / TEMPLATE for d in SEARCH if (root / d / TEMPLATE).is_file()), None)
    if unit is None:
        return None
    files = [unit]
    names = [TEMPLATE] + ([f"vllm-supervisor@{model}.service"] if model else [])
    for name in names:
        drop: dict[str, Path] = {}
        for d in reversed(SEARCH):  # a higher-priority folder's file of the same name wins
            folder = root / d / f"{name}.d"
            if folder.is_dir():
                drop.update({f.name: f for f in folder.glob("*.conf")})
        files += [drop[k] for k in sorted(drop)]
    keys: dict[str, str] = {}
    groups: list[str] = []
    env: dict[str, str] = {}
    managed: list[Path] = []
    for f in files:
        _read(f, keys, groups, env, managed, model or "")
    return ServiceUnit(
        unit,
        keys.get("User") or None,
        keys.get("Group") or None,
        tuple(groups),
        keys.get("ProtectHome", "no"),
        Path(env.get("VSUP_CONFIG_DIR") or DEFAULT_CONFIG_DIR),
        env,
        tuple(managed),
    )


# systemd.exec(5): the roots of CacheDirectory=, StateDirectory=, RuntimeDirectory=.
MANAGED_ROOTS = {
    "CacheDirectory": Path("/var/cache"),
    "StateDirectory": Path("/var/lib"),
    "RuntimeDirectory": Path("/run"),
}


def _read(
    path: Path,
    keys: dict[str, str],
    groups: list[str],
    env: dict[str, str],
    managed: list[Path],
    model: str,
) -> None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    section = ""
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section != "Service" or "=" not in line:
            continue
        key, _, value = (part.strip() for part in line.partition("="))
        value = value.replace("%i", model)
        if key == "SupplementaryGroups":
            if value:
                groups.extend(value.split())
            else:
                groups.clear()
        elif key in ("User", "Group", "ProtectHome"):
            keys[key] = value
        elif key == "Environment":
            for item in shlex.split(value):
                name, _, val = item.partition("=")
                env[name] = val
        elif key == "EnvironmentFile":
            _env_file(Path(value.lstrip("-")), env)
        elif key in MANAGED_ROOTS:
            managed += [MANAGED_ROOTS[key] / d for d in value.split()]


def _env_file(path: Path, env: dict[str, str]) -> None:
    """KEY=VALUE lines, # comments, optional quotes (systemd.exec(5), EnvironmentFile=)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return  # a '-' file may be absent; an unreadable one systemd would refuse itself
    for line in lines:
        line = line.strip()
        if line and not line.startswith(("#", ";")) and "=" in line:
            name, _, val = line.partition("=")
            env[name.strip()] = val.strip().strip("\"'")
