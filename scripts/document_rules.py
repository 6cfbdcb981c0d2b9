"""Write docs/rules.md from the rule classes (run after changing a rule's docs or examples)."""

from pathlib import Path

from gacclint.docs import render_rules_markdown

TARGET = Path(__file__).resolve().parent.parent / "docs" / "rules.md"

if __name__ == "__main__":
    TARGET.write_text(render_rules_markdown(), encoding="utf-8")
    print(f"wrote {TARGET}")
