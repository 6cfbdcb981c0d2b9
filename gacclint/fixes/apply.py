"""Apply fixes to a fixpoint, every non-overlapping fix of a pass together.

Each fix is turned into text ranges of the current source (the lines its CST
edits change, found by diffing its result against the source), and a pass
applies every fix whose ranges lie in parts of the module no other fix of the
pass touches: a top-level statement (a method of a top-level class), or the
lines between them. The result is re-parsed and re-checked; a fix whose
output does not parse, or that leaves its own finding behind, is dropped and
reported. Passes continue until nothing fixable is left (GA202, then the
GA203 its clause reveals), with no fixed cap: a pass that applies nothing, or
returns to a text already seen, ends the run, and `converged` says whether
fixable findings were left behind.
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass, field
from typing import Callable

import libcst as cst

from gacclint.engine import Located, SourceError, lint_module, parse
from gacclint.fixes.edits import apply_edits
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


@dataclass(frozen=True)
class Hunk:
    """Lines [start, stop) of the current source become `lines`."""

    start: int
    stop: int
    lines: tuple[bytes, ...]


def hunks_of(before: list[bytes], after: list[bytes]) -> list[Hunk]:
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    return [Hunk(i1, i2, tuple(after[j1:j2])) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


def apply_hunks(lines: list[bytes], hunks: list[Hunk]) -> bytes:
    result = list(lines)
    for hunk in sorted(hunks, key=lambda h: (h.start, h.stop), reverse=True):
        result[hunk.start:hunk.stop] = hunk.lines
    return b"".join(result)


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

    def touched(self, hunk: Hunk) -> set[int]:
        if hunk.start == hunk.stop:  # an insertion between two lines: both sides count
            return {self.at(hunk.start - 1), self.at(hunk.start)}
        return {self.at(row) for row in range(hunk.start, hunk.stop)}


def _key(finding: Located, hunks: list[Hunk]) -> tuple:
    """Names a fix across passes (rows move): its code, message and edit."""
    return finding.code, finding.message, tuple((h.lines, h.stop - h.start) for h in hunks)


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
        taken: set[int] = set()
        batch: list[tuple[Located, list[Hunk], bytes]] = []
        fixes_seen: set[int] = set()
        sharing: dict[int, list[Located]] = {}
        for candidate in candidates:
            sharing.setdefault(id(candidate.fix), []).append(candidate)
        for candidate in candidates:
            assert candidate.fix is not None
            if id(candidate.fix) in fixes_seen:
                continue  # one fix shared by several findings (one rewrite of a loop)
            if units.at(candidate.row - 1) in taken:
                continue  # next pass
            alone = fixed_alone(module, candidate)
            hunks = hunks_of(lines, split_byte_lines(alone))
            key = _key(candidate, hunks)
            if key in refused:
                continue
            touched = {units.at(candidate.row - 1)}.union(*(units.touched(h) for h in hunks))
            if touched & taken:
                continue
            taken |= touched
            fixes_seen.add(id(candidate.fix))
            batch.append((candidate, hunks, alone))
        if not batch:
            break
        outcome.passes += 1
        result = _together(module, findings, lines, batch, lint, refused, outcome)
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


def _together(module, findings, lines, batch, lint, refused, outcome):
    """Apply the batch's fixes together: (text, tree, findings, applied), or
    None when each of them was dropped. A batch that fails as a whole is
    checked fix by fix; the good ones are applied together again."""
    text = apply_hunks(lines, [h for _, hunks, _ in batch for h in hunks])
    checked = _checked(text, lint)
    if checked is not None and _own_findings_gone(findings, checked[1], [f for f, _, _ in batch]):
        return text, checked[0], checked[1], [f for f, _, _ in batch]
    good = []
    for finding, hunks, alone in batch:
        reason = _alone_problem(alone, findings, finding, lint)
        if reason is None:
            good.append((finding, hunks, alone))
        else:
            refused.add(_key(finding, hunks))
            outcome.dropped.append(Dropped(finding, reason))
    if not good:
        return None
    if len(good) < len(batch):
        text = apply_hunks(lines, [h for _, hunks, _ in good for h in hunks])
        checked = _checked(text, lint)
    if checked is None:  # good alone, not together: the first one only
        finding, _, alone = good[0]
        checked = _checked(alone, lint)
        assert checked is not None
        return alone, checked[0], checked[1], [finding]
    return text, checked[0], checked[1], [f for f, _, _ in good]


def _checked(text: bytes, lint):
    try:
        tree = parse(text)
    except (SourceError, cst.ParserSyntaxError, ValueError):
        return None
    return tree, lint(tree)


def _own_findings_gone(before: list[Located], after: list[Located], applied: list[Located]) -> bool:
    fixes = {id(f.fix) for f in applied}
    applied = [f for f in before if id(f.fix) in fixes]
    codes = {f.code for f in applied}
    for code in codes:
        wanted = sum(1 for f in before if f.code == code) - sum(1 for f in applied if f.code == code)
        if sum(1 for f in after if f.code == code) > wanted:
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
