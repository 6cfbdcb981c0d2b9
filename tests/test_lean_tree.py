"""The check path reads CPython's tree into libcst's node classes (gacclint/loops/lean.py);
fixes parse with libcst. The loop model must see the same tree either way: the same node
types and fields, the same parentheses, the same text for every expression and the same
place for every node. Checked node by node against libcst on every fixture, on hand-written
layouts, and on generated expressions; and the findings of both paths are compared."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import libcst as cst
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libcst.metadata import MetadataWrapper, PositionProvider

from gacclint.engine import lint_module, parse
from gacclint.loops.lean import lean_module
from gacclint.loops.tree import _direct_children
from gacclint.loops.vocabulary import code_of, forget_code
from gacclint.selection import Selection

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# Layout libcst keeps and CPython does not, which nothing in the model reads, is not
# compared: the literal text of an f-string (CPython splits `f"{x=}"` differently), so
# only the expressions in it are; a slice's colons; the place of a subscript element
# followed by a trailing comma; and the comment after a starred element's comma, which
# libcst counts as part of the element's text.
_PLACE_UNREAD = (cst.Slice, cst.SubscriptElement)


def _formatted_expressions(node: cst.FormattedString) -> list[cst.CSTNode]:
    found: list[cst.CSTNode] = []
    parts = list(node.parts)
    while parts:
        part = parts.pop(0)
        if isinstance(part, cst.FormattedStringExpression):
            found.append(part.expression)
            parts[:0] = list(part.format_spec or ())
    return found


def _compared_children(node: cst.CSTNode) -> list[cst.CSTNode]:
    if isinstance(node, cst.FormattedString):
        return _formatted_expressions(node)
    if isinstance(node, cst.Slice):
        return [part for part in (node.lower, node.upper, node.step) if part is not None]
    return _direct_children(node)


def differences(source: str) -> list[str]:
    """Where the lean tree of `source` differs from libcst's, as short descriptions."""
    real = cst.parse_module(source)
    lean, layout = lean_module(source, ast.parse(source))
    positions = MetadataWrapper(real, unsafe_skip_copy=True).resolve(PositionProvider)
    found: list[str] = []
    forget_code()
    stack = [(real, lean)]
    while stack:
        a, b = stack.pop()
        where = f"{type(a).__name__} at {positions[a].start.line}:{positions[a].start.column}" if a in positions else type(a).__name__
        if type(a) is not type(b):
            found.append(f"{where}: lean has {type(b).__name__}")
            continue
        for name in ("value", "star", "conversion", "start", "end"):
            if isinstance(getattr(a, name, None), str) and getattr(a, name) != getattr(b, name):
                found.append(f"{where}: {name} {getattr(a, name)!r} != {getattr(b, name)!r}")
        if isinstance(getattr(a, "lpar", None), (list, tuple)) and len(a.lpar) != len(b.lpar):
            found.append(f"{where}: {len(a.lpar)} parentheses, lean {len(b.lpar)}")
        if isinstance(a, cst.BaseExpression) and not isinstance(a, cst.StarredElement):
            text = layout.text(b)
            if text is not None and text != code_of(a):
                found.append(f"{where}: text {code_of(a)!r} != {text!r}")
        place = layout.position(b)
        if place is not None and a in positions and not isinstance(a, _PLACE_UNREAD):
            span = positions[a]
            expected = (span.start.line, span.start.column, span.end.line, span.end.column)
            if place != expected:
                found.append(f"{where}: place {expected} != {place}")
        children_a, children_b = _compared_children(a), _compared_children(b)
        if len(children_a) != len(children_b):
            found.append(f"{where}: {len(children_a)} children, lean {len(children_b)}")
            continue
        stack.extend(zip(children_a, children_b))
    return found


def _fixture_sources() -> list[Path]:
    return sorted(p for p in FIXTURES.rglob("*.py"))


@pytest.mark.parametrize("path", _fixture_sources(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture_trees_agree(path: Path) -> None:
    source = path.read_bytes().decode("utf-8")
    try:
        ast.parse(source)
    except SyntaxError:
        pytest.skip("not Python CPython parses")
    assert differences(source) == []


LAYOUTS = {
    "parentheses": "x = ((a)) + (b) * f((c)) + g(d) + h((e),) + (k)(m)\nif (x): pass\nreturn_ = not (y)\n",
    "sole arguments": "f((x for x in y))\nf(x for x in y)\nclass A((B)): pass\nclass C(D): pass\nwith (m): pass\nwith (m) as n: pass\n",
    "tuples": "a, b = (c, d)\nfor i, (x, y) in z: pass\nt = ()\nu = ((1, 2))\nv = x[(1, 2)]\nw = x[1, 2]\nq = x[(1), 2]\n",
    "continuations": "def f():\n    if True:\n        y = g(\n            a,\n            # note\n            b,\n        )\n        z = a + \\\n            b\n        return (\n            y\n        )\n",
    "strings": "s = 'a' 'b'\nt = ('a'\n     \"b\")\nu = f'{x!r:>{w}}' 'c'\nv = '''x\n    y'''\nw = b'\\x00' rb'\\d'\nz = 'it\\'s'\n",
    "unicode": "s = 'café' + f(é, naïve)\nt = '日本' ; u = g(x)\n",
    "concatenations": ("a = ('é' \"\"\"x\nü\"\"\"  # note\n     r'\\'' \\\n     U'' '\\x00')\nd = b'a' Rb'\\d' \\\n    B'\\x00'\n"
                       "b = f(u'a'\n      '''ü\n'''  'z', 'ß' 'x')\nc = ['a' 'b', R\"\\\"\" 'd']\n"),
    "crlf concatenations": "x = f('a'\r\n      'é'\r\n      \"b\")\r\n",
    "crlf": "def f(a):\r\n    return g(\r\n        a,\r\n    )\r\n",
    "crlf continuations": "def f(a):\r\n    if a:\r\n        x = g(a, \\\r\n            a) + \\\r\n            h(\r\n            a)\r\n",
    "tabs": "if x:\n\ty = f(\n\t\ta,\n\t)\n",
    "declarations": "import a.b.c as d, e\nfrom .x import (y as z, w)\nfrom . import v\n@dec(1)\n@other\nasync def f(p, /, q: int = 1, *r, s, **t) -> None:\n    global g, h\n    try:\n        pass\n    except (A, B) as error:\n        pass\n",
    "statements": "if a:\n    pass\nelif b: pass\nelse:\n    if c: pass\nwhile d: break\nelse: pass\nfor e in f: continue\nx = 1; y = 2\ndel a, b\nassert a, 'm'\nraise E from F\nx += 1\ny: int = 2\nlambda a, *b, c=1, **d: a\n",
    "comprehensions": "a = [x for x in y if x for z in x]\nb = {k: v for k, v in d.items()}\nc = {*a, *b}\nd = {**e, 'k': 1}\ne = (yield)\n",
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layouts_agree(name: str) -> None:
    assert differences(LAYOUTS[name]) == []


_NAMES = st.sampled_from(["a", "b", "loss", "model", "k"])
_SPACE = st.sampled_from(["", " ", "\n    ", "  # c\n  "])  # inside brackets any of these may appear


def _expressions() -> st.SearchStrategy[str]:
    atoms = _NAMES | st.sampled_from(["1", "2.5", "'s'", "f'{a}'", "None", "x.y"])

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from([" + ", " / ", "*", " % ", " and ", " or ", " == ", " < "]), inner)
            .map(lambda t: f"{t[0]}{t[1]}{t[2]}"),
            st.tuples(_SPACE, inner, _SPACE).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
            st.tuples(_NAMES, st.lists(inner, max_size=3), _SPACE).map(lambda t: f"{t[0]}({', '.join(t[1])}{t[2]})"),
            st.tuples(inner, _NAMES).map(lambda t: f"({t[0]}).{t[1]}"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]})[{t[1]}]"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]}, {t[1]})"),
            inner.map(lambda e: f"not {e}"),
            st.tuples(inner, _NAMES).map(lambda t: f"sum({t[0]} for {t[1]} in z)"),
            st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        )

    return st.recursive(atoms, extend, max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(_expressions(), st.sampled_from(["", "    ", "\t"]))
def test_generated_expressions_agree(expression: str, indent: str) -> None:
    source = f"def f():\n{indent or ' '}for a in b:\n{indent or ' '}{indent or ' '}x = {expression}\n"
    try:
        ast.parse(source)
        cst.parse_module(source)
    except (SyntaxError, cst.ParserSyntaxError):
        return
    assert differences(source) == []


@pytest.mark.parametrize("path", [p for p in _fixture_sources() if b"backward" in p.read_bytes()],
                         ids=lambda p: str(p.relative_to(FIXTURES)))
def test_findings_agree(path: Path) -> None:
    data = path.read_bytes()
    try:
        tree = ast.parse(data)
        real = parse(data)
    except Exception:  # noqa: BLE001 - files that do not parse are the syntax tests' business
        pytest.skip("does not parse")
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, 10_000))
    try:
        expected = [(f.code, f.message, f.row, f.column, f.end_row, f.end_column, f.fix is not None and f.fix.message)
                    for f in lint_module(real, Selection())]
        lean, layout = lean_module(data.decode("utf-8"), tree)
        found = [(f.code, f.message, f.row, f.column, f.end_row, f.end_column, f.fix is not None and f.fix.message)
                 for f in lint_module(lean, Selection(), layout)]
    finally:
        sys.setrecursionlimit(previous)
    assert found == expected
