"""Which files need the loop model at all, decided cheaply and soundly.

The loop model (gacclint/loops/find.py) only ever reports on

- a `for`/`while` loop whose own statements (not those of a nested `def` or
  `class`) hold a backward event, or
- a function whose own statements hold a backward event and a step event
  (a `train_step` helper, GA402),

and it recognises a backward only as a call of a method named in
BACKWARD_METHODS, a step only as a call of a method named in STEP_METHODS
(gacclint/loops/events.py uses these names). Two gates follow from that, each
a necessary condition, so neither can skip a file the model would report on:

1. textual: the bytes hold a name ending in `backward`, after a `.`, and
   followed by `(`, allowing everything Python's tokenizer allows around a
   name (spaces, line continuations, and inside brackets comments and
   newlines: where the text before the name crosses a line, the name is taken
   as a method). Most files stop here, unread by any parser; so does
   `def backward(ctx, grad)` of an autograd Function.
2. syntactic: CPython's `ast` (written in C, many times faster than libcst)
   finds such a call where rule 1 or 2 above could use it. A docstring
   showing `loss.backward()` stops here.

tests/test_gate.py checks both against the model on every fixture and on
generated loops.
"""

from __future__ import annotations

import ast
import re
from bisect import bisect_left

BACKWARD_METHODS = frozenset({"backward", "manual_backward"})
STEP_METHODS = frozenset({"step", "optimizer_step"})

# Between a name and `(` the tokenizer allows whitespace and line
# continuations anywhere, and comments and newlines inside brackets.
_GAP = rb"(?:[ \t\f\r\n]|\\\r?\n|\\\r|#[^\r\n]*)*"
_BACKWARD_CALL_TEXT = re.compile(rb"backward" + _GAP + rb"\(")


_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def may_hold_training_loop(source: bytes) -> bool:
    """Gate 1: could these bytes hold a backward method call at all?"""
    for match in _BACKWARD_CALL_TEXT.finditer(source):
        start = match.start()
        while start and source[start - 1] in _WORD:  # back to the name's start
            start -= 1
        if source[start:match.start() + len(b"backward")].decode("ascii") not in BACKWARD_METHODS:
            continue  # `ctx.save_for_backward(...)`
        while start and source[start - 1] in b" \t\f":
            start -= 1
        if start and source[start - 1] in b".\n\r\\":  # a method, or a gap this scan cannot see through
            return True
    return False


def _method_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)


def owns_backward_call(tree: ast.Module, source: bytes | None = None) -> bool:
    """Gate 2, on CPython's tree of a file that passed gate 1; given the
    tree's `source`, it skips every statement none of whose lines could
    name a backward or step method (see `_lines_to_visit`), most of a large
    module.

    Iterative: a 5,000-link attribute chain is as deep a tree as CPython's
    parser builds, far past Python's recursion limit."""
    lines = _lines_to_visit(source) if source is not None else None
    # (node, loops open in its scope, the method calls of its function or None)
    stack: list[tuple[ast.AST, int, set[str] | None]] = [(tree, 0, None)]
    functions: list[set[str]] = []
    while stack:
        node, loops, calls = stack.pop()
        if lines is not None and isinstance(node, ast.stmt):
            first = node.lineno
            if isinstance(node, _SCOPES) and node.decorator_list:
                first = node.decorator_list[0].lineno  # the one part of a statement above its first row
            index = bisect_left(lines, first)
            if index == len(lines) or lines[index] > node.end_lineno:
                continue  # no backward or step call in it, nor in anything nested in it
        if isinstance(node, _SCOPES):
            # A nested def or class is not part of the loop or function around
            # it (the model skips it, decorators included).
            loops, calls = 0, (set() if not isinstance(node, ast.ClassDef) else None)
            if calls is not None:
                functions.append(calls)
        elif isinstance(node, _LOOPS):
            loops += 1
        else:
            name = _method_name(node)
            if name in BACKWARD_METHODS and loops:
                return True
            if calls is not None and (name in BACKWARD_METHODS or name in STEP_METHODS):
                calls.add(name)
        for field in node._fields:  # ast.iter_child_nodes, without its generator
            value = getattr(node, field, None)
            if isinstance(value, list):
                stack.extend([(child, loops, calls) for child in value if isinstance(child, ast.AST)])
            elif isinstance(value, ast.AST):
                stack.append((value, loops, calls))
    return any(calls & BACKWARD_METHODS and calls & STEP_METHODS for calls in functions)


# What a line must hold for a backward or step method to be named on it: the
# names themselves (every name in BACKWARD_METHODS and STEP_METHODS ends in
# one of these), or a character outside ASCII, which an identifier normalised
# to one of them (NFKC: `ｂackward`) would show.
_NAMES = (re.compile(rb"backward"), re.compile(rb"step"))
_NON_ASCII = re.compile(rb"[\x80-\xff]+")
_LINE_BREAK = re.compile(rb"\r\n?")
# PEP 263's declaration, and the encodings whose bytes below 0x80 are ASCII
# and never part of another character: there, the rows that CPython counts
# are the bytes' rows, and a name is its own bytes.
_CODING = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", re.MULTILINE)
_BYTE_ROW_ENCODINGS = frozenset({"utf-8", "utf8", "utf-8-sig", "ascii", "us-ascii", "latin-1", "latin1",
                                 "iso-8859-1", "iso8859-1", "l1"})


def _lines_to_visit(source: bytes) -> list[int] | None:
    """The rows (1-based, ascending, as CPython counts them) where a backward
    or step method may be named; None when the bytes do not tell (a source
    encoding such as UTF-7, where `+AAo-` is a line break)."""
    if b"\r" in source:  # CPython ends a row at \r\n, \r or \n
        source = _LINE_BREAK.sub(b"\n", source)
    second_end = source.find(b"\n", source.find(b"\n") + 1)
    declared = _CODING.search(source, 0, second_end if second_end != -1 else len(source))
    if declared is not None and declared.group(1).decode("ascii").lower().replace("_", "-") not in _BYTE_ROW_ENCODINGS:
        return None
    # One literal at a time: the regular expression engine finds a literal far faster than
    # an alternation, which it tries at every byte.
    starts = [match.start() for pattern in _NAMES for match in pattern.finditer(source)]
    if not source.isascii():
        starts += [match.start() for match in _NON_ASCII.finditer(source)]
    starts.sort()
    rows = []
    row, counted = 1, 0
    for start in starts:
        row += source.count(b"\n", counted, start)
        counted = start
        if not rows or rows[-1] != row:
            rows.append(row)
    return rows
