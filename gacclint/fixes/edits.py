"""Fixes as small CST edits anchored on the nodes of the parsed module.

Edits name original nodes; `apply_edits` rebuilds only the blocks and
expressions they touch, so untouched code keeps its exact text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import libcst as cst

from gacclint.fixes.style import LINE_LENGTH, wrap
from gacclint.fixes.style import wrap as wrap_line


@dataclass(frozen=True)
class InsertBefore:
    anchor: cst.BaseStatement
    # One statement: unindented source, or an existing statement being moved
    # here (it keeps the comment lines above it).
    code: str | cst.BaseStatement
    # A new statement built by the fix: its blank lines above it are kept too.
    new: bool = False


@dataclass(frozen=True)
class InsertAfter:
    anchor: cst.BaseStatement
    code: str | cst.BaseStatement


@dataclass(frozen=True)
class Remove:
    statement: cst.BaseStatement


@dataclass(frozen=True)
class MoveAfter:
    """Move a statement (with its comments) to directly after `anchor`."""

    statement: cst.BaseStatement
    anchor: cst.BaseStatement


@dataclass(frozen=True)
class Replace:
    node: cst.CSTNode
    replacement: cst.CSTNode


@dataclass(frozen=True)
class MoveBefore:
    """Move a statement (with its comments) to directly before `anchor`."""

    statement: cst.BaseStatement
    anchor: cst.BaseStatement


@dataclass(frozen=True)
class WrapInWith:
    """Put consecutive statements of one block under `with <items>:`.

    The comment lines directly above the first statement stay with it; blank
    lines (and comments above them) go above the `with`.
    """

    statements: tuple[cst.BaseStatement, ...]
    items: str  # source of the with items, e.g. `model.no_sync()`
    # A statement (source) put right before the `with`, e.g. the name it reads.
    prelude: str | None = None


Edit = Union[InsertBefore, InsertAfter, Remove, MoveAfter, Replace, MoveBefore, WrapInWith]


def touched(edit: Edit) -> list[cst.CSTNode]:
    """Nodes an edit depends on: two fixes touching one node are not applied together."""
    if isinstance(edit, (InsertBefore, InsertAfter)):
        return [edit.anchor]
    if isinstance(edit, Remove):
        return [edit.statement]
    if isinstance(edit, (MoveAfter, MoveBefore)):
        return [edit.statement, edit.anchor]
    if isinstance(edit, WrapInWith):
        return list(edit.statements)
    return [edit.node]


def _moved(statement: cst.BaseStatement) -> cst.BaseStatement:
    """A moved statement keeps the comment lines above it, not the blank ones."""
    leading = getattr(statement, "leading_lines", None)
    if leading is None:
        return statement
    kept = [line for line in leading if line.comment is not None]
    return statement.with_changes(leading_lines=kept)


class _EditApplier(cst.CSTTransformer):
    def __init__(self, module: cst.Module, edits: Sequence[Edit]) -> None:
        super().__init__()
        self.before: dict[int, list[str | cst.BaseStatement]] = {}
        self.after: dict[int, list[str | cst.BaseStatement]] = {}
        self.removed: set[int] = set()
        self.replacements: dict[int, cst.CSTNode] = {}
        self.wraps: dict[int, WrapInWith] = {}  # id(first statement) -> wrap
        self.module = module
        self.indents: list[str] = []  # the indentation of each block being visited
        self.replaced = 0  # replacements made so far
        self.replaced_before: list[int] = []  # that count as each enclosing simple statement began
        self.test_changed: dict[int, bool] = {}  # id(if/while) -> a replacement changed its test

        def statement(code: str | cst.BaseStatement) -> str | cst.BaseStatement:
            # Source is parsed where it lands, once its block's indentation is known.
            return code if isinstance(code, str) else _moved(code)

        for edit in edits:
            if isinstance(edit, InsertBefore):
                code = edit.code if edit.new else statement(edit.code)
                self.before.setdefault(id(edit.anchor), []).append(code)
            elif isinstance(edit, InsertAfter):
                self.after.setdefault(id(edit.anchor), []).append(statement(edit.code))
            elif isinstance(edit, Remove):
                self.removed.add(id(edit.statement))
            elif isinstance(edit, MoveAfter):
                self.removed.add(id(edit.statement))
                self.after.setdefault(id(edit.anchor), []).append(_moved(edit.statement))
            elif isinstance(edit, MoveBefore):
                self.removed.add(id(edit.statement))
                self.before.setdefault(id(edit.anchor), []).append(_moved(edit.statement))
            elif isinstance(edit, WrapInWith):
                self.wraps[id(edit.statements[0])] = edit
            else:
                self.replacements[id(edit.node)] = edit.replacement

    # A header whose test a replacement changed is wrapped if it grew too long.
    def visit_If_test(self, node: cst.If) -> None:
        self.replaced_before.append(self.replaced)

    def leave_If_test(self, node: cst.If) -> None:
        self.test_changed[id(node)] = self.replaced != self.replaced_before.pop()

    def visit_While_test(self, node: cst.While) -> None:
        self.replaced_before.append(self.replaced)

    def leave_While_test(self, node: cst.While) -> None:
        self.test_changed[id(node)] = self.replaced != self.replaced_before.pop()

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> bool:
        self.replaced_before.append(self.replaced)
        return True

    def _wrapped_line(self, node: cst.SimpleStatementLine) -> cst.SimpleStatementLine:
        """A line a fix's replacement made longer than the line length, wrapped."""
        module = self.module
        if len(node.body) != 1:
            return node
        code = module.code_for_node(node.body[0]).strip()
        width = LINE_LENGTH - len("".join(self.indents))
        if "\n" in code or len(code) + len(module.code_for_node(node.trailing_whitespace).rstrip()) <= width:
            return node
        wrapped = wrap_line(code, width, module.default_indent)
        if wrapped == code:
            return node
        try:
            parsed = cst.parse_statement(wrapped.replace("\n", module.default_newline) + module.default_newline,
                                         module.config_for_parsing)
        except cst.ParserSyntaxError:
            return node
        assert isinstance(parsed, cst.SimpleStatementLine)
        return node.with_changes(body=parsed.body)

    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> bool:
        self.indents.append(node.indent if node.indent is not None else self.module.default_indent)
        return True

    def on_leave(self, original_node, updated_node):  # type: ignore[override]
        updated = super().on_leave(original_node, updated_node)
        replacement = self.replacements.get(id(original_node))
        if replacement is not None:
            self.replaced += 1
            return replacement
        if isinstance(updated, (cst.If, cst.While)) and self.test_changed.pop(id(original_node), False):
            updated = self._wrapped_test(updated)
        elif isinstance(updated, cst.SimpleStatementLine):
            if self.replaced != self.replaced_before.pop():
                updated = self._wrapped_line(updated)
        if isinstance(updated, (cst.IndentedBlock, cst.Module)):
            rebuilt = self._rebuild(original_node, updated)
            if isinstance(updated, cst.IndentedBlock):
                self.indents.pop()
            return rebuilt
        return updated

    def _wrapped_test(self, node: cst.If | cst.While) -> cst.If | cst.While:
        """A header a fix made longer than the line length, in parentheses over several lines."""
        module = self.module
        keyword = "while" if isinstance(node, cst.While) else "if"
        header = f"{keyword} {module.code_for_node(node.test)}:"
        width = LINE_LENGTH - len("".join(self.indents))
        if len(header) <= width or "\n" in header or node.whitespace_before_test.value != " ":
            return node
        wrapped = wrap_line(header, width, module.default_indent)
        if wrapped == header:
            return node
        try:
            parsed = cst.parse_statement(f"{wrapped}\n{module.default_indent}pass\n".replace("\n", module.default_newline),
                                         module.config_for_parsing)
        except cst.ParserSyntaxError:
            return node
        assert isinstance(parsed, (cst.If, cst.While))
        return node.with_changes(test=parsed.test, whitespace_before_test=parsed.whitespace_before_test,
                                 whitespace_after_test=parsed.whitespace_after_test)

    def _parsed(self, code: str | cst.BaseStatement) -> cst.BaseStatement:
        """Inserted source as a statement of the current block: wrapped to the
        line length, its continuation lines indented like the block."""
        if not isinstance(code, str):
            return code
        module = self.module
        indent = "".join(self.indents)
        # libcst puts the block's indentation before continuation lines itself.
        text = wrap(code, LINE_LENGTH - len(indent), module.default_indent)
        return cst.parse_statement(text.replace("\n", module.default_newline) + module.default_newline,
                                   module.config_for_parsing)

    def _rebuild(self, original: cst.IndentedBlock | cst.Module, updated: cst.IndentedBlock | cst.Module):
        body: list[cst.BaseStatement] = []
        changed = False
        for old, new in self._wrapped(original.body, updated.body):
            inserted_before = [self._parsed(code) for code in self.before.get(id(old), [])]
            inserted_after = [self._parsed(code) for code in self.after.get(id(old), [])]
            body.extend(inserted_before)
            if id(old) in self.removed:
                changed = True
            else:
                body.append(new)
            body.extend(inserted_after)
            changed = changed or bool(inserted_before or inserted_after) or new is not old
        if not changed:
            return updated
        if not body:
            body = [cst.SimpleStatementLine([cst.Pass()])]
        return updated.with_changes(body=body)


    def _wrapped(self, original: Sequence[cst.BaseStatement], updated: Sequence[cst.BaseStatement]):
        """(old, new) pairs of a block, a run of statements to wrap becoming one `with`."""
        pairs = list(zip(original, updated))
        index = 0
        while index < len(pairs):
            old, new = pairs[index]
            wrap = self.wraps.get(id(old))
            if wrap is None:
                yield old, new
                index += 1
                continue
            count = len(wrap.statements)
            run = pairs[index:index + count]
            if [id(o) for o, _ in run] != [id(s) for s in wrap.statements]:
                yield old, new  # not consecutive here: leave the block alone
                index += 1
                continue
            prelude, with_statement = self._with(wrap, [n for _, n in run])
            if prelude is not None:
                yield object(), prelude  # a new statement: no edit is anchored on it
            yield old, with_statement
            index += count

    def _with(self, wrap: WrapInWith, statements: list[cst.BaseStatement]):
        """(the prelude statement or None, the `with` holding `statements`)."""
        module = self.module
        header = wrap_line(f"with {wrap.items}:", LINE_LENGTH - len("".join(self.indents)), module.default_indent)
        template = cst.parse_statement(f"{header}\n{module.default_indent}pass\n".replace("\n", module.default_newline),
                                       module.config_for_parsing)
        assert isinstance(template, cst.With) and isinstance(template.body, cst.IndentedBlock)
        first = statements[0]
        leading = list(getattr(first, "leading_lines", ()))
        split = len(leading)
        while split > 0 and leading[split - 1].comment is not None:
            split -= 1
        statements[0] = first.with_changes(leading_lines=leading[split:])
        body = template.body.with_changes(body=statements)
        if wrap.prelude is None:
            return None, template.with_changes(leading_lines=leading[:split], body=body)
        prelude = self._parsed(wrap.prelude)
        return prelude.with_changes(leading_lines=leading[:split]), template.with_changes(body=body)


def apply_edits(module: cst.Module, edits: Sequence[Edit]) -> cst.Module:
    return module.visit(_EditApplier(module, edits))
