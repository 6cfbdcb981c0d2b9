"""Fixes as small CST edits anchored on the nodes of the parsed module.

Edits name original nodes; `apply_edits` rebuilds only the blocks and
expressions they touch, so untouched code keeps its exact text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import libcst as cst


@dataclass(frozen=True)
class InsertBefore:
    anchor: cst.BaseStatement
    # One statement: unindented source, or an existing statement being moved
    # here (it keeps the comment lines above it).
    code: str | cst.BaseStatement


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


Edit = Union[InsertBefore, InsertAfter, Remove, MoveAfter, Replace]


def touched(edit: Edit) -> list[cst.CSTNode]:
    """Nodes an edit depends on: two fixes touching one node are not applied together."""
    if isinstance(edit, (InsertBefore, InsertAfter)):
        return [edit.anchor]
    if isinstance(edit, Remove):
        return [edit.statement]
    if isinstance(edit, MoveAfter):
        return [edit.statement, edit.anchor]
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
        self.before: dict[int, list[cst.BaseStatement]] = {}
        self.after: dict[int, list[cst.BaseStatement]] = {}
        self.removed: set[int] = set()
        self.replacements: dict[int, cst.CSTNode] = {}
        def statement(code: str | cst.BaseStatement) -> cst.BaseStatement:
            if isinstance(code, str):
                return cst.parse_statement(code + module.default_newline, module.config_for_parsing)
            return _moved(code)

        for edit in edits:
            if isinstance(edit, InsertBefore):
                self.before.setdefault(id(edit.anchor), []).append(statement(edit.code))
            elif isinstance(edit, InsertAfter):
                self.after.setdefault(id(edit.anchor), []).append(statement(edit.code))
            elif isinstance(edit, Remove):
                self.removed.add(id(edit.statement))
            elif isinstance(edit, MoveAfter):
                self.removed.add(id(edit.statement))
                self.after.setdefault(id(edit.anchor), []).append(_moved(edit.statement))
            else:
                self.replacements[id(edit.node)] = edit.replacement

    def on_leave(self, original_node, updated_node):  # type: ignore[override]
        updated = super().on_leave(original_node, updated_node)
        replacement = self.replacements.get(id(original_node))
        if replacement is not None:
            return replacement
        if isinstance(updated, (cst.IndentedBlock, cst.Module)):
            return self._rebuild(original_node, updated)
        return updated

    def _rebuild(self, original: cst.IndentedBlock | cst.Module, updated: cst.IndentedBlock | cst.Module):
        body: list[cst.BaseStatement] = []
        changed = False
        for old, new in zip(original.body, updated.body):
            inserted_before = self.before.get(id(old), [])
            inserted_after = self.after.get(id(old), [])
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


def apply_edits(module: cst.Module, edits: Sequence[Edit]) -> cst.Module:
    return module.visit(_EditApplier(module, edits))
