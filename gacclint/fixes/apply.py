"""Apply fixes to a fixpoint, every non-overlapping fix of a pass together.

A pass takes, in finding order, every fix whose edits (and finding) lie in
parts of the module that no fix taken before in the pass touches: a part is
a top-level statement (a statement of a top-level class body), or the lines
between them. Their edits are applied in one rewrite of the tree, so
untouched code keeps its exact bytes. The result is re-parsed and
re-checked; when the batch fails, each fix is tried alone, and a fix whose
output does not parse, or that leaves its own finding behind, is dropped and
reported. Passes continue until nothing fixable is left (GA202, then the
GA203 its clause reveals), with no fixed cap: a pass that applies nothing, or
returns to a text already seen, ends the run, and `converged` says whether
fixable findings were left behind.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from gacclint.engine import Located, SourceError, lint_module, parse
from gacclint.fixes.edits import InsertBefore, MoveBefore, apply_edits, touched
from gacclint.rules.base import Applicability
from gacclint.selection import Selection
from gacclint.source import split_byte_lines


@dataclass
class Dropped:
    finding: Located
    reason: str


@dataclass
class FixOutcome:
    original: bytes
    fixed: bytes
    applied: list[Located] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    remaining: list[Located] = field(default_factory=list)
    converged: bool = True
    module: cst.Module | None = None  # the tree of `fixed`
    passes: int = 0

    @property
    def changed(self) -> bool:
        return self.fixed != self.original


def allowed(finding: Located, unsafe: bool) -> bool:
    if finding.fix is None:
        return False
    return finding.fix.applicability is Applicability.SAFE or unsafe


def fixed_alone(module: cst.Module, finding: Located) -> bytes:
    """The source with just this finding's fix applied."""
    assert finding.fix is not None
    return apply_edits(module, finding.fix.edits).bytes


# Drops the findings the user suppressed (`# noqa`) in a module's current text.
FindingsFilter = Callable[[cst.Module, "list[Located]"], "list[Located]"]


class _Units:
    """The parts of a source that fixes of one pass may share out: each
    top-level statement (each statement of a top-level class body) with its
    decorators is one unit; a line outside every unit is unit -1."""

    def __init__(self, source: bytes, line_count: int) -> None:
        self.of_line = [-1] * (line_count + 1)
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return
        statements: list[ast.stmt] = []
        for statement in tree.body:
            if isinstance(statement, ast.ClassDef) and statement.body:
                statements.extend(statement.body)
            else:
                statements.append(statement)
        for number, statement in enumerate(statements):
            first = min([statement.lineno] + [d.lineno for d in getattr(statement, "decorator_list", ())])
            last = statement.end_lineno or statement.lineno
            for row in range(first - 1, min(last, line_count)):
                self.of_line[row] = number

    def at(self, row: int) -> int:
        """The unit of 0-based line `row` (the line after the last one: -1)."""
        return self.of_line[row] if 0 <= row < len(self.of_line) else -1

    def names(self, lines: list[bytes]) -> dict[int, tuple[bytes, int]]:
        """Each unit's name across passes: its first line, and how many units
        before it start with the same line (a fix may add units above it)."""
        names: dict[int, tuple[bytes, int]] = {}
        counts: dict[bytes, int] = {}
        for row, unit in enumerate(self.of_line[:len(lines)]):
            if unit >= 0 and unit not in names:
                first = lines[row].strip()
                names[unit] = (first, counts.get(first, 0))
                counts[first] = counts.get(first, 0) + 1
        return names


def _key(finding: Located, module: cst.Module, units: "_Units", lines: list[bytes]) -> tuple:
    """Names a fix across passes (rows move): its code, message, the text it
    reports and the first line of the part of the module it sits in."""
    unit = units.at(finding.row - 1)
    first = next((lines[row] for row in range(len(lines)) if units.at(row) == unit), b"") if unit >= 0 else b""
    return finding.code, finding.message, module.code_for_node(finding.finding.node), first


def _units_of(finding: Located, units: "_Units", positions) -> set[int] | None:
    """The parts of the module a fix's edits touch (None: an edit names a node
    that is not in the module)."""
    assert finding.fix is not None
    found = {units.at(finding.row - 1)}
    for edit in finding.fix.edits:
        for node in touched(edit):
            span = positions.get(node)
            if span is None:
                return None
            found.update(units.at(row) for row in range(span.start.line - 1, span.end.line))
            if isinstance(edit, (InsertBefore, MoveBefore)):
                found.add(units.at(span.start.line - 2))  # the line above, where the insertion lands
    return found


def fix_source(source: bytes, selection: Selection, unsafe: bool = False, *,
               module: cst.Module | None = None, keep: FindingsFilter | None = None) -> FixOutcome:
    """`module`: the tree of `source`, when the caller parsed it already."""
    def lint(tree: cst.Module) -> list[Located]:
        found = lint_module(tree, selection)
        return keep(tree, found) if keep is not None and found else found

    outcome = FixOutcome(source, source)
    module = module if module is not None else parse(source)
    findings = lint(module)
    refused: set[tuple] = set()
    seen = {source}
    text = source
    # A guard against fixes that keep making work for each other, far above
    # what a real file needs (each pass fixes every loop of the module once).
    limit = 50 + 10 * len(findings)
    while True:
        if outcome.passes >= limit:
            outcome.converged = False
            break
        candidates = [f for f in findings if allowed(f, unsafe)]
        if not candidates:
            break
        lines = split_byte_lines(text)
        units = _Units(text, len(lines))
        positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
        taken: set[int] = set()
        batch: list[Located] = []
        sharing: dict[int, list[Located]] = {}
        for candidate in candidates:
            sharing.setdefault(id(candidate.fix), []).append(candidate)
        for candidate in candidates:
            if any(candidate.fix is chosen.fix for chosen in batch):
                continue  # one fix shared by several findings (one rewrite of a loop)
            if _key(candidate, module, units, lines) in refused:
                continue
            parts = _units_of(candidate, units, positions)
            if parts is None:
                refused.add(_key(candidate, module, units, lines))
                outcome.dropped.append(Dropped(candidate, "an edit names code that is not in the file"))
                continue
            if parts & taken:
                continue  # next pass
            taken |= parts
            batch.append(candidate)
        if not batch:
            break
        outcome.passes += 1
        result = _together(module, findings, batch, lint, refused, outcome, (units, lines))
        if result is None:
            continue  # every fix of the batch was dropped: try the others
        new_text, new_module, new_findings, applied = result
        if new_text in seen:
            outcome.converged = False  # the fixes undo each other
            break
        seen.add(new_text)
        outcome.applied.extend(f for first in applied for f in sharing[id(first.fix)])
        module, findings, text = new_module, new_findings, new_text
    outcome.fixed = text
    outcome.remaining, outcome.module = findings, module
    outcome.converged = outcome.converged and not any(
        allowed(f, unsafe) for f in findings if not _is_dropped(f, outcome))
    return outcome


def _is_dropped(finding: Located, outcome: FixOutcome) -> bool:
    return any(d.finding.code == finding.code and d.finding.message == finding.message for d in outcome.dropped)


def _applied(module: cst.Module, batch: list[Located]) -> bytes:
    if len(batch) == 1:
        return fixed_alone(module, batch[0])
    return apply_edits(module, [edit for finding in batch for edit in finding.fix.edits]).bytes  # type: ignore[union-attr]


def _together(module, findings, batch, lint, refused, outcome, where):
    """Apply the batch's fixes together: (text, tree, findings, applied), or
    None when each of them was dropped. A batch that fails as a whole is
    checked fix by fix; the good ones are applied together again."""
    try:
        text = _applied(module, batch)
    except (cst.ParserSyntaxError, ValueError):  # inserted source that does not parse
        text, checked = b"", None
    else:
        checked = _checked(text, lint)
    if checked is not None and _own_findings_gone(findings, checked[1], batch, where, text):
        return text, checked[0], checked[1], batch
    good = []
    for finding in batch:
        try:
            alone = fixed_alone(module, finding) if len(batch) > 1 or not text else text
        except (cst.ParserSyntaxError, ValueError) as error:
            alone, reason = b"", f"the fixed code does not parse ({error})"
        else:
            reason = _alone_problem(alone, findings, finding, lint)
        if reason is None:
            good.append((finding, alone))
        else:
            refused.add(_key(finding, module, *where))
            outcome.dropped.append(Dropped(finding, reason))
    if not good:
        return None
    if len(good) < len(batch):
        text = _applied(module, [finding for finding, _ in good])
        checked = _checked(text, lint)
    if checked is None:  # good alone, not together: the first one only
        finding, alone = good[0]
        checked = _checked(alone, lint)
        assert checked is not None
        return alone, checked[0], checked[1], [finding]
    return text, checked[0], checked[1], [finding for finding, _ in good]


def _checked(text: bytes, lint):
    try:
        tree = parse(text)
    except (SourceError, cst.ParserSyntaxError, ValueError):
        return None
    return tree, lint(tree)


def _own_findings_gone(before: list[Located], after: list[Located], batch: list[Located], where, text: bytes) -> bool:
    """Each fix of the batch took away a finding of its code in its part of the
    module (one fix per part and pass; a fix may reveal findings of other codes)."""
    units, lines = where
    names = units.names(lines)
    new_lines = split_byte_lines(text)
    new_units = _Units(text, len(new_lines))
    new_names = new_units.names(new_lines)

    def count(findings: list[Located], code: str, name, unit_of, names_of) -> int:
        return sum(1 for f in findings if f.code == code and names_of.get(unit_of(f.row - 1)) == name)

    for finding in batch:
        name = names.get(units.at(finding.row - 1))
        if name is None:
            return False  # outside every unit: checked alone
        if count(after, finding.code, name, new_units.at, new_names) >= count(before, finding.code, name, units.at, names):
            return False
    return True


def _alone_problem(alone: bytes, before: list[Located], finding: Located, lint) -> str | None:
    try:
        tree = parse(alone)
    except (SourceError, cst.ParserSyntaxError, ValueError) as error:
        return f"the fixed code does not parse ({error})"
    after = lint(tree)
    if sum(1 for f in after if f.code == finding.code) >= sum(1 for f in before if f.code == finding.code):
        return "the fix leaves its own finding behind"
    return None
