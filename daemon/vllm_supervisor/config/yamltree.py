"""YAML -> a tree of nodes that remember their file and line.

PyYAML's plain `safe_load` forgets positions and silently keeps the last of two duplicate
keys; an operator who writes `port:` twice deserves to hear about it, with the line.

Bounded, because a reload parses whatever the file holds while an engine serves (issue 18):
an alias that contains itself (`a: &a [*a]`) or deep nesting ended the supervisor with a
RecursionError, and a "billion laughs" (aliases that repeat each other) hung its loop while
the tree was expanded. Aliases are expanded here, where every value becomes a node, so the
nodes are counted after expansion and the depth is capped; an anchor used the ordinary way
(a block named once, reused a few times) stays far below both. PyYAML's own composer
recurses too: a RecursionError or MemoryError in it is a problem with the line it reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import yaml

from vllm_supervisor.config.problems import Problem

Scalar = str | int | float | bool | None
MAX_DEPTH = 64  # nested mappings and lists; models.yaml needs about 6
MAX_NODES = 100_000  # values after aliases are expanded; 300 models take about 10,000


class _TooBig(Exception):
    def __init__(self, line: int, why: str) -> None:
        super().__init__(why)
        self.line, self.why = line, why


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
    """Parse one YAML document. Syntax errors, and documents too deep or too large once
    their aliases are expanded, come back as problems, not exceptions."""
    try:
        # The constructor reads the text already: a control character is refused here
        # (yaml.reader.ReaderError), and found by tests/config/test_properties.py.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        return None, [Problem(file, 0, "", f"YAML error: {exc}")]
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        return None, [Problem(file, line, "", f"YAML syntax error: {exc.problem or exc}")]
    except yaml.YAMLError as exc:
        return None, [Problem(file, 0, "", f"YAML error: {exc}")]
    except (RecursionError, MemoryError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else "too large"
        return None, [Problem(file, loader.line + 1, "", f"YAML {why} to parse")]
    finally:
        loader.dispose()
    if root is None:
        return None, []
    problems: list[Problem] = []
    try:
        return _Converter(file, problems).convert(root, 1), problems
    except _TooBig as exc:
        return None, [Problem(file, exc.line, "", exc.why)]
    except (RecursionError, MemoryError):
        return None, [Problem(file, root.start_mark.line + 1, "", "YAML too large to read")]


class _Converter:
    """yaml nodes -> YNodes, counting every node made (an alias is expanded where it is
    used, so its nodes count again) and how deep it is."""

    def __init__(self, file: str, out: list[Problem]) -> None:
        self.file, self.out, self.nodes = file, out, 0
        self.ctor = yaml.SafeLoader("")

    def convert(self, node: yaml.Node, depth: int) -> YNode:
        line = node.start_mark.line + 1
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(
                line,
                f"more than {MAX_NODES} values once its aliases are expanded (aliases that "
                "repeat each other, a 'billion laughs'?): refused",
            )
        if depth > MAX_DEPTH:
            raise _TooBig(
                line,
                f"nested deeper than {MAX_DEPTH} levels (an alias that contains itself?): refused",
            )
        file, out = self.file, self.out
        if isinstance(node, yaml.MappingNode):
            mapping: dict[str, YNode] = {}
            key_lines: dict[str, int] = {}
            for knode, vnode in node.value:
                kline = knode.start_mark.line + 1
                key = self.scalar(knode) if isinstance(knode, yaml.ScalarNode) else None
                if not isinstance(key, str | int | float) or isinstance(key, bool):
                    out.append(Problem(file, kline, "", "mapping keys must be plain strings"))
                    continue
                skey = str(key)
                if skey in mapping:
                    first = key_lines[skey]
                    out.append(
                        Problem(file, kline, skey, f"duplicate key (first set on line {first})")
                    )
                    continue
                mapping[skey] = self.convert(vnode, depth + 1)
                key_lines[skey] = kline
            return YNode(file, line, mapping=mapping, key_lines=key_lines)
        if isinstance(node, yaml.SequenceNode):
            return YNode(file, line, sequence=[self.convert(v, depth + 1) for v in node.value])
        value = self.scalar(node)
        if (not isinstance(value, str | int | float | bool) and value is not None) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            # Timestamps, binary and friends, and .nan/.inf (no setting takes them: a NaN
            # passes every `< minimum` check): keep the source text, validation reports
            # the type with the key.
            value = str(node.value)
        return YNode(file, line, scalar=value)

    def scalar(self, node: yaml.Node) -> object:
        """The node's value as YAML types it; a tag no safe loader knows (`!0`,
        `!!python/object`) or a value its tag refuses (`!!int x`) is a problem, and the
        source text stands in (found by tests/config/test_properties.py)."""
        try:
            return self.ctor.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self.out.append(Problem(self.file, node.start_mark.line + 1, "", f"YAML: {problem}"))
            return str(node.value)
