"""YAML -> a tree of nodes that remember their file and line.

PyYAML's plain `safe_load` forgets positions and silently keeps the last of two duplicate
keys; an operator who writes `port:` twice deserves to hear about it, with the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from vllm_supervisor.config.problems import Problem

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class YNode:
    """One YAML node: a scalar, a mapping (str -> YNode) or a sequence of YNodes."""

    file: str
    line: int
    scalar: Scalar = None
    mapping: dict[str, YNode] | None = None
    sequence: list[YNode] | None = None
    key_lines: dict[str, int] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if self.mapping is not None:
            return "mapping"
        if self.sequence is not None:
            return "list"
        return type(self.scalar).__name__ if self.scalar is not None else "null"

    def plain(self) -> object:
        """The node as ordinary Python values (for free-form maps such as speculative_config)."""
        if self.mapping is not None:
            return {k: v.plain() for k, v in self.mapping.items()}
        if self.sequence is not None:
            return [v.plain() for v in self.sequence]
        return self.scalar


def load(text: str, file: str) -> tuple[YNode | None, list[Problem]]:
    """Parse one YAML document. Syntax errors come back as problems, not exceptions."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        return None, [Problem(file, line, "", f"YAML syntax error: {exc.problem or exc}")]
    except yaml.YAMLError as exc:
        return None, [Problem(file, 0, "", f"YAML error: {exc}")]
    finally:
        loader.dispose()
    if root is None:
        return None, []
    problems: list[Problem] = []
    return _convert(root, file, yaml.SafeLoader(""), problems), problems


def _convert(node: yaml.Node, file: str, ctor: yaml.SafeLoader, out: list[Problem]) -> YNode:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        mapping: dict[str, YNode] = {}
        key_lines: dict[str, int] = {}
        for knode, vnode in node.value:
            kline = knode.start_mark.line + 1
            key = ctor.construct_object(knode) if isinstance(knode, yaml.ScalarNode) else None
            if not isinstance(key, str | int | float) or isinstance(key, bool):
                out.append(Problem(file, kline, "", "mapping keys must be plain strings"))
                continue
            skey = str(key)
            if skey in mapping:
                first = key_lines[skey]
                out.append(Problem(file, kline, skey, f"duplicate key (first set on line {first})"))
                continue
            mapping[skey] = _convert(vnode, file, ctor, out)
            key_lines[skey] = kline
        return YNode(file, line, mapping=mapping, key_lines=key_lines)
    if isinstance(node, yaml.SequenceNode):
        return YNode(file, line, sequence=[_convert(v, file, ctor, out) for v in node.value])
    value = ctor.construct_object(node)
    if not isinstance(value, str | int | float | bool) and value is not None:
        # Timestamps, binary and friends: keep the source text, validation reports the type.
        value = str(node.value)
    return YNode(file, line, scalar=value)
