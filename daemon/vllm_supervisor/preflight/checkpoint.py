"""What a checkpoint is, read from its files alone (issue 20, `vllmctl add`): its config,
quantization, context length, vision, chat template, and the tool-call parser its family
uses. Nothing is guessed from the repo's name; a fact the files do not hold is None.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vllm_supervisor.gpu.estimate import model_dtype, text_config
from vllm_supervisor.host import files
from vllm_supervisor.preflight import quantization

# model_type -> vLLM's tool-call parser for that family (vLLM's tool calling docs, 0.32:
# "Qwen2.5 ... hermes", "Llama 3.1+ ... llama3_json", "Mistral ... mistral", ...). Offered
# only when the chat template itself renders `tools` (a base model's does not).
TOOL_PARSERS: Mapping[str, str] = {
    "qwen2": "hermes", "qwen2_moe": "hermes", "qwen3": "hermes", "qwen3_moe": "hermes",
    "llama": "llama3_json", "mistral": "mistral", "mixtral": "mistral",
    "granite": "granite", "granitemoe": "granite", "internlm2": "internlm", "jamba": "jamba",
    "deepseek_v3": "deepseek_v3", "glm4_moe": "glm45", "kimi_k2": "kimi_k2",
}  # fmt: skip
# model_type -> vLLM's reasoning parser, for families whose chat template thinks aloud.
REASONING_PARSERS: Mapping[str, str] = {"qwen3": "qwen3", "qwen3_moe": "qwen3"}


@dataclass(frozen=True)
class Checkpoint:
    folder: Path
    gguf: Path | None = None  # the .gguf file, for a GGUF model
    config: Mapping[str, object] = field(default_factory=dict, compare=False)  # config.json
    model_type: str | None = None
    quant_method: str | None = None
    context: int | None = None  # max_position_embeddings
    dtype: str | None = None
    vision: bool = False
    chat_template: bool = False  # the tokenizer has one (else chat needs engine.chat_template)
    template_tools: bool = False  # ... and it renders `tools`

    @property
    def tool_parser(self) -> str | None:
        if not self.template_tools or self.model_type is None:
            return None
        return TOOL_PARSERS.get(self.model_type)

    @property
    def reasoning_parser(self) -> str | None:
        return REASONING_PARSERS.get(self.model_type or "")


def read(path: Path) -> Checkpoint:
    """A model folder, or a .gguf file (whose own metadata we do not parse: its folder may
    still hold the base model's config and tokenizer files)."""
    gguf = path if path.suffix.lower() == ".gguf" else None
    folder = path.parent if gguf is not None else path
    config = quantization.read_config(folder) or {}
    context = text_config(config).get("max_position_embeddings")
    template = _template(folder)
    return Checkpoint(
        folder=folder,
        gguf=gguf,
        config=config,
        model_type=_str(config.get("model_type")),
        quant_method=quantization.checkpoint_method(config),
        context=context if isinstance(context, int) and not isinstance(context, bool) else None,
        dtype=model_dtype(config) if config else None,
        vision="vision_config" in config,
        chat_template=template is not None,
        template_tools=template is not None and "tools" in template,
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _template(folder: Path) -> str | None:
    """The chat template: chat_template.jinja (transformers 4.43+), or tokenizer_config.json's
    chat_template (a string, or a list of named templates)."""
    try:
        return files.read_text(folder / "chat_template.jinja", files.CONFIG_CAP)
    except (OSError, ValueError):
        pass
    try:
        tok = json.loads(files.read_bytes(folder / "tokenizer_config.json", files.CONFIG_CAP * 8))
    except (OSError, ValueError):
        return None
    got = tok.get("chat_template") if isinstance(tok, dict) else None
    if isinstance(got, list):
        got = " ".join(str(t.get("template", "")) for t in got if isinstance(t, dict))
    return got if isinstance(got, str) and got else None
