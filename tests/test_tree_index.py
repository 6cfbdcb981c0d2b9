"""The loop model reads subtrees through one index of the module (gacclint/loops/tree.py),
built by per-type readers generated from libcst's field annotations. Brute force is the
generic reading of every field (`_direct_children`): the index must give the same nodes
in the same order, the same subtrees and the same scopes, on libcst's tree and on the
lean one (gacclint/loops/lean.py), for every fixture and for generated programs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import libcst as cst
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gacclint.loops.lean import lean_module
from gacclint.loops.tree import Tree, _direct_children, matches

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
_SCOPES = (cst.Lambda, cst.FunctionDef, cst.ClassDef)


def _preorder(node: cst.CSTNode, enter_scopes: bool = True) -> list[cst.CSTNode]:
    found, stack = [], [node]
    while stack:
        current = stack.pop()
        found.append(current)
        if not enter_scopes and current is not node and matches(type(current), _SCOPES):
            continue
        stack.extend(reversed(_direct_children(current)))
    return found


def _check_index(module: cst.Module) -> None:
    for build in (Tree.build, Tree._build_iteratively):  # the second is the first's fallback
        tree = Tree()
        build(tree, module)
        _check_tree(tree, module)


def _check_tree(tree: Tree, module: cst.Module) -> None:
    everything = _preorder(module)
    assert list(tree.walk(module)) == everything
    for node in everything:
        if matches(type(node), (cst.FunctionDef, cst.ClassDef, cst.For, cst.While, cst.If, cst.Call)):
            assert list(tree.walk(node)) == _preorder(node)
            assert list(tree.walk(node, enter_scopes=False)) == _preorder(node, enter_scopes=False)
            assert tree.children(node) == _direct_children(node)
            assert list(tree.find(node, cst.Call)) == [n for n in _preorder(node) if isinstance(n, cst.Call)]
    assert tree.ordered(cst.Name, cst.Attribute) == [n for n in everything if isinstance(n, (cst.Name, cst.Attribute))]


def _both_trees(source: str) -> list[cst.Module]:
    return [cst.parse_module(source), lean_module(source, ast.parse(source))[0]]


@pytest.mark.parametrize("path", sorted(FIXTURES.rglob("*.py")), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_index_reads_every_fixture_as_the_fields_say(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    try:
        ast.parse(source)
    except SyntaxError:
        pytest.skip("not Python")
    for module in _both_trees(source):
        _check_index(module)


_STATEMENTS = st.sampled_from([
    "x = f(a, *b, c=d, **e)[1:2, ::3]",
    "from . import (a as b, c)",
    "global g",
    "y: int = lambda q=1, *r, s, **t: (q, r)",
    "del a.b, c[0]",
    "assert not a or b and c, f'{x!r:>{w}}'",
    "z = [i async for i in j if i] if k else {m: n for m, n in o}",
    "raise E from F",
    "with a as (b, c), d: pass",
    "try:\n    pass\nexcept (A, B) as e:\n    pass\nelse:\n    pass\nfinally:\n    pass",
    "@dec(1)\nclass K(Base, metaclass=M):\n    def m(self) -> 'T':\n        yield from g\n        return",
    "for p, q in r:\n    loss.backward()\nelse:\n    opt.step()",
    "while n := a - -b ** c @ d:\n    n -= 1; continue",
])


@settings(max_examples=60, deadline=None)
@given(st.lists(_STATEMENTS, min_size=1, max_size=6))
def test_index_of_generated_programs(statements: list[str]) -> None:
    source = "async def wrapper():\n" + "".join(
        "    " + line + "\n" for statement in statements for line in statement.splitlines())
    for module in _both_trees(source):
        _check_index(module)


def test_index_of_a_tree_deeper_than_the_recursion_limit() -> None:
    """Built by recursion, the index falls back to its explicit stack on a deeper tree."""
    chain: cst.BaseExpression = cst.Name("a")
    for _ in range(3 * sys.getrecursionlimit()):
        chain = cst.Attribute(value=chain, attr=cst.Name("b"))
    module = cst.Module(body=[cst.SimpleStatementLine(body=[cst.Expr(value=cst.Call(func=chain))])])
    tree = Tree()
    tree.build(module)
    _check_tree(tree, module)
    assert len(list(tree.walk(module))) == 2 + 2 + 2 * 3 * sys.getrecursionlimit() + 1
