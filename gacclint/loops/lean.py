"""CPython's tree of a module, read into libcst's node classes without the layout.

Checking needs what the code says, not how it is laid out. libcst's parser
keeps every space, comment and bracket, and costs about ten times CPython's
parser; the loop model reads none of that (gacclint/loops/tree.py skips the
layout fields). So the check path parses with `ast` and builds the same node
classes from it: each field the model reads is filled from CPython's tree, and
the layout fields hold libcst's own defaults. What layout is needed for
findings, their places and the text of expressions, comes from the source
through `Layout`. Fixes keep the user's formatting, so they still parse with
libcst (gacclint/analysis.py).

A construct this reader does not build (`match` statements) raises
`Unsupported`, and the caller parses the file with libcst instead: one model,
two ways to build its tree, never a guess.
"""

from __future__ import annotations

import ast
import bisect
import dataclasses
import io
import re
import tokenize
from typing import Callable, Sequence

import libcst as cst

from gacclint.source import split_lines


class Unsupported(Exception):
    """A construct this reader leaves to libcst's parser."""


# -- nodes without validation or layout ----------------------------------------------

_set = object.__setattr__


def _maker(cls: type) -> Callable[..., cst.CSTNode]:
    """A function building a `cls` from keyword fields, the others at the class's defaults
    (made once per class; nodes are immutable, so default values can be shared), without
    libcst's validation: CPython's parser already accepted the code."""
    names, defaults = [], {}
    for field in dataclasses.fields(cls):
        names.append(field.name)
        if field.name in ("lpar", "rpar") and field.default is dataclasses.MISSING:
            defaults[field.name] = ()  # a tuple's or generator's default is one pair
        elif field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    parameters = ", ".join(f"{name}=_default_{name}" if name in defaults else f"{name}=None" for name in names)
    # Each field is a slot: its descriptor's own setter, found once here, spares every node
    # the attribute lookup of `object.__setattr__` (a third of the reader's time per node).
    body = "".join(f"    _set_{name}(node, {name})\n" for name in names)
    namespace: dict[str, object] = {f"_default_{name}": value for name, value in defaults.items()}
    namespace.update({f"_set_{name}": _slot_setter(cls, name) for name in names})
    namespace.update(_new=object.__new__, _cls=cls)
    signature = f"*, {parameters}" if parameters else ""
    exec(f"def make({signature}):\n    node = _new(_cls)\n{body}    return node\n", namespace)
    return namespace["make"]  # type: ignore[return-value]


def _slot_setter(cls: type, name: str) -> Callable[[object, object], None]:
    """The setter of field `name` of `cls` (libcst's nodes keep their fields in slots)."""
    for klass in cls.__mro__:
        descriptor = klass.__dict__.get(name)
        if descriptor is not None and hasattr(descriptor, "__set__"):
            return descriptor.__set__  # type: ignore[no-any-return]
    return lambda node, value: _set(node, name, value)


class _Makers(dict):
    def __missing__(self, cls: type) -> Callable[..., cst.CSTNode]:
        make = self[cls] = _maker(cls)
        return make


# _MAKE[cls](**fields): a node of `cls` with `fields` and the class's defaults.
_MAKE: dict[type, Callable[..., cst.CSTNode]] = _Makers()


# Operators carry only layout of their own: one instance of each serves every node.
def _instances(table: dict[type, type]) -> dict[type, cst.CSTNode]:
    return {ast_type: _MAKE[cst_type]() for ast_type, cst_type in table.items()}


_BINARY = _instances({
    ast.Add: cst.Add, ast.Sub: cst.Subtract, ast.Mult: cst.Multiply, ast.Div: cst.Divide,
    ast.FloorDiv: cst.FloorDivide, ast.Mod: cst.Modulo, ast.Pow: cst.Power, ast.LShift: cst.LeftShift,
    ast.RShift: cst.RightShift, ast.BitOr: cst.BitOr, ast.BitAnd: cst.BitAnd, ast.BitXor: cst.BitXor,
    ast.MatMult: cst.MatrixMultiply})
_AUGMENTED = _instances({
    ast.Add: cst.AddAssign, ast.Sub: cst.SubtractAssign, ast.Mult: cst.MultiplyAssign, ast.Div: cst.DivideAssign,
    ast.FloorDiv: cst.FloorDivideAssign, ast.Mod: cst.ModuloAssign, ast.Pow: cst.PowerAssign,
    ast.LShift: cst.LeftShiftAssign, ast.RShift: cst.RightShiftAssign, ast.BitOr: cst.BitOrAssign,
    ast.BitAnd: cst.BitAndAssign, ast.BitXor: cst.BitXorAssign, ast.MatMult: cst.MatrixMultiplyAssign})
_UNARY = _instances({ast.Not: cst.Not, ast.USub: cst.Minus, ast.UAdd: cst.Plus, ast.Invert: cst.BitInvert})
_COMPARE = _instances({
    ast.Eq: cst.Equal, ast.NotEq: cst.NotEqual, ast.Lt: cst.LessThan, ast.LtE: cst.LessThanEqual,
    ast.Gt: cst.GreaterThan, ast.GtE: cst.GreaterThanEqual, ast.Is: cst.Is, ast.IsNot: cst.IsNot,
    ast.In: cst.In, ast.NotIn: cst.NotIn})
_AND, _OR = _MAKE[cst.And](), _MAKE[cst.Or]()
_LPAR, _RPAR = _MAKE[cst.LeftParen](), _MAKE[cst.RightParen]()


# -- where nodes are in the source ---------------------------------------------------

class Layout:
    """Places and text of a lean tree's nodes, read from the source on demand.

    Rows are 1-based and columns 0-based characters, as libcst's PositionProvider
    gives them (CPython counts columns in UTF-8 bytes). An expression's text
    includes the parentheses around it, as libcst's code for a node does."""

    def __init__(self, text: str) -> None:
        self.lines = split_lines(text)
        # id(node) -> (node, CPython's node of the same text), or (node, row, column, end row,
        # end column) for a node made up of parts of several; the node is kept so its id
        # cannot be reused.
        self._sources: dict[int, tuple[cst.CSTNode, ast.AST]] = {}
        self._spans: dict[int, tuple[cst.CSTNode, int, int, int, int]] = {}
        # Exceptions to "a node's place is CPython's span of it", by id. Sole arguments, whose
        # enclosing `(` `)` are their call's (or class's, or with's): the place just past that
        # `)`, when known.
        self.sole_arguments: dict[int, tuple[int, int] | None] = {}
        self.own_pair: set[int] = set()  # CPython's span includes a pair libcst puts in `lpar`/`rpar`
        self.never_parenthesised: set[int] = set()  # names in declarations: a `(` before is not theirs
        # Arg, Element, inner `and`/`or`, ...: (first, last, keep own start): they span their
        # parts' text, parentheses included.
        self.spanning: dict[int, tuple[cst.CSTNode, cst.CSTNode, bool]] = {}
        self.statement_rows: list[int] = []  # each statement's first row, ascending
        self.string_rows: set[int] = set()  # rows that begin inside a string literal

    def record(self, node: cst.CSTNode, row: int, column: int, end_row: int, end_column: int) -> None:
        """`column`s in CPython's UTF-8 bytes."""
        self._spans[id(node)] = (node, row, column, end_row, end_column)

    def record_like(self, node: cst.CSTNode, source: ast.AST) -> None:
        self._sources[id(node)] = (node, source)

    def _bytes_span(self, node: cst.CSTNode) -> tuple[int, int, int, int] | None:
        key = id(node)
        like = self._sources.get(key)
        if like is not None and like[0] is node:
            source = like[1]
            return source.lineno, source.col_offset, source.end_lineno, source.end_col_offset  # type: ignore[attr-defined]
        found = self._spans.get(key)
        if found is not None and found[0] is node:
            return found[1:]
        return None

    def position(self, node: cst.CSTNode) -> tuple[int, int, int, int] | None:
        """(row, column, end row, end column), or None for a node the reader made up."""
        span = self._bytes_span(node)
        if span is None:
            return None
        row, column, end_row, end_column = span
        place = row, self._characters(row, column), end_row, self._characters(end_row, end_column)
        key = id(node)
        if key in self.own_pair:
            return self._inside_pair(*place)
        parts = self.spanning.get(key)
        if parts is not None:
            first, last, keep_start = parts
            start = place if keep_start else self._widened(first)
            end = self._widened(last)
            if start is not None and end is not None:
                return (*start[:2], *end[2:])
        return place

    def text(self, node: cst.CSTNode) -> str | None:
        """The source of an expression with its own parentheses, stripped, as libcst's code for
        the node (continuation lines without the indentation of the block); None if unknown."""
        place = self._widened(node)
        if place is None:
            return None
        row, column, end_row, end_column = place
        if row == end_row:
            text = self.lines[row - 1][column:end_column]
        else:
            # libcst's code for a node: a line break outside strings is "\n", and a line
            # continued inside brackets starts without its block's indentation.
            indent = self._block_indent(row)
            parts = []
            for number in range(row, end_row + 1):
                line = self.lines[number - 1]
                if number == end_row:
                    line = line[:end_column]
                elif number + 1 not in self.string_rows and not line.rstrip("\r\n").endswith("\\"):
                    line = line.rstrip("\r\n") + "\n"
                if number == row:
                    line = line[column:]
                elif indent and number not in self.string_rows and line.startswith(indent) and \
                        not parts[-1].rstrip("\r\n").endswith("\\"):
                    line = line[len(indent):]
                parts.append(line)
            text = "".join(parts)
        if isinstance(node, cst.StarredElement) and self._after(end_row, end_column, ",") is not None:
            text += ","  # libcst's element owns its comma
        return text.strip()

    def parentheses(self, node: cst.CSTNode) -> int:
        """How many pairs of parentheses are the node's own."""
        place = self.position(node)
        if place is None:
            return 0
        return len(self._pairs(node, *place)) - 1

    def _widened(self, node: cst.CSTNode) -> tuple[int, int, int, int] | None:
        place = self.position(node)
        if place is None or id(node) in self.never_parenthesised:
            return place
        return self._parenthesised(node, *place)

    def _block_indent(self, row: int) -> str:
        """The indentation of the block holding the statement that row `row` belongs to."""
        index = bisect.bisect_right(self.statement_rows, row) - 1
        if index < 0:
            return ""
        line = self.lines[self.statement_rows[index] - 1]
        return line[:len(line) - len(line.lstrip(" \t\f"))]

    def _inside_pair(self, row: int, column: int, end_row: int, end_column: int) -> tuple[int, int, int, int]:
        """The span inside a `(` at (row, column) and a `)` ending at (end_row, end_column)."""
        row, column = self._skip_blanks(row, column + 1)
        end_row, end_column = self._skip_blanks_back(end_row, end_column - 1)
        return row, column, end_row, end_column

    def _skip_blanks(self, row: int, column: int) -> tuple[int, int]:
        while row <= len(self.lines):
            line = self.lines[row - 1]
            while column < len(line) and line[column] in " \t\f":
                column += 1
            if column < len(line) and line[column] not in "#\r\n\\":
                return row, column
            row, column = row + 1, 0
        return row, column

    def _skip_blanks_back(self, row: int, column: int) -> tuple[int, int]:
        """Back from (row, column) past blanks, continuations and comments: the place just
        after the code before it (column 0 of row 1 if there is none)."""
        line = self.lines[row - 1]  # before (row, column) on its own row there is only code
        while True:
            index = column - 1
            while index >= 0 and line[index] in " \t\f":
                index -= 1
            if index >= 0 or row == 1:
                return row, index + 1
            row -= 1
            line = _code_part(self.lines[row - 1]).rstrip("\r\n")
            column = len(line) - 1 if line.endswith("\\") else len(line)

    def _characters(self, row: int, column: int) -> int:
        if row > len(self.lines):
            return column
        line = self.lines[row - 1]
        if line.isascii():
            return column
        return len(line.encode("utf-8")[:column].decode("utf-8", errors="replace"))

    def _parenthesised(self, node: cst.CSTNode, row: int, column: int, end_row: int,
                       end_column: int) -> tuple[int, int, int, int]:
        """Widen the span over each pair of parentheses that encloses exactly it, except the
        call's own pair around a sole argument (libcst gives that pair to the call)."""
        return self._pairs(node, row, column, end_row, end_column)[-1]

    def _pairs(self, node: cst.CSTNode, row: int, column: int, end_row: int,
               end_column: int) -> list[tuple[int, int, int, int]]:
        """The node's span, then the span with each pair of its own parentheses around it."""
        pairs = [(row, column, end_row, end_column)]
        while True:
            before = self._before(row, column)
            after = self._after(end_row, end_column)
            if before is None or after is None:
                break
            (row, column), (end_row, end_column) = before, after
            pairs.append((row, column, end_row, end_column))
        key = id(node)
        if key in self.sole_arguments and len(pairs) > 1:
            closing = self.sole_arguments[key]
            if closing is None or (pairs[-1][2], pairs[-1][3]) == (closing[0], self._characters(*closing)):
                pairs.pop()
        return pairs

    def _before(self, row: int, column: int) -> tuple[int, int] | None:
        """The place of a `(` right before (row, column), past blanks, continuations and comments."""
        row, column = self._skip_blanks_back(row, column)
        return (row, column - 1) if column and self.lines[row - 1][column - 1] == "(" else None

    def _after(self, row: int, column: int, wanted: str = ")") -> tuple[int, int] | None:
        """The place just past a `wanted` right after (row, column), past blanks, continuations and comments."""
        row, column = self._skip_blanks(row, column)
        if row <= len(self.lines) and self.lines[row - 1][column] == wanted:
            return row, column + 1
        return None


def _code_part(line: str) -> str:
    """The line without a trailing comment (a `#` outside strings)."""
    if "#" not in line:
        return line
    quote = None
    index = 0
    while index < len(line):
        char = line[index]
        if quote is not None:
            if char == "\\":
                index += 1
            elif line.startswith(quote, index):
                index += len(quote) - 1
                quote = None
        elif char in "'\"":
            quote = line[index:index + 3] if line[index:index + 3] in ('"""', "'''") else char
            index += len(quote) - 1
        elif char == "#":
            return line[:index]
        index += 1
    return line


# -- the reader -----------------------------------------------------------------------


def lean_module(text: str, tree: ast.Module) -> tuple[cst.Module, Layout]:
    """libcst's node classes for `tree`, CPython's tree of `text`."""
    layout = Layout(text)
    reader = _Reader(layout, _after_parentheses(text, layout.lines))
    module = _MAKE[cst.Module](body=reader.statements(tree.body))
    layout.statement_rows.sort()
    reader.parenthesise()
    reader.close()
    return module, layout


_SIMPLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Raise, ast.Assert, ast.Delete,
           ast.Pass, ast.Break, ast.Continue, ast.Global, ast.Nonlocal, ast.Import, ast.ImportFrom)


# From a `(` to the next token: blanks, line breaks, continuations and comments.
_OPENING = re.compile(rb"\((?:[ \t\f\r\n]|\\\r?\n|\\\r|#[^\r\n]*)*")


def _after_parentheses(text: str, lines: list[str]) -> set[tuple[int, int]]:
    """(row, byte column) of each place where a token follows a `(` (in CPython's terms;
    a `(` inside a string or comment adds a place no node starts at)."""
    data = text.encode("utf-8")
    if b"(" not in data:
        return set()
    starts, offset = [], 0
    for line in lines:
        starts.append(offset)
        offset += len(line) if line.isascii() else len(line.encode("utf-8"))
    places = set()
    for match in _OPENING.finditer(data):
        end = match.end()
        row = bisect.bisect_right(starts, end) - 1
        places.add((row + 1, end - starts[row]))
    return places


class _Reader:
    def __init__(self, layout: Layout, after_parenthesis: set[tuple[int, int]]) -> None:
        self.layout = layout
        self.after_parenthesis = after_parenthesis
        self.parenthesised: list[cst.CSTNode] = []  # nodes that may have parentheses of their own
        self.lines = layout.lines
        self.record = layout.record
        self.record_like = layout.record_like
        self.sources = layout._sources
        self.own_pair = layout.own_pair
        self.expression_readers: dict[type, Callable[[ast.AST], cst.CSTNode]] = {
            ast.Name: self._name, ast.Attribute: self._attribute, ast.Call: self._call,
            ast.Constant: self._constant, ast.Subscript: self._subscript, ast.BinOp: self._binary,
            ast.BoolOp: self._boolean, ast.UnaryOp: self._unary, ast.Compare: self._compare,
            ast.IfExp: self._if_expression, ast.Lambda: self._lambda, ast.NamedExpr: self._named,
            ast.List: self._sequence, ast.Tuple: self._sequence, ast.Set: self._sequence, ast.Dict: self._dict,
            ast.ListComp: self._comprehension, ast.SetComp: self._comprehension,
            ast.GeneratorExp: self._comprehension, ast.DictComp: self._dict_comprehension,
            ast.Await: self._await, ast.Yield: self._yield, ast.YieldFrom: self._yield,
            ast.JoinedStr: self._strings, ast.Starred: self._starred, ast.Slice: self._bare_slice,
        }
        self.statement_readers: dict[type, Callable[[ast.AST], cst.CSTNode]] = {
            ast.Expr: self._expression_statement, ast.Assign: self._assign, ast.AugAssign: self._augmented,
            ast.AnnAssign: self._annotated, ast.Return: self._return, ast.Raise: self._raise,
            ast.Assert: self._assert, ast.Delete: self._delete, ast.Pass: self._keyword_statement,
            ast.Break: self._keyword_statement, ast.Continue: self._keyword_statement, ast.Global: self._names,
            ast.Nonlocal: self._names, ast.Import: self._import, ast.ImportFrom: self._import_from,
            ast.FunctionDef: self._function, ast.AsyncFunctionDef: self._function, ast.ClassDef: self._class,
            ast.If: self._if, ast.For: self._for, ast.AsyncFor: self._for, ast.While: self._while,
            ast.With: self._with, ast.AsyncWith: self._with, ast.Try: self._try,
        }
        if hasattr(ast, "TryStar"):
            self.statement_readers[ast.TryStar] = self._try

    def close(self) -> None:
        """Break the reader's cycles (its tables hold its own bound methods): reference counting
        then frees it, and CPython's tree with it, as soon as the caller lets go, instead of the
        cycle collector walking every node first."""
        self.expression_readers.clear()
        self.statement_readers.clear()

    # -- statements

    def statements(self, body: Sequence[ast.stmt]) -> list[cst.BaseStatement]:
        """Statements of a block; simple statements sharing a line (`a; b`) form one line node."""
        found: list[cst.BaseStatement] = []
        line: list[ast.stmt] = []
        for statement in body:
            if isinstance(statement, _SIMPLE):
                if line and statement.lineno != line[-1].end_lineno:
                    found.append(self._simple_line(line))
                    line = []
                line.append(statement)
                continue
            if line:
                found.append(self._simple_line(line))
                line = []
            found.append(self._statement(statement))
        if line:
            found.append(self._simple_line(line))
        return found

    def _statement(self, statement: ast.stmt) -> cst.CSTNode:
        reader = self.statement_readers.get(type(statement))
        if reader is None:
            raise Unsupported(type(statement).__name__)
        node = reader(statement)
        self.record_like(node, statement)
        self.layout.statement_rows.append(statement.lineno)
        for decorator in getattr(statement, "decorator_list", ()):
            self.layout.statement_rows.append(decorator.lineno)
        return node

    def _simple_line(self, line: list[ast.stmt]) -> cst.CSTNode:
        node = _MAKE[cst.SimpleStatementLine](body=[self._statement(s) for s in line])
        self.record(node, line[0].lineno, line[0].col_offset, line[-1].end_lineno, line[-1].end_col_offset)
        return node

    def _suite(self, body: Sequence[ast.stmt]) -> cst.CSTNode:
        """An indented block, or the simple statements after the colon on the header's line."""
        first = body[0]
        if isinstance(first, _SIMPLE) and self.lines[first.lineno - 1].encode("utf-8")[:first.col_offset].strip():
            return _MAKE[cst.SimpleStatementSuite](body=[self._statement(s) for s in body])
        return _MAKE[cst.IndentedBlock](body=self.statements(body))

    def _else(self, body: Sequence[ast.stmt]) -> cst.CSTNode | None:
        return _MAKE[cst.Else](body=self._suite(body)) if body else None

    def _expression_statement(self, statement: ast.Expr) -> cst.CSTNode:
        return _MAKE[cst.Expr](value=self.expression(statement.value))

    def _assign(self, statement: ast.Assign) -> cst.CSTNode:
        targets = []
        for target in statement.targets:
            wrapper = _MAKE[cst.AssignTarget](target=self.expression(target))
            self.record_like(wrapper, target)
            self.layout.spanning[id(wrapper)] = (wrapper.target, wrapper.target, False)
            targets.append(wrapper)
        return _MAKE[cst.Assign](targets=targets, value=self.expression(statement.value))

    def _augmented(self, statement: ast.AugAssign) -> cst.CSTNode:
        return _MAKE[cst.AugAssign](target=self.expression(statement.target),
                     operator=_AUGMENTED[type(statement.op)], value=self.expression(statement.value))

    def _annotated(self, statement: ast.AnnAssign) -> cst.CSTNode:
        value = None if statement.value is None else self.expression(statement.value)
        return _MAKE[cst.AnnAssign](target=self.expression(statement.target),
                     annotation=self._annotation(statement.annotation), value=value)

    def _annotation(self, expression: ast.expr | None) -> cst.CSTNode | None:
        if expression is None:
            return None
        node = _MAKE[cst.Annotation](annotation=self.expression(expression))
        self.record_like(node, expression)
        return node

    def _return(self, statement: ast.Return) -> cst.CSTNode:
        return _MAKE[cst.Return](value=self._optional(statement.value))

    def _raise(self, statement: ast.Raise) -> cst.CSTNode:
        cause = None if statement.cause is None else _MAKE[cst.From](item=self.expression(statement.cause))
        return _MAKE[cst.Raise](exc=self._optional(statement.exc), cause=cause)

    def _assert(self, statement: ast.Assert) -> cst.CSTNode:
        return _MAKE[cst.Assert](test=self.expression(statement.test), msg=self._optional(statement.msg))

    def _delete(self, statement: ast.Delete) -> cst.CSTNode:
        targets = [self.expression(t) for t in statement.targets]
        if len(targets) == 1:
            return _MAKE[cst.Del](target=targets[0])
        elements = [_MAKE[cst.Element](value=t) for t in targets]
        together = _MAKE[cst.Tuple](elements=elements)
        first, last = statement.targets[0], statement.targets[-1]
        self.record(together, first.lineno, first.col_offset, last.end_lineno, last.end_col_offset)
        return _MAKE[cst.Del](target=together)

    def _keyword_statement(self, statement: ast.stmt) -> cst.CSTNode:
        return _MAKE[{ast.Pass: cst.Pass, ast.Break: cst.Break, ast.Continue: cst.Continue}[type(statement)]]()

    def _names(self, statement: ast.Global | ast.Nonlocal) -> cst.CSTNode:
        cls = cst.Global if isinstance(statement, ast.Global) else cst.Nonlocal
        line = self.lines[statement.lineno - 1].encode("utf-8")
        items, start = [], statement.col_offset
        for name in statement.names:
            node = _MAKE[cst.Name](value=name)
            found = re.compile(rb"\b" + re.escape(name.encode("utf-8")) + rb"\b").search(line, start)
            if found is not None and found.end() <= statement.end_col_offset:
                self.record(node, statement.lineno, found.start(), statement.lineno, found.end())
                self.layout.never_parenthesised.add(id(node))
                start = found.end()
            items.append(_MAKE[cst.NameItem](name=node))
        return _MAKE[cls](names=items)

    def _import(self, statement: ast.Import) -> cst.CSTNode:
        return _MAKE[cst.Import](names=[self._alias(alias) for alias in statement.names])

    def _import_from(self, statement: ast.ImportFrom) -> cst.CSTNode:
        names: object
        if len(statement.names) == 1 and statement.names[0].name == "*":
            names = _MAKE[cst.ImportStar]()
        else:
            names = [self._alias(alias) for alias in statement.names]
        module = None
        if statement.module is not None:
            module = _dotted(statement.module)
            line = self.lines[statement.lineno - 1].encode("utf-8")
            found = re.compile(rb"from\s*\.*\s*" + re.escape(statement.module.encode("utf-8"))).match(
                line, statement.col_offset)
            if found is not None:
                self._record_dotted(module, statement.module, statement.lineno, found.end())
        return _MAKE[cst.ImportFrom](module=module, names=names,
                     relative=[_MAKE[cst.Dot]() for _ in range(statement.level or 0)])

    def _alias(self, alias: ast.alias) -> cst.CSTNode:
        name = _dotted(alias.name)
        asname = None
        if hasattr(alias, "lineno"):  # Python 3.10 and later
            self._record_dotted(name, alias.name, alias.lineno, alias.col_offset + len(alias.name.encode("utf-8")))
        if alias.asname is not None:
            target = _MAKE[cst.Name](value=alias.asname)
            if hasattr(alias, "lineno"):
                end = alias.end_col_offset
                self.record(target, alias.end_lineno, end - len(alias.asname), alias.end_lineno, end)
                self.layout.never_parenthesised.add(id(target))
            asname = _MAKE[cst.AsName](name=target)
        return _MAKE[cst.ImportAlias](name=name, asname=asname)

    def _record_dotted(self, name: cst.CSTNode, text: str, row: int, end: int) -> None:
        """Places of `a.b.c` (`text`) written without spaces on row `row`, ending at byte `end`."""
        start = end - len(text.encode("utf-8"))
        node = name
        while isinstance(node, cst.Attribute):  # each prefix ends before a dot
            self.record(node, row, start, row, end)
            attr = node.attr.value.encode("utf-8")
            self.record(node.attr, row, end - len(attr), row, end)
            self.layout.never_parenthesised.add(id(node.attr))
            end -= len(attr) + 1
            node = node.value
        self.record(node, row, start, row, end)
        self.layout.never_parenthesised.add(id(node))

    def _function(self, statement: ast.FunctionDef | ast.AsyncFunctionDef) -> cst.CSTNode:
        return _MAKE[cst.FunctionDef](name=self._declared_name(statement, statement.name),
                     params=self._parameters(statement.args), body=self._suite(statement.body),
                     decorators=self._decorators(statement.decorator_list),
                     returns=self._annotation(statement.returns),
                     asynchronous=_MAKE[cst.Asynchronous]() if isinstance(statement, ast.AsyncFunctionDef) else None)

    def _class(self, statement: ast.ClassDef) -> cst.CSTNode:
        bases = [self._argument(base) for base in statement.bases]
        keywords = [self._keyword(keyword) for keyword in statement.keywords]
        if len(bases) == 1 and not keywords and not isinstance(statement.bases[0], ast.Starred):
            self.layout.sole_arguments[id(bases[0].value)] = None
        return _MAKE[cst.ClassDef](name=self._declared_name(statement, statement.name),
                     body=self._suite(statement.body), bases=bases, keywords=keywords,
                     decorators=self._decorators(statement.decorator_list))

    def _declared_name(self, statement: ast.stmt, name: str) -> cst.CSTNode:
        """The name after `def`/`class` (CPython keeps no place for it)."""
        node = _MAKE[cst.Name](value=name)
        line = self.lines[statement.lineno - 1]
        found = re.compile(r"(?:async\s+)?(?:def|class)\s+" + re.escape(name) + r"\b").search(
            line.encode("utf-8")[statement.col_offset:].decode("utf-8", errors="replace"))
        if found is not None:
            start = statement.col_offset + len(found.group(0).encode("utf-8")) - len(name.encode("utf-8"))
            self.record(node, statement.lineno, start, statement.lineno, start + len(name.encode("utf-8")))
            self.layout.never_parenthesised.add(id(node))
        return node

    def _decorators(self, decorators: Sequence[ast.expr]) -> list[cst.CSTNode]:
        return [_MAKE[cst.Decorator](decorator=self.expression(d)) for d in decorators]

    def _parameters(self, arguments: ast.arguments) -> cst.CSTNode:
        positional = [*arguments.posonlyargs, *arguments.args]
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults))
        defaults.extend(arguments.defaults)
        params = [self._parameter(a, d) for a, d in zip(positional, defaults)]
        split = len(arguments.posonlyargs)
        kwonly = [self._parameter(a, d) for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults)]
        star_arg: object = cst.MaybeSentinel.DEFAULT
        if arguments.vararg is not None:
            star_arg = self._parameter(arguments.vararg, None, "*")
        elif kwonly:
            star_arg = _MAKE[cst.ParamStar]()
        star_kwarg = None if arguments.kwarg is None else self._parameter(arguments.kwarg, None, "**")
        fields: dict[str, object] = {"params": params[split:], "star_arg": star_arg, "kwonly_params": kwonly,
                                     "star_kwarg": star_kwarg}
        if split:
            fields["posonly_params"] = params[:split]
            fields["posonly_ind"] = _MAKE[cst.ParamSlash]()
        return _MAKE[cst.Parameters](**fields)

    def _parameter(self, argument: ast.arg, default: ast.expr | None, star: str = "") -> cst.CSTNode:
        name = _MAKE[cst.Name](value=argument.arg)
        end = argument.col_offset + len(argument.arg.encode("utf-8"))
        self.record(name, argument.lineno, argument.col_offset, argument.lineno, end)
        self.layout.never_parenthesised.add(id(name))
        node = _MAKE[cst.Param](name=name, annotation=self._annotation(argument.annotation),
                     default=self._optional(default), star=star)
        # libcst places a parameter at its star and name.
        self.record(node, argument.lineno, argument.col_offset - len(star), argument.lineno, end)
        return node

    def _if(self, statement: ast.If) -> cst.CSTNode:
        orelse: cst.CSTNode | None = None
        if statement.orelse:
            first = statement.orelse[0]
            if len(statement.orelse) == 1 and isinstance(first, ast.If) and self._starts_with(first, "elif"):
                orelse = self._if(first)
                self.record(orelse, first.lineno, first.col_offset, first.end_lineno, first.end_col_offset)
                self.layout.statement_rows.append(first.lineno)
            else:
                orelse = self._else(statement.orelse)
        return _MAKE[cst.If](test=self.expression(statement.test), body=self._suite(statement.body), orelse=orelse)

    def _starts_with(self, statement: ast.stmt, keyword: str) -> bool:
        line = self.lines[statement.lineno - 1].encode("utf-8")
        return line[statement.col_offset:statement.col_offset + len(keyword)] == keyword.encode()

    def _for(self, statement: ast.For | ast.AsyncFor) -> cst.CSTNode:
        return _MAKE[cst.For](target=self.expression(statement.target), iter=self.expression(statement.iter),
                     body=self._suite(statement.body), orelse=self._else(statement.orelse),
                     asynchronous=_MAKE[cst.Asynchronous]() if isinstance(statement, ast.AsyncFor) else None)

    def _while(self, statement: ast.While) -> cst.CSTNode:
        return _MAKE[cst.While](test=self.expression(statement.test), body=self._suite(statement.body),
                     orelse=self._else(statement.orelse))

    def _with(self, statement: ast.With | ast.AsyncWith) -> cst.CSTNode:
        items = []
        for item in statement.items:
            asname = None
            if item.optional_vars is not None:
                asname = _MAKE[cst.AsName](name=self.expression(item.optional_vars))
            items.append(_MAKE[cst.WithItem](item=self.expression(item.context_expr), asname=asname))
        if len(items) == 1 and items[0].asname is None:
            self.layout.sole_arguments[id(items[0].item)] = None  # libcst gives `with (x):`'s pair to the with
        return _MAKE[cst.With](items=items, body=self._suite(statement.body),
                     asynchronous=_MAKE[cst.Asynchronous]() if isinstance(statement, ast.AsyncWith) else None)

    def _try(self, statement: ast.Try) -> cst.CSTNode:
        star = type(statement).__name__ == "TryStar"
        handlers = []
        for handler in statement.handlers:
            self.layout.statement_rows.append(handler.lineno)
            name = None
            if handler.name is not None:
                target = _MAKE[cst.Name](value=handler.name)
                line = self.lines[handler.lineno - 1].encode("utf-8")
                found = re.compile(rb"\bas\s+(" + re.escape(handler.name.encode("utf-8")) + rb")\b").search(
                    line, handler.col_offset)
                if found is not None:
                    self.record(target, handler.lineno, found.start(1), handler.lineno, found.end(1))
                    self.layout.never_parenthesised.add(id(target))
                name = _MAKE[cst.AsName](name=target)
            handlers.append(_MAKE[cst.ExceptStarHandler if star else cst.ExceptHandler](
                                  body=self._suite(handler.body), type=self._optional(handler.type), name=name))
        finalbody = None
        if statement.finalbody:
            finalbody = _MAKE[cst.Finally](body=self._suite(statement.finalbody))
        return _MAKE[cst.TryStar if star else cst.Try](body=self._suite(statement.body), handlers=handlers,
                     orelse=self._else(statement.orelse), finalbody=finalbody)

    # -- expressions

    def expression(self, expression: ast.expr) -> cst.CSTNode:
        try:
            reader = self.expression_readers[type(expression)]
        except KeyError:
            raise Unsupported(type(expression).__name__) from None
        node = reader(expression)
        key = id(node)
        self.sources[key] = (node, expression)  # Layout.record_like, inlined: once per expression
        if (expression.lineno, expression.col_offset) in self.after_parenthesis or key in self.own_pair:
            self.parenthesised.append(node)
        return node

    def parenthesise(self) -> None:
        """Give each expression the parentheses libcst would (`lpar`, `rpar`: some rules read
        them). Only a node right after a `(`, or with a pair of its own, can have any."""
        layout = self.layout
        lines = self.lines
        sole_arguments = layout.sole_arguments
        for node in self.parenthesised:
            source = layout._sources[id(node)][1]
            end_row, end = source.end_lineno, source.end_col_offset  # type: ignore[attr-defined]
            line = lines[end_row - 1]
            if line.isascii() and id(node) not in layout.own_pair:  # a `)` or the line's end must follow
                rest = line[end:]
                after = rest.lstrip(" \t\f")
                if after and after[0] not in ")#\\\r\n":
                    continue
                # A call's sole argument followed by the call's own `)`: no pair between them
                # is the argument's (the commonest case, `len(x)`).
                if after[:1] == ")" and sole_arguments.get(id(node)) == (end_row, end + len(rest) - len(after) + 1):
                    continue
            count = layout.parentheses(node)
            if count:
                _set(node, "lpar", (_LPAR,) * count)
                _set(node, "rpar", (_RPAR,) * count)

    def _optional(self, expression: ast.expr | None) -> cst.CSTNode | None:
        return None if expression is None else self.expression(expression)


    def _name(self, expression: ast.Name) -> cst.CSTNode:
        return _MAKE[cst.Name](value=expression.id)

    def _attribute(self, expression: ast.Attribute) -> cst.CSTNode:
        # The attribute's name gets no place: no finding is on it, and its text is its value.
        return _MAKE[cst.Attribute](value=self.expression(expression.value),
                                    attr=_MAKE[cst.Name](value=expression.attr))

    def _call(self, expression: ast.Call) -> cst.CSTNode:
        parts: list[ast.AST] = [*expression.args, *expression.keywords]
        if expression.keywords and expression.args:
            parts.sort(key=lambda part: (part.lineno, part.col_offset))
        args = [self._keyword(p) if isinstance(p, ast.keyword) else self._argument(p) for p in parts]
        if len(parts) == 1 and not isinstance(parts[0], (ast.keyword, ast.Starred)):
            self.layout.sole_arguments[id(args[0].value)] = (expression.end_lineno, expression.end_col_offset)
        return _MAKE[cst.Call](func=self.expression(expression.func), args=args)

    def _argument(self, expression: ast.expr) -> cst.CSTNode:
        if isinstance(expression, ast.Starred):
            node = _MAKE[cst.Arg](value=self.expression(expression.value), star="*")
        else:
            node = _MAKE[cst.Arg](value=self.expression(expression))
        self.record_like(node, expression)
        self.layout.spanning[id(node)] = (node.value, node.value, bool(node.star))
        return node

    def _keyword(self, keyword: ast.keyword) -> cst.CSTNode:
        if keyword.arg is None:
            node = _MAKE[cst.Arg](value=self.expression(keyword.value), star="**")
        else:
            node = _MAKE[cst.Arg](value=self.expression(keyword.value), keyword=_MAKE[cst.Name](value=keyword.arg))
        self.record_like(node, keyword)
        self.layout.spanning[id(node)] = (node.value, node.value, True)
        return node

    def _constant(self, expression: ast.Constant) -> cst.CSTNode:
        value = expression.value
        if value is None or value is True or value is False:
            return _MAKE[cst.Name](value=str(value))
        if value is Ellipsis:
            return _MAKE[cst.Ellipsis]()
        if isinstance(value, (str, bytes)):
            return self._strings(expression)
        text = self._source(expression)
        if isinstance(value, bool) or isinstance(value, int):
            return _MAKE[cst.Integer](value=text)
        if isinstance(value, float):
            return _MAKE[cst.Float](value=text)
        return _MAKE[cst.Imaginary](value=text)

    def _source(self, expression: ast.AST) -> str:
        row, end_row = expression.lineno, expression.end_lineno
        if row == end_row:
            line = self.lines[row - 1]
            if line.isascii():
                return line[expression.col_offset:expression.end_col_offset]
            return line.encode("utf-8")[expression.col_offset:expression.end_col_offset].decode("utf-8")
        first = self.lines[row - 1].encode("utf-8")[expression.col_offset:].decode("utf-8")
        last = self.lines[end_row - 1].encode("utf-8")[:expression.end_col_offset].decode("utf-8")
        return first + "".join(self.lines[row:end_row - 1]) + last

    def _strings(self, expression: ast.Constant | ast.JoinedStr) -> cst.CSTNode:
        """A string literal, an f-string, or an implicit concatenation of several."""
        text = self._source(expression)
        if _one_literal(text):
            self._inside_string(expression.lineno, expression.end_lineno)
            values = expression.values if isinstance(expression, ast.JoinedStr) else ()
            return self._string_token(text, values)
        spans = _plain_pieces(text)
        if spans is not None:  # most concatenations: plain strings, read without the tokenizer
            nodes = []
            for start, end in spans:
                row, column = _place_in(text, start, expression)
                end_row, end_column = _place_in(text, end, expression)
                self._inside_string(row, end_row)
                piece = _MAKE[cst.SimpleString](value=text[start:end])
                self.record(piece, row, column, end_row, end_column)
                nodes.append((piece, row, column))
            return self._concatenated(nodes, expression)
        pieces = []
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.STRING:
                pieces.append(token)
            elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.ENDMARKER,
                                    tokenize.INDENT, tokenize.DEDENT):
                raise Unsupported("string concatenation")  # e.g. Python 3.12's f-string tokens
        if len(pieces) < 2:
            raise Unsupported("string concatenation")
        nodes = []
        for token in pieces:
            row = expression.lineno + token.start[0] - 1
            end_row = expression.lineno + token.end[0] - 1
            column = _bytes_in(token.line, token.start[1]) + (expression.col_offset if token.start[0] == 1 else 0)
            end_column = _bytes_in(token.line, token.end[1]) + (expression.col_offset if token.end[0] == 1 else 0)
            self._inside_string(row, end_row)
            values: Sequence[ast.expr] = ()
            if "f" in token.string[:3].lower().split('"')[0].split("'")[0]:
                values = _shifted(ast.parse(token.string.strip(), mode="eval").body, row, column).values
            piece = self._string_token(token.string, values)
            self.record(piece, row, column, end_row, end_column)
            nodes.append((piece, row, column))
        return self._concatenated(nodes, expression)

    def _concatenated(self, nodes: list[tuple[cst.CSTNode, int, int]], expression: ast.expr) -> cst.CSTNode:
        """libcst's nesting of the pieces, `"a" ("b" "c")`, each part placed from its first piece."""
        node = nodes[-1][0]
        for left, row, column in reversed(nodes[:-1]):
            node = _MAKE[cst.ConcatenatedString](left=left, right=node)
            self.record(node, row, column, expression.end_lineno, expression.end_col_offset)
        return node

    def _inside_string(self, row: int, end_row: int) -> None:
        if end_row > row:
            self.layout.string_rows.update(range(row + 1, end_row + 1))

    def _string_token(self, text: str, values: Sequence[ast.expr]) -> cst.CSTNode:
        prefix = text[:len(text) - len(text.lstrip("rRbBuUfF"))]
        if "f" not in prefix.lower():
            return _MAKE[cst.SimpleString](value=text)
        quote = text[len(prefix):len(prefix) + 3]
        if quote not in ('"""', "'''"):
            quote = quote[0]
        return _MAKE[cst.FormattedString](parts=self._formatted_parts(values), start=prefix + quote, end=quote)

    def _formatted_parts(self, values: Sequence[ast.expr]) -> list[cst.CSTNode]:
        parts = []
        for value in values:
            if isinstance(value, ast.FormattedValue):
                conversion = None if value.conversion == -1 else chr(value.conversion)
                spec = None
                if value.format_spec is not None:
                    spec = self._formatted_parts(value.format_spec.values)  # type: ignore[attr-defined]
                parts.append(_MAKE[cst.FormattedStringExpression](expression=self.expression(value.value),
                                   conversion=conversion, format_spec=spec))
            elif isinstance(value, ast.Constant):
                parts.append(_MAKE[cst.FormattedStringText](value=str(value.value)))
        return parts

    def _subscript(self, expression: ast.Subscript) -> cst.CSTNode:
        index = expression.slice
        if isinstance(index, ast.Tuple) and index.elts and not self._parenthesised_tuple(index):
            elements = [self._subscript_element(e) for e in index.elts]
        else:
            elements = [self._subscript_element(index)]
        return _MAKE[cst.Subscript](value=self.expression(expression.value), slice=elements)

    def _parenthesised_tuple(self, expression: ast.Tuple) -> bool:
        """Whether a tuple's own `(` opens its span (its first element may have parentheses of its own)."""
        if not expression.elts:
            return True
        first = expression.elts[0]
        return (expression.lineno, expression.col_offset) != (first.lineno, first.col_offset) and \
            self._opening_closes_at_end(expression)

    def _opening_closes_at_end(self, expression: ast.AST) -> bool:
        text = self._source(expression)
        if not text.startswith("("):
            return False
        depth = 0
        index = 0
        while index < len(text):
            char = text[index]
            if char in "'\"":
                quote = text[index:index + 3] if text[index:index + 3] in ('"""', "'''") else char
                index = _string_end(text, index + len(quote), quote)
                continue
            if char == "#":
                newline = text.find("\n", index)
                index = len(text) if newline < 0 else newline
                continue
            if char in "([{":
                depth += 1
            elif char in ")]}":
                depth -= 1
                if depth == 0:
                    return index == len(text) - 1
            index += 1
        return False

    def _subscript_element(self, expression: ast.expr) -> cst.CSTNode:
        if isinstance(expression, ast.Slice):
            inner = self._bare_slice(expression)
            self.record_like(inner, expression)
        elif isinstance(expression, ast.Starred):
            inner = _MAKE[cst.Index](value=self.expression(expression.value), star="*")
            self.record_like(inner, expression)
        else:
            inner = _MAKE[cst.Index](value=self.expression(expression))
            self.record_like(inner, expression)
            self.layout.spanning[id(inner)] = (inner.value, inner.value, False)
        node = _MAKE[cst.SubscriptElement](slice=inner)
        self.record_like(node, expression)
        if isinstance(inner, cst.Index) and not inner.star:
            self.layout.spanning[id(node)] = (inner.value, inner.value, False)
        return node

    def _bare_slice(self, expression: ast.Slice) -> cst.CSTNode:
        return _MAKE[cst.Slice](lower=self._optional(expression.lower), upper=self._optional(expression.upper),
                     step=self._optional(expression.step))

    def _binary(self, expression: ast.BinOp) -> cst.CSTNode:
        return _MAKE[cst.BinaryOperation](left=self.expression(expression.left),
                     operator=_BINARY[type(expression.op)], right=self.expression(expression.right))

    def _boolean(self, expression: ast.BoolOp) -> cst.CSTNode:
        operator = _AND if isinstance(expression.op, ast.And) else _OR
        values = expression.values
        node = first = self.expression(values[0])
        for value in values[1:-1]:
            right = self.expression(value)
            node = _MAKE[cst.BooleanOperation](left=node, operator=operator, right=right)
            self.record(node, values[0].lineno, values[0].col_offset, value.end_lineno, value.end_col_offset)
            self.layout.spanning[id(node)] = (first, right, False)
        return _MAKE[cst.BooleanOperation](left=node, operator=operator, right=self.expression(values[-1]))

    def _unary(self, expression: ast.UnaryOp) -> cst.CSTNode:
        return _MAKE[cst.UnaryOperation](operator=_UNARY[type(expression.op)],
                     expression=self.expression(expression.operand))

    def _compare(self, expression: ast.Compare) -> cst.CSTNode:
        targets = [_MAKE[cst.ComparisonTarget](operator=_COMPARE[type(op)], comparator=self.expression(c))
                   for op, c in zip(expression.ops, expression.comparators)]
        return _MAKE[cst.Comparison](left=self.expression(expression.left), comparisons=targets)

    def _if_expression(self, expression: ast.IfExp) -> cst.CSTNode:
        return _MAKE[cst.IfExp](test=self.expression(expression.test), body=self.expression(expression.body),
                     orelse=self.expression(expression.orelse))

    def _lambda(self, expression: ast.Lambda) -> cst.CSTNode:
        return _MAKE[cst.Lambda](params=self._parameters(expression.args), body=self.expression(expression.body))

    def _named(self, expression: ast.NamedExpr) -> cst.CSTNode:
        return _MAKE[cst.NamedExpr](target=self.expression(expression.target), value=self.expression(expression.value))

    def _sequence(self, expression: ast.List | ast.Tuple | ast.Set) -> cst.CSTNode:
        cls = {ast.List: cst.List, ast.Tuple: cst.Tuple, ast.Set: cst.Set}[type(expression)]
        elements = []
        for element in expression.elts:
            if isinstance(element, ast.Starred):
                node = _MAKE[cst.StarredElement](value=self.expression(element.value))
            else:
                node = _MAKE[cst.Element](value=self.expression(element))
                self.layout.spanning[id(node)] = (node.value, node.value, False)
            self.record_like(node, element)
            elements.append(node)
        node = _MAKE[cls](elements=elements)
        if cls is cst.Tuple and (not elements or self._parenthesised_tuple(expression)):
            self.layout.own_pair.add(id(node))
        return node

    def _dict(self, expression: ast.Dict) -> cst.CSTNode:
        elements = []
        for key, value in zip(expression.keys, expression.values):
            if key is None:
                elements.append(_MAKE[cst.StarredDictElement](value=self.expression(value)))
            else:
                elements.append(_MAKE[cst.DictElement](key=self.expression(key), value=self.expression(value)))
        return _MAKE[cst.Dict](elements=elements)

    def _comprehension_for(self, generators: Sequence[ast.comprehension]) -> cst.CSTNode:
        inner = None
        for generator in reversed(generators):
            inner = _MAKE[cst.CompFor](target=self.expression(generator.target), iter=self.expression(generator.iter),
                          ifs=[_MAKE[cst.CompIf](test=self.expression(test)) for test in generator.ifs],
                          inner_for_in=inner,
                          asynchronous=_MAKE[cst.Asynchronous]() if generator.is_async else None)
        assert inner is not None
        return inner

    def _comprehension(self, expression: ast.ListComp | ast.SetComp | ast.GeneratorExp) -> cst.CSTNode:
        cls = {ast.ListComp: cst.ListComp, ast.SetComp: cst.SetComp, ast.GeneratorExp: cst.GeneratorExp}[type(expression)]
        node = _MAKE[cls](elt=self.expression(expression.elt), for_in=self._comprehension_for(expression.generators))
        if cls is cst.GeneratorExp:
            self.layout.own_pair.add(id(node))
        return node

    def _dict_comprehension(self, expression: ast.DictComp) -> cst.CSTNode:
        return _MAKE[cst.DictComp](key=self.expression(expression.key), value=self.expression(expression.value),
                     for_in=self._comprehension_for(expression.generators))

    def _await(self, expression: ast.Await) -> cst.CSTNode:
        return _MAKE[cst.Await](expression=self.expression(expression.value))

    def _yield(self, expression: ast.Yield | ast.YieldFrom) -> cst.CSTNode:
        if isinstance(expression, ast.YieldFrom):
            return _MAKE[cst.Yield](value=_MAKE[cst.From](item=self.expression(expression.value)))
        return _MAKE[cst.Yield](value=self._optional(expression.value))

    def _starred(self, expression: ast.Starred) -> cst.CSTNode:
        return _MAKE[cst.StarredElement](value=self.expression(expression.value))


def _shifted(tree: ast.expr, row: int, column: int) -> ast.expr:
    """A tree parsed from a piece of the source, moved to where the piece starts."""
    for node in ast.walk(tree):
        if hasattr(node, "lineno"):
            if node.lineno == 1:
                node.col_offset += column
            if node.end_lineno == 1:
                node.end_col_offset += column
            node.lineno += row - 1
            node.end_lineno += row - 1
    return tree  # type: ignore[return-value]


def _dotted(name: str) -> cst.CSTNode:
    parts = name.split(".")
    node = _MAKE[cst.Name](value=parts[0])
    for part in parts[1:]:
        node = _MAKE[cst.Attribute](value=node, attr=_MAKE[cst.Name](value=part))
    return node


def _bytes_in(line: str, characters: int) -> int:
    prefix = line[:characters]
    return len(prefix) if prefix.isascii() else len(prefix.encode("utf-8"))


def _string_end(text: str, index: int, quote: str) -> int:
    """Index just past the closing `quote` of a string whose body starts at `index`."""
    while True:
        found = text.find(quote, index)
        if found < 0:
            return len(text)
        escapes = 0
        while found - escapes - 1 >= index and text[found - escapes - 1] == "\\":
            escapes += 1
        if escapes % 2 == 0:
            return found + len(quote)
        index = found + 1


# Between two pieces of a concatenation: blanks, line breaks, continuations and comments.
_BETWEEN_PIECES = re.compile(r"(?:[ \t\f\r\n]|\\\r?\n|\\\r|#[^\r\n]*)*")
_STRING_PREFIX = re.compile(r"[rRbBuU]*")


def _plain_pieces(text: str) -> list[tuple[int, int]] | None:
    """[start, end) of each literal of `text`, a concatenation of string literals; None when
    one is an f-string (whose quotes nest from Python 3.12 on: the tokenizer reads those)."""
    if "\r" in text and "\r" in text.replace("\r\n", ""):
        return None  # a row ended by `\r` alone, which the row count below does not see
    pieces = []
    index = 0
    while index < len(text):
        start = index
        index = _STRING_PREFIX.match(text, index).end()  # type: ignore[union-attr]
        quote = text[index:index + 3]
        if quote not in ('"""', "'''"):
            quote = text[index:index + 1]
            if quote not in ('"', "'"):
                return None  # an `f` prefix, or text this reading does not expect
        index = _string_end(text, index + len(quote), quote)
        pieces.append((start, index))
        index = _BETWEEN_PIECES.match(text, index).end()  # type: ignore[union-attr]
    return pieces if len(pieces) > 1 else None


def _place_in(text: str, index: int, expression: ast.expr) -> tuple[int, int]:
    """(row, byte column) in the source of character `index` of `text`, the source of `expression`."""
    line_start = text.rfind("\n", 0, index) + 1
    before = text[line_start:index]
    column = len(before) if before.isascii() else len(before.encode("utf-8"))
    if line_start == 0:
        return expression.lineno, expression.col_offset + column
    return expression.lineno + text.count("\n", 0, index), column


def _one_literal(text: str) -> bool:
    """Whether `text` (a string expression's source) is a single literal, not `"a" "b"`."""
    body = text.lstrip("rRbBuUfF")
    quote = body[:3] if body[:3] in ('"""', "'''") else body[:1]
    return _string_end(body, len(quote), quote) == len(body)
