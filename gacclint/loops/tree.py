"""One pass over the module recording each node's children, and an index of it.

libcst computes `node.children` (and matchers walk subtrees) by running a
visitor that rebuilds nodes; analysis walks the same subtrees many times, so
it reads what this pass records, built once by reading the nodes' dataclass
fields. The pass is iterative: expressions nested thousands deep cannot
overflow it.

The index numbers the nodes in source order (preorder): a node's subtree is
the run of numbers from its own up to `_end` of it, so `walk` is a slice and
`find` bisects per-type lists of numbers instead of walking the subtree
again. Types are compared with `type(node)`, each type's answer cached:
libcst's node classes are ABCs, and a failing `isinstance` on one is slow.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import threading
import typing
from bisect import bisect_left
from typing import Callable, Iterable, Iterator

import libcst as cst

from gacclint.loops.vocabulary import dotted_name

_SCOPES = (cst.Lambda, cst.FunctionDef, cst.ClassDef)

# Fields that hold only whitespace, comments and punctuation (and `Slice.first_colon`,
# `second_colon`, below: the lean tree shares one default `Colon` between slices, and a shared
# node makes `_find_shared` scan the whole index).
_SKIPPED_FIELDS = ("whitespace", "lpar", "rpar", "leading_lines", "lines_after", "header", "footer", "comma",
                   "semicolon", "newline", "trailing_whitespace", "equal", "colon", "dot", "lbracket", "rbracket",
                   "lbrace", "rbrace", "operator", "asynchronous")
_FIELDS: dict[type, tuple[str, ...]] = {}
# type of a field's value -> 1: a node, 2: a list or tuple (of nodes, maybe), 0: anything else.
_VALUE_KIND: dict[type, int] = {}
# type -> is a def, class or lambda (its body is another scope).
_IS_SCOPE: dict[type, bool] = {}
# (the types asked for, a node type) -> whether `isinstance` of that node type holds.
_MATCHES: dict[tuple[tuple[type, ...], type], bool] = {}


def _fields(node_type: type) -> tuple[str, ...]:
    """The fields of a node type that may hold nodes: not punctuation, not text (`Name.value`)."""
    names = _FIELDS.get(node_type)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(node_type)
                      if not f.name.startswith(_SKIPPED_FIELDS) and not f.name.endswith("_colon")
                      and not _holds_text_only(f.type))
        _FIELDS[node_type] = names
    return names


def _holds_text_only(annotation: object) -> bool:
    """`str`, or a `Literal` of strings (`Arg.star`): a field whose value is never a node."""
    if annotation is str:
        return True
    return typing.get_origin(annotation) is typing.Literal and all(
        isinstance(value, str) for value in typing.get_args(annotation))


def _value_kind(value_type: type) -> int:
    kind = _VALUE_KIND.get(value_type)
    if kind is None:
        kind = 1 if issubclass(value_type, cst.CSTNode) else 2 if issubclass(value_type, (list, tuple)) else 0
        _VALUE_KIND[value_type] = kind
    return kind


def _is_scope(node_type: type) -> bool:
    found = _IS_SCOPE.get(node_type)
    if found is None:
        found = _IS_SCOPE[node_type] = issubclass(node_type, _SCOPES)
    return found


def matches(node_type: type, types: tuple[type, ...]) -> bool:
    """`isinstance` for a node of `node_type`, without the ABC machinery once asked."""
    key = (types, node_type)
    found = _MATCHES.get(key)
    if found is None:
        found = _MATCHES[key] = issubclass(node_type, types)
    return found


def _direct_children_of_value(value: object) -> list[cst.CSTNode]:
    """The nodes a field's value holds: itself, or the nodes of a list or tuple."""
    kind = _value_kind(type(value))
    if kind == 1:
        return [value]  # type: ignore[list-item]
    if kind == 2:
        return [item for item in value if _value_kind(type(item)) == 1]  # type: ignore[attr-defined]
    return []


def _direct_children(node: cst.CSTNode) -> list[cst.CSTNode]:
    found: list[cst.CSTNode] = []
    for name in _fields(type(node)):
        found.extend(_direct_children_of_value(getattr(node, name)))
    return found


# node type -> a function giving `_direct_children` of its nodes, or None for a leaf; made
# from the type's field annotations.
_CHILDREN: dict[type, Callable[[cst.CSTNode], list[cst.CSTNode]] | None] = {}
_SENTINEL_TYPE = type(cst.MaybeSentinel.DEFAULT)


def _field_shape(annotation: object) -> str:
    """"node": holds a node, None or MaybeSentinel; "nodes": a sequence of nodes, maybe
    None; "any": anything else (read with `_direct_children_of_value`)."""
    if typing.get_origin(annotation) is typing.Union:
        shapes = {_field_shape(a) for a in typing.get_args(annotation) if a not in (type(None), _SENTINEL_TYPE)}
        return shapes.pop() if len(shapes) == 1 else "any"
    if typing.get_origin(annotation) is collections.abc.Sequence:
        item = typing.get_args(annotation)[0]
        items = typing.get_args(item) if typing.get_origin(item) is typing.Union else (item,)
        return "nodes" if all(isinstance(i, (type, typing.ForwardRef)) and _is_node_type(i) for i in items) else "any"
    return "node" if _is_node_type(annotation) else "any"


def _is_node_type(annotation: object) -> bool:
    if isinstance(annotation, typing.ForwardRef):  # libcst's forward references name its own nodes
        annotation = getattr(cst, annotation.__forward_arg__, None)
    return isinstance(annotation, type) and issubclass(annotation, cst.CSTNode)


def _field_shapes(node_type: type) -> list[tuple[str, str]]:
    """Each field of `_fields(node_type)` with its `_field_shape`."""
    annotations = {f.name: f.type for f in dataclasses.fields(node_type)}
    return [(name, _field_shape(annotations[name])) for name in _fields(node_type)]


def _children_maker(node_type: type) -> Callable[[cst.CSTNode], list[cst.CSTNode]] | None:
    """Generated once per type: `_direct_children` spelled out for that type's fields, trusting
    their annotations (the index reads every node of every module through it; a test
    holds it to `_direct_children` on every fixture)."""
    lines = []
    for name, shape in _field_shapes(node_type):
        if shape == "node":
            lines.append(f"    value = node.{name}\n"
                         f"    if value is not None and value.__class__ is not _SENTINEL: found.append(value)")
        elif shape == "nodes":
            lines.append(f"    value = node.{name}\n    if value: found.extend(value)")
        else:
            lines.append(f"    found.extend(_generic(node.{name}))")
    if not lines:
        return None
    namespace = {"_SENTINEL": _SENTINEL_TYPE, "_generic": _direct_children_of_value}
    exec("def children(node):\n    found = []\n" + "\n".join(lines) + "\n    return found\n", namespace)
    return namespace["children"]  # type: ignore[return-value]


# -- the numbering walk ------------------------------------------------------------
# `Tree.build` numbers a tree by recursion through visitors generated per node type (one
# call per node, each field read where it is), a third faster than a walk over lists of
# children. The visitors keep the build's state in these globals, the names a function
# reads fastest; one build runs at a time (`_BUILDING`), and each resets them when done.
_BUILDING = threading.Lock()
_nodes: list[cst.CSTNode] = []
_end: list[int] = []
_position: dict[int, int] = {}
_scope_above: list[int] = []
_numbers_by_kind: list[list[int]] = []  # the numbers of each node type, by the type's place in _KINDS
_KINDS: list[type] = []  # node types in the order their visitors were made


class _Visitors(dict):
    def __missing__(self, node_type: type) -> Callable[[cst.CSTNode, int], None]:
        visit = self[node_type] = _visitor(node_type)
        return visit


def _visitor(node_type: type) -> Callable[[cst.CSTNode, int], None]:
    """Numbers a node of `node_type` and, in the order `_children_maker` gives them, its subtree."""
    kind = len(_KINDS)
    inner = "number" if _is_scope(node_type) else "scope"  # the scope above the node's children
    lines = []
    for name, shape in _field_shapes(node_type):
        if shape == "node":
            lines.append(f"    value = node.{name}\n"
                         f"    if value is not None and value.__class__ is not _SENTINEL_TYPE:\n"
                         f"        _VISIT[value.__class__](value, {inner})")
        else:
            values = f"node.{name} or ()" if shape == "nodes" else f"_direct_children_of_value(node.{name})"
            lines.append(f"    for value in {values}:\n        _VISIT[value.__class__](value, {inner})")
    source = ("def visit(node, scope):\n"
              "    number = len(_nodes)\n"
              "    _nodes.append(node)\n"
              "    _scope_above.append(scope)\n"
              "    _position[id(node)] = number\n"
              f"    _numbers_by_kind[{kind}].append(number)\n")
    if lines:
        source += "    _end.append(0)\n" + "\n".join(lines) + "\n    _end[number] = len(_nodes)\n"
    else:
        source += "    _end.append(number + 1)\n"
    exec(source, globals())
    _KINDS.append(node_type)
    _numbers_by_kind.append([])
    return globals().pop("visit")  # type: ignore[no-any-return]


_VISIT: dict[type, Callable[[cst.CSTNode, int], None]] = _Visitors()


class Tree:
    def __init__(self) -> None:
        # The index (see the module docstring); nodes made after `build` are not in it.
        self._nodes: list[cst.CSTNode] = []  # preorder; keeps the nodes (and so their ids) alive
        self._position: dict[int, int] = {}  # id(node) -> its number
        self._end: list[int] = []  # number -> one past the last number of its subtree
        # number -> number of the nearest def/class/lambda strictly above it, -1 if none
        self._scope_above: list[int] = []
        self._by_type: dict[type, list[int]] = {}  # node type -> its numbers, ascending
        self._types_for: dict[tuple[type, ...], list[type]] = {}  # asked types -> node types present
        # Nodes that sit at several places of the tree (a tree may share one object): the index
        # holds their last place only, so `contains` asks the walk about them.
        self._shared: set[int] = set()

    def build(self, root: cst.CSTNode) -> None:
        """Number the whole tree: each node, its subtree's end, the scope above it, its type."""
        global _nodes, _end, _position, _scope_above
        with _BUILDING:
            _nodes, _end, _position, _scope_above = self._nodes, [], self._position, self._scope_above
            try:
                _VISIT[type(root)](root, -1)
                self._end = _end
                present = [kind for kind, numbers in enumerate(_numbers_by_kind) if numbers]
                present.sort(key=lambda kind: _numbers_by_kind[kind][0])  # in order of first appearance
                for kind in present:
                    self._by_type[_KINDS[kind]] = _numbers_by_kind[kind]
                    _numbers_by_kind[kind] = []
                deep = False
            except RecursionError:  # nested deeper than this thread's limit: walked without recursion
                self._nodes.clear(), self._position.clear(), self._scope_above.clear()
                deep = True
            finally:
                _nodes, _end, _position, _scope_above = [], [], {}, []
                for numbers in _numbers_by_kind:
                    numbers.clear()
        if deep:
            self._build_iteratively(root)
        else:
            self._find_shared()

    def _build_iteratively(self, root: cst.CSTNode) -> None:
        """`build` over an explicit stack: a 5,000-link attribute chain is far deeper than
        Python's recursion limit."""
        nodes, position, scope_above, by_type = self._nodes, self._position, self._scope_above, self._by_type
        end: list[int] = []
        children_of, is_scope = _CHILDREN, _IS_SCOPE
        # Depth first: (the rest of a node's children, the number of the nearest scope above
        # them, the node's number). A node's subtree ends where its children run out.
        stack: list[tuple[Iterator[cst.CSTNode], int, int]] = [(iter((root,)), -1, -1)]
        while stack:
            siblings, scope, parent = stack[-1]
            node = next(siblings, None)
            if node is None:
                stack.pop()
                if parent >= 0:
                    end[parent] = len(nodes)
                continue
            number = len(nodes)
            nodes.append(node)
            end.append(number + 1)
            position[id(node)] = number
            scope_above.append(scope)
            node_type = type(node)
            try:
                children_in = children_of[node_type]
            except KeyError:
                children_in = children_of[node_type] = _children_maker(node_type)
                _is_scope(node_type)
            try:
                by_type[node_type].append(number)
            except KeyError:
                by_type[node_type] = [number]
            if children_in is None:  # a name, a number, a string: a leaf
                continue
            children = children_in(node)
            if children:
                stack.append((iter(children), number if is_scope[node_type] else scope, number))
        self._end = end
        self._find_shared()

    def _find_shared(self) -> None:
        if len(self._position) < len(self._nodes):  # some node sits at several places
            seen: set[int] = set()
            for node in self._nodes:
                if id(node) in seen:
                    self._shared.add(id(node))
                seen.add(id(node))

    def children(self, node: cst.CSTNode) -> list[cst.CSTNode]:
        number = self._number(node)
        if number is None:
            return []
        found = []
        nodes, end = self._nodes, self._end
        child, stop = number + 1, end[number]
        while child < stop:
            found.append(nodes[child])
            child = end[child]
        return found

    def enclosing_function(self, node: cst.CSTNode) -> cst.FunctionDef | None:
        """The nearest def strictly around `node` (a class between them does not count)."""
        number = self._number(node)
        scope = self._scope_above[number] if number is not None else -1
        while scope >= 0 and type(self._nodes[scope]) is not cst.FunctionDef:
            scope = self._scope_above[scope]
        return self._nodes[scope] if scope >= 0 else None  # type: ignore[return-value]

    def ordered(self, *types: type) -> list[cst.CSTNode]:
        """Every node of the tree that is an instance of `types`, in source order."""
        return [self._nodes[n] for n in self._numbers_of(types, 0, len(self._nodes))]

    def span(self, node: cst.CSTNode) -> tuple[int, int] | None:
        """The numbers of `node`'s subtree, [first, end); None for a node made after `build`."""
        number = self._number(node)
        return None if number is None else (number, self._end[number])

    def _number(self, node: cst.CSTNode) -> int | None:
        number = self._position.get(id(node))
        return number if number is not None and self._nodes[number] is node else None

    def _numbers(self, start: int, enter_scopes: bool) -> Iterable[int]:
        """Numbers of the subtree of node `start`, in source order; optionally not into scopes.
        A node is inside a nested scope when its nearest scope above lies below `start`."""
        end = self._end[start]
        if enter_scopes:
            return range(start, end)
        scope_above = self._scope_above
        return [n for n in range(start, end) if scope_above[n] <= start]

    def walk(self, node: cst.CSTNode, enter_scopes: bool = True) -> Iterator[cst.CSTNode]:
        """`node` and its descendants in source order; optionally not into def/class/lambda."""
        start = self._number(node)
        if start is None:  # a node made after the tree was read (an inlined predicate)
            return self._walk_unindexed(node, enter_scopes)
        nodes = self._nodes
        if enter_scopes:
            return iter(nodes[start:self._end[start]])
        return (nodes[n] for n in self._numbers(start, enter_scopes))

    def _walk_unindexed(self, node: cst.CSTNode, enter_scopes: bool) -> Iterator[cst.CSTNode]:
        stack = [node]
        while stack:
            current = stack.pop()
            if not enter_scopes and current is not node and _is_scope(type(current)):
                yield current
                continue
            if current is not node and self._number(current) is not None:  # an indexed part of the new node
                yield from self.walk(current, enter_scopes)
                continue
            yield current
            stack.extend(reversed(_direct_children(current)))

    def find(self, node: cst.CSTNode, *types: type, enter_scopes: bool = True) -> Iterator[cst.CSTNode]:
        """The nodes of `walk(node, enter_scopes)` that are instances of `types`, in source order."""
        start = self._number(node)
        if start is None:
            return (n for n in self._walk_unindexed(node, enter_scopes) if matches(type(n), types))
        found = self._numbers_of(types, start, self._end[start])
        if not enter_scopes:
            scope_above = self._scope_above
            found = [n for n in found if scope_above[n] <= start]
        nodes = self._nodes
        return (nodes[n] for n in found)

    def names_read(self, node: cst.CSTNode) -> set[str]:
        """The names and dotted names `node` reads (`a`, `a.b`), not the attribute names on their
        own (`args.step` reads no variable `step`) nor keyword names (`log(x, step=n)`)."""
        found: set[str] = set()
        # `step` of `args.step`, and of `log(x, step=n)`: names of no variable
        attributes: set[int] = {id(arg.keyword) for arg in self.find(node, cst.Arg)
                                if arg.keyword is not None}  # type: ignore[attr-defined]
        for child in self.find(node, cst.Name, cst.Attribute):
            if type(child) is cst.Attribute:
                attributes.add(id(child.attr))  # type: ignore[attr-defined]
            elif id(child) in attributes:
                continue
            text = dotted_name(child)  # type: ignore[arg-type]
            if text:
                found.add(text)
        return found

    def _numbers_of(self, types: tuple[type, ...], start: int, end: int) -> list[int]:
        """Numbers in [start, end) of nodes that are instances of `types`, ascending."""
        found: list[int] = []
        lists = 0
        for node_type in self._present(types):
            numbers = self._by_type[node_type]
            low = bisect_left(numbers, start)
            high = bisect_left(numbers, end, low)
            if high > low:
                found.extend(numbers[low:high])
                lists += 1
        if lists > 1:
            found.sort()
        return found

    def _present(self, types: tuple[type, ...]) -> list[type]:
        """The node types of this tree that are instances of `types` (abstract ones expanded)."""
        present = self._types_for.get(types)
        if present is None:
            present = self._types_for[types] = [t for t in self._by_type if matches(t, types)]
        return present

    def contains(self, ancestor: cst.CSTNode, node: cst.CSTNode, enter_scopes: bool = True) -> bool:
        """`node` is one of `walk(ancestor, enter_scopes)`."""
        start, number = self._number(ancestor), self._number(node)
        if start is None or number is None or id(node) in self._shared:
            return any(found is node for found in self.walk(ancestor, enter_scopes))
        if not start <= number < self._end[start]:
            return False
        return enter_scopes or self._scope_above[number] <= start
