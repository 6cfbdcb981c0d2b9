"""Every rule's VALID/INVALID examples: silence, the finding, the fixed text, stability."""

from __future__ import annotations

import textwrap

import pytest

from gacclint.engine import lint_source
from gacclint.fixes.apply import fix_source
from gacclint.rules import all_rules
from gacclint.rules.base import REQUIRED_HEADINGS, Applicability
from gacclint.selection import Selection


def _cases(kind: str):
    for rule in all_rules():
        for index, case in enumerate(getattr(rule, kind)):
            yield pytest.param(rule, case, id=f"{rule.code}-{kind.lower()}-{index}")


def _codes(source: str, selection: Selection) -> list[str]:
    _, findings = lint_source(textwrap.dedent(source).encode(), selection)
    return [f.code for f in findings]


@pytest.mark.parametrize(("rule", "case"), list(_cases("VALID")))
def test_valid_example_is_silent(rule, case):
    assert _codes(case.code, Selection(select=(rule.code,))) == [], case.why


@pytest.mark.parametrize(("rule", "case"), list(_cases("INVALID")))
def test_invalid_example_is_reported_and_fixed(rule, case):
    only = Selection(select=(rule.code,))
    source = textwrap.dedent(case.code).encode()
    assert rule.code in _codes(case.code, only)
    # A full check reports this rule and only the codes the example declares.
    assert set(_codes(case.code, Selection())) <= {rule.code, *case.also}
    _, findings = lint_source(source, only)
    finding = next(f for f in findings if f.code == rule.code)
    if case.fixed is None:
        assert finding.fix is None
        return
    assert finding.fix is not None and finding.fix.applicability is case.applicability
    outcome = fix_source(source, only, unsafe=case.applicability is Applicability.UNSAFE)
    assert outcome.fixed.decode() == textwrap.dedent(case.fixed)
    assert _codes(case.fixed, only) == []
    again = fix_source(outcome.fixed, only, unsafe=True)
    assert not again.changed


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.code)
def test_rule_documentation_has_every_heading(rule):
    doc = rule.documentation()
    missing = [heading for heading in REQUIRED_HEADINGS if heading not in doc]
    assert not missing, f"{rule.code} docs lack {missing}"
    assert rule.VALID and rule.INVALID
