"""Whose eyes `vllmctl` checks paths with: the installed unit's User= (with its groups and
environment) when the config folder is the one the unit reads, else the caller's own
(docs/design.md, "Running as the given user"). Shared by check, add, pull and search."""

from __future__ import annotations

import os
from pathlib import Path

from vllm_supervisor.preflight.model_checks import AccessCheck


def service_view(config_dir: Path) -> tuple[AccessCheck, str | None]:
    """Check paths as the installed unit's User= would meet them when CONFIG_DIR is the one
    the unit reads (docs/design.md, "Running as the given user"); as ourselves otherwise: a
    developer's quickstart config is run by the developer, whatever units the host has."""
    from vllm_supervisor.host.access import Identity
    from vllm_supervisor.host.unitfile import installed

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
