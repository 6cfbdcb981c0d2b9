"""One pass over the module recording each node's children.

libcst computes `node.children` (and matchers walk subtrees) by running a
visitor that rebuilds nodes; analysis walks the same subtrees many times, so
it reads this map, built once by reading the nodes' dataclass fields. The
walk is iterative: expressions nested thousands deep cannot overflow it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import libcst as cst

_SCOPES = (cst.Lambda, cst.FunctionDef, cst.ClassDef)
# Fields that hold only whitespace, comments and punctuation.
_SKIPPED_FIELDS = ("whitespace", "lpar", "rpar", "leading_lines", "lines_after", "header", "footer", "comma",
                   "semicolon", "newline", "trailing_whitespace", "equal", "colon", "dot", "lbracket", "rbracket",
                   "lbrace", "rbrace", "operator", "asynchronous")
_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(node_type: type) -> tuple[str, ...]:
    names = _FIELDS.get(node_type)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(node_type) if not f.name.startswith(_SKIPPED_FIELDS))
        _FIELDS[node_type] = names
    return names


def _direct_children(node: cst.CSTNode) -> list[cst.CSTNode]:
    found: list[cst.CSTNode] = []
    for name in _fields(type(node)):
        value = getattr(node, name)
        if isinstance(value, cst.CSTNode):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(item for item in value if isinstance(item, cst.CSTNode))
    return found


class Tree:
    def __init__(self) -> None:
        self._children: dict[int, list[cst.CSTNode]] = {}

    def build(self, root: cst.CSTNode, on_node: Callable[[cst.CSTNode, cst.FunctionDef | None], None] | None = None) -> None:
        """Record children for the whole tree; `on_node(node, enclosing function)` sees each node in source order."""
        stack: list[tuple[cst.CSTNode, cst.FunctionDef | None]] = [(root, None)]
        while stack:
            node, scope = stack.pop()
            if on_node is not None:
                on_node(node, scope)
            children = _direct_children(node)
            self._children[id(node)] = children
            inner = node if isinstance(node, cst.FunctionDef) else scope
            stack.extend((child, inner) for child in reversed(children))

    def children(self, node: cst.CSTNode) -> list[cst.CSTNode]:
        return self._children.get(id(node), [])

    def walk(self, node: cst.CSTNode, enter_scopes: bool = True) -> Iterator[cst.CSTNode]:
        """`node` and its descendants in source order; optionally not into def/class/lambda."""
        stack = [node]
        while stack:
            current = stack.pop()
            yield current
            if not enter_scopes and current is not node and isinstance(current, _SCOPES):
                continue
            children = self._children.get(id(current))
            if children is None:  # a node made after the tree was read (an inlined predicate)
                children = _direct_children(current)
            stack.extend(reversed(children))

    def find(self, node: cst.CSTNode, *types: type, enter_scopes: bool = True) -> Iterator[cst.CSTNode]:
        return (n for n in self.walk(node, enter_scopes) if isinstance(n, types))
