"""Fixture files: findings match the `# expect:` markers; fixes match `*.fixed.py`.

A fixture marks each expected finding on its line (`loss.backward()  # expect:
GA201`); every unmarked line must stay silent. `<name>.fixed.py` next to
`<name>.py` is exactly what `gacclint fix --unsafe-fixes` writes for it (the
rule examples test which fixes are safe).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gacclint.engine import lint_source
from gacclint.fixes.apply import fix_source
from gacclint.selection import Selection

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MARKER = re.compile(r"#\s*expect:\s*(GA\d{3}(?:\s*,\s*GA\d{3})*)")


def _inputs(folder: str) -> list[Path]:
    return sorted(p for p in (FIXTURES / folder).rglob("*.py") if not p.name.endswith(".fixed.py"))


def expected_findings(path: Path) -> list[tuple[int, str]]:
    found = []
    for row, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = MARKER.search(line)
        if match:
            found.extend((row, code.strip()) for code in match.group(1).split(","))
    return sorted(found)


def actual_findings(path: Path) -> list[tuple[int, str]]:
    _, findings = lint_source(path.read_bytes(), Selection())
    return sorted((f.row, f.code) for f in findings)


MARKED = [p for folder in ("seeds", "precision") if (FIXTURES / folder).exists() for p in _inputs(folder)]
FIXED_PAIRS = sorted(p for p in FIXTURES.rglob("*.fixed.py"))


@pytest.mark.parametrize("path", MARKED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_findings_match_markers(path: Path) -> None:
    assert actual_findings(path) == expected_findings(path)


def test_every_seed_shape_is_a_fixture() -> None:
    # RULES.md's table: 13 shapes from the four seed documents (one file each,
    # the plain-loop variants of seeds 000 and 001 counted once each).
    assert len(_inputs("seeds")) >= 13


@pytest.mark.parametrize("fixed", FIXED_PAIRS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fix_writes_the_fixed_twin(fixed: Path) -> None:
    source = fixed.with_name(fixed.name.replace(".fixed.py", ".py")).read_bytes()
    outcome = fix_source(source, Selection(), unsafe=True)
    assert outcome.fixed.decode() == fixed.read_text(encoding="utf-8")
    assert not outcome.dropped
    # The fixed file re-checks without the fixed findings and is stable.
    codes_before = {f.code for f in lint_source(source, Selection())[1]}
    codes_after = {f.code for f in lint_source(outcome.fixed, Selection())[1]}
    assert not (codes_after & {f.code for f in outcome.applied}), codes_after
    assert codes_after <= codes_before
    assert not fix_source(outcome.fixed, Selection(), unsafe=True).changed
