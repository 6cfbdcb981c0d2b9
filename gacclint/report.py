"""Printing findings: concise lines for people, Ruff-shaped JSON for tools."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Iterable

from gacclint.engine import Located
from gacclint.fixes.apply import fixed_alone
from gacclint.rules import rule_by_code
from gacclint.rules.base import Applicability
from gacclint.runner import FileReport


def concise_line(path: Path, finding: Located) -> str:
    return f"{path}:{finding.row}:{finding.column}: {finding.code} {finding.message}"


def summary(reports: Iterable[FileReport], unsafe: bool = False) -> str:
    findings = [f for r in reports for f in r.findings]
    if not findings:
        return "All checks passed!"
    fixable = sum(1 for f in findings if f.fix and (f.fix.applicability is Applicability.SAFE or unsafe))
    hidden = sum(1 for f in findings if f.fix and f.fix.applicability is Applicability.UNSAFE and not unsafe)
    noun = "problem" if len(findings) == 1 else "problems"
    text = f"Found {len(findings)} {noun} ({fixable} fixable)."
    if hidden:
        text += f"\n{hidden} hidden fix{'es' if hidden > 1 else ''} can be enabled with the `--unsafe-fixes` option."
    return text


def _edits(report: FileReport, finding: Located) -> list[dict]:
    """The fix as line edits of the original text (Ruff's JSON shape)."""
    assert report.module is not None
    before = report.module.code.splitlines(keepends=True)
    after = fixed_alone(report.module, finding).decode(report.module.encoding).splitlines(keepends=True)
    edits = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        edits.append({"content": "".join(after[j1:j2]), "location": {"row": i1 + 1, "column": 1},
                      "end_location": {"row": i2 + 1, "column": 1}})
    return edits


def json_findings(reports: Iterable[FileReport]) -> str:
    items = []
    for report in reports:
        for finding in report.findings:
            rule = rule_by_code(finding.code)
            fix = None
            if finding.fix is not None and report.module is not None:
                fix = {"applicability": finding.fix.applicability.value, "message": finding.fix.message,
                       "edits": _edits(report, finding)}
            items.append({
                "cell": None,
                "code": finding.code,
                "end_location": {"row": finding.end_row, "column": finding.end_column},
                "filename": str(report.path.resolve()),
                "fix": fix,
                "location": {"row": finding.row, "column": finding.column},
                "message": finding.message,
                "name": rule.name if rule else None,
                "noqa_row": finding.row,
                "url": rule.url() if rule else None,
            })
    return json.dumps(items, indent=2)


def unified_diff(report: FileReport) -> str:
    assert report.fixed is not None
    encoding = report.module.encoding if report.module is not None else "utf-8"
    before = report.source.decode(encoding, errors="replace").splitlines(keepends=True)
    after = report.fixed.decode(encoding, errors="replace").splitlines(keepends=True)
    return "".join(difflib.unified_diff(before, after, f"a/{report.path}", f"b/{report.path}"))
