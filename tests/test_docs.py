from pathlib import Path

from gacclint.docs import render_rules_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs" / "rules.md"


def test_rules_page_is_generated_from_the_rule_classes() -> None:
    assert DOCS.read_text(encoding="utf-8") == render_rules_markdown(), "run: python scripts/document_rules.py"
