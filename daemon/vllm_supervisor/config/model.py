"""One model's validated config: a frozen leaf value that every side reads and none imports
back from (config/registry.py builds it, config/model_keys.py fills it in)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vllm_supervisor.config.gateway_keys import ModelGateway
from vllm_supervisor.config.nodes_keys import Nodes
from vllm_supervisor.config.settings import Supervision
from vllm_supervisor.engine.options import OptionValue

DEFAULT_VENV = Path("/opt/vllm-supervisor/engine")
ToolSupport = Literal["native", "react", "none"]


def default_venv() -> Path:
    """The engine venv of models that name none: $VSUP_ENGINE_VENV (set by the unit or a
    developer), else where scripts/install.sh puts it."""
    return Path(os.environ.get("VSUP_ENGINE_VENV") or DEFAULT_VENV)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    file: str
    line: int
    model: str
    served_model_names: tuple[str, ...]
    host: str
    port: int
    venv: Path
    gpus: tuple[int | str, ...] | None  # indexes or UUIDs (GPU-..., MIG-...)
    env: dict[str, str]
    offline: bool
    api_key_file: Path | None
    tool_support: ToolSupport
    description: str
    roles: tuple[str, ...]
    capabilities: tuple[str, ...]
    aliases: tuple[str, ...]
    deprecated: str | None
    engine: dict[str, OptionValue]
    extra_args: tuple[str, ...]
    # "engine.max_model_len" -> (file, line): lets later checks point at the right line.
    where: dict[str, tuple[str, int]] = field(default_factory=dict, compare=False, repr=False)
    supervision: Supervision = field(default_factory=Supervision)
    # Models sharing GPUs: at most one member is active at a time (runtime/group.py).
    gpu_group: str | None = None
    gateway: ModelGateway = field(default_factory=ModelGateway)  # on_demand, ttl, ... (gateway/)
    entrypoint: tuple[str, ...] | None = None  # None: the engine's own (EngineInfo.entrypoint)
    nodes: Nodes | None = None  # one engine across several hosts (config/nodes_keys.py)
    previous_venv: Path | None = None  # kept for `vllmctl rollback` (ctl/upgrade.py)

    def locate(self, key: str) -> tuple[str, int]:
        return self.where.get(key) or self.where.get(key.split(".")[0]) or (self.file, self.line)
