"""Apply fixes to a fixpoint, re-parsing and re-checking after every one.

A fix is applied alone, the result re-parsed and re-checked; a fix whose
output does not parse, or that leaves its own finding behind, is dropped and
reported. Fixes of one pass never overlap because there is one per pass; the
loop ends when nothing fixable is left (RULES.md: GA202 then GA203).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import libcst as cst

from gacclint.engine import Located, SourceError, lint_module, parse
from gacclint.fixes.edits import apply_edits
from gacclint.rules.base import Applicability
from gacclint.selection import Selection

MAX_PASSES = 25


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


def fix_source(source: bytes, selection: Selection, unsafe: bool = False, *,
               module: cst.Module | None = None, keep: FindingsFilter | None = None) -> FixOutcome:
    """`module`: the tree of `source`, when the caller parsed it already."""
    def lint(tree: cst.Module) -> list[Located]:
        found = lint_module(tree, selection)
        return keep(tree, found) if keep is not None and found else found

    outcome = FixOutcome(source, source)
    module = module if module is not None else parse(source)
    findings = lint(module)
    refused: set[tuple[str, str]] = set()
    for _ in range(MAX_PASSES):
        candidates = [f for f in findings if allowed(f, unsafe) and (f.code, f.message) not in refused]
        if not candidates:
            break
        candidate = candidates[0]
        try:
            new_source = fixed_alone(module, candidate)
            new_module = parse(new_source)
        except (SourceError, cst.ParserSyntaxError, ValueError) as error:
            refused.add((candidate.code, candidate.message))
            outcome.dropped.append(Dropped(candidate, f"the fixed code does not parse ({error})"))
            continue
        new_findings = lint(new_module)
        before = sum(1 for f in findings if f.code == candidate.code)
        after = sum(1 for f in new_findings if f.code == candidate.code)
        if after >= before:
            refused.add((candidate.code, candidate.message))
            outcome.dropped.append(Dropped(candidate, "the fix leaves its own finding behind"))
            continue
        outcome.applied.append(candidate)
        module, findings, outcome.fixed = new_module, new_findings, new_source
    else:
        outcome.converged = False
    outcome.remaining, outcome.module = findings, module
    return outcome
