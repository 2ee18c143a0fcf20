"""Which of vLLM's tool-call parsers constrain a forced call's arguments to the function's
parameter schema (`tool_choice` named or `"required"`), as read from vLLM 0.32's source and
its parser classes (docs/vllm-behaviour.md, "Tool calling": how, and what each kind does).

- SCHEMA: the request gets the parameters' JSON schema as structured output; the arguments
  follow it.
- STRUCTURAL: the parser's native syntax under an xgrammar structural tag
  (VLLM_ENFORCE_STRICT_TOOL_CALLING, on by default): the call is forced, but its arguments
  are pinned to the schema only for a tool marked `"strict": true`, or for every tool with
  `--tool-strict-level parameter`. Otherwise they are free: hermes with random weights gave
  bare values (`0`, `true`).
- NOT_FORCED: named and required are treated as "auto": nothing forces a call at all.
"""

from __future__ import annotations

from vllm_supervisor.engine.versions import Version

READ_FROM = (0, 32, 0)  # the release these sets were read from

SCHEMA = frozenset({
    "apertus", "cohere_command3", "cohere_command4", "ernie45", "functiongemma", "gigachat3",
    "granite", "granite-20b-fc", "granite4", "hf", "hunyuan_a13b", "hy_v3", "internlm",
    "jamba", "lfm2", "llama4_pythonic", "minicpm5", "olmo3", "phi4_mini_json", "pythonic",
    "seed_oss", "step3", "xlam",
})  # fmt: skip
STRUCTURAL = frozenset({
    "deepseek_v3", "deepseek_v31", "deepseek_v32", "deepseek_v4", "deepseek_v41", "glm45",
    "glm47", "hermes", "hy_v4", "kimi_k2", "kimi_k3", "ling3", "llama3_json", "llama4_json",
    "longcat", "mimo", "minimax_m2", "openai", "plamo3", "qwen3_coder", "qwen3_json",
    "qwen3_xml", "step3p5",
})  # fmt: skip
NOT_FORCED = frozenset({
    "dots", "gemma4", "inkling", "k2_horizon", "minimax_m3", "mistral", "muse_glimmer",
    "poolside_v1",
})  # fmt: skip


def strict_level(extra_args: tuple[str, ...]) -> str | None:
    """--tool-strict-level VALUE (or =VALUE) in a model's extra_args."""
    for i, token in enumerate(extra_args):
        if token.startswith("--tool-strict-level="):
            return token.split("=", 1)[1].lower()
        if token == "--tool-strict-level" and i + 1 < len(extra_args):
            return extra_args[i + 1].lower()
    return None


def unconstrained(parser: str, release: Version, extra_args: tuple[str, ...]) -> str | None:
    """Why a named or required tool_choice leaves this parser's arguments free of the
    function's schema, or None when it does not (or for releases these sets were not read
    from: nothing is claimed for them)."""
    if release < READ_FROM:
        return None
    if parser in STRUCTURAL and strict_level(extra_args) != "parameter":
        return (
            f"--tool-call-parser {parser} forces the call for a named or required tool_choice "
            "but leaves its arguments free of the function's schema, unless the tool sets "
            '"strict": true or the engine runs with --tool-strict-level parameter '
            "(extra_args)"
        )
    if parser in NOT_FORCED:
        return (
            f"--tool-call-parser {parser} treats a named or required tool_choice as auto: "
            "nothing forces a call, nor its arguments"
        )
    return None
