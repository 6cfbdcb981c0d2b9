"""The flake8 plugin: `flake8 --select GA` reports what `gacclint check` does,
code, row and column alike (flake8 counts columns from 0 internally and
prints them from 1, as gacclint does)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tokenize
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from gacclint.flake8_plugin import GacclintChecker

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

BUGGY = """\
def train(model, loader, optimizer, loss_fn, accumulation_steps):
    model.train()
    for i, (inputs, targets) in enumerate(loader):
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        if (i + 1) % accumulation_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
"""
# Latin-1 letters before the finding on its line: a plugin that re-encoded
# flake8's text as UTF-8 would shift the column (and misread the file).
LATIN_1 = """\
# -*- coding: latin-1 -*-
def train(model, loader, optimizer, loss_fn, k):
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        d\u00e9j\u00e0_vu = True; loss.backward()
        if (i + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()
"""

# `path:row:col: CODE message`, the line both tools print.
FINDING = re.compile(r"^(?P<path>.+?):(?P<row>\d+):(?P<column>\d+): (?P<code>GA\d{3}) ")


def _checker_findings(path: Path) -> list[tuple[int, int, str]]:
    """(row, 0-based column, code) as the plugin yields them, from the lines
    flake8 would read (decoded by their coding cookie)."""
    with tokenize.open(path) as stream:
        lines = stream.readlines()
    return [(row, column, text.split(" ", 1)[0]) for row, column, text, _ in GacclintChecker(None, lines).run()]


def _parsed(output: str, tree: Path) -> set[tuple[str, int, int, str]]:
    findings = set()
    for line in output.splitlines():
        match = FINDING.match(line)
        if match:
            path = Path(match["path"])
            relative = (path if path.is_absolute() else tree / path).relative_to(tree).as_posix()
            findings.add((relative, int(match["row"]), int(match["column"]), match["code"]))
    return findings


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Every Python fixture, plus the Latin-1 script, outside the repository
    (so no pyproject.toml of ours configures either tool)."""
    target = tmp_path / "tree"
    for source in FIXTURES.rglob("*.py"):
        destination = target / source.relative_to(FIXTURES)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    (target / "latin_1.py").write_bytes(LATIN_1.encode("latin-1"))
    return target


def test_entry_point_registers_the_checker() -> None:
    registered = {entry.name: entry.value for entry in entry_points(group="flake8.extension")}
    assert registered.get("GA") == "gacclint.flake8_plugin:GacclintChecker", (
        "the flake8 entry point is missing: reinstall the package (pip install -e .)")


def test_flake8_reports_what_gacclint_check_reports(tree: Path) -> None:
    flake8 = subprocess.run([sys.executable, "-m", "flake8", "--isolated", "--select", "GA", "."],
                            cwd=tree, capture_output=True, text=True)
    gacclint = subprocess.run([sys.executable, "-m", "gacclint", "check", "--no-cache", "--output-format", "concise",
                               "."], cwd=tree, capture_output=True, text=True)
    assert flake8.returncode == 1, flake8.stdout + flake8.stderr
    assert gacclint.returncode == 1, gacclint.stdout + gacclint.stderr
    reported, expected = _parsed(flake8.stdout, tree), _parsed(gacclint.stdout, tree)
    assert len({code for _, _, _, code in expected}) >= 10  # the fixtures reach most rules
    assert ("latin_1.py", 5, 25, "GA201") in expected
    assert reported == expected


def test_checker_yields_rows_and_zero_based_columns(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(BUGGY)
    assert _checker_findings(script) == [(5, 8, "GA201"), (6, 11, "GA202")]
    first = next(iter(GacclintChecker(None, BUGGY.splitlines(keepends=True)).run()))
    assert first[2].startswith("GA201 `loss` is backpropagated on every micro-batch but never divided by")
    assert first[3] is GacclintChecker


def test_checker_reads_the_declared_encoding(tmp_path: Path) -> None:
    script = tmp_path / "latin_1.py"
    script.write_bytes(LATIN_1.encode("latin-1"))
    assert _checker_findings(script) == [(5, 24, "GA201"), (6, 11, "GA202")]


def test_checker_is_silent_on_a_clean_file() -> None:
    clean = ["for x, y in loader:\n", "    optimizer.zero_grad()\n", "    loss_fn(model(x), y).backward()\n",
             "    optimizer.step()\n"]
    assert list(GacclintChecker(None, clean).run()) == []


def test_checker_reports_a_file_it_cannot_analyse() -> None:
    # Over the size gacclint analyses in one file (generated code): reported,
    # not passed silently, and flake8 goes on with the other files.
    lines = ["loss.backward()\n"] + [f"value_{index} = {index}\n" for index in range(80_000)]
    findings = list(GacclintChecker(None, lines).run())
    assert [(row, column) for row, column, _, _ in findings] == [(1, 0)]
    assert findings[0][2].startswith("GA001 gacclint could not analyse this file: ")
    assert "MB" in findings[0][2]
