"""Every output format, from hand-built results (no linting): exact text for
the human and GitHub formats, shape and round-trips for the JSON ones, stable
fingerprints, and SARIF validated against the official 2.1.0 schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
import sarif_pydantic

from gacclint import __version__
from gacclint.diagnostics import CODES, Diagnostic, Edit, FileResult, FixInfo, rule_url
from gacclint.formats import FORMATS, render, statistics

SARIF_SCHEMA = Path(__file__).parent / "formats" / "sarif-schema-2.1.0.json"

SAFE_FIX = FixInfo("safe", "Insert `optimizer.zero_grad()` after the step",
                   (Edit("        optimizer.zero_grad()\n", 13, 1, 13, 1),))
UNSAFE_FIX = FixInfo("unsafe", "Add an end-of-data clause",
                     (Edit("    if (i + 1) % k == 0 or (i + 1) == len(loader):\n", 20, 1, 21, 1),))


def diagnostic(code: str = "GA101", message: str = "the loop steps but never clears gradients", row: int = 12,
               column: int = 9, end_row: int = 12, end_column: int = 25, fix: FixInfo | None = None,
               cell: int | None = None, source_line: str = "        optimizer.step()") -> Diagnostic:
    return Diagnostic(code, CODES[code], message, row, column, end_row, end_column, fix, cell, source_line)


def sample_results() -> list[FileResult]:
    """A .py file with a safe and an unsafe fix, and a notebook finding with no fix."""
    return [
        FileResult(Path("src/train.py"), [
            diagnostic(fix=SAFE_FIX),
            diagnostic("GA202", "no end-of-data clause: the last `len % k` micro-batches are never stepped",
                       20, 5, 21, 30, UNSAFE_FIX, source_line="    if (i + 1) % k == 0:"),
        ]),
        FileResult(Path("notebooks/run.ipynb"), [
            diagnostic("GA201", "accumulated loss never divided by `k`", 3, 5, 3, 20, cell=2,
                       source_line="    loss.backward()"),
        ]),
    ]


# -- concise ------------------------------------------------------------------------

def test_concise_is_one_line_per_finding_then_the_summary():
    assert render(sample_results(), "concise") == (
        "src/train.py:12:9: GA101 the loop steps but never clears gradients\n"
        "src/train.py:20:5: GA202 no end-of-data clause: the last `len % k` micro-batches are never stepped\n"
        "notebooks/run.ipynb:cell 2:3:5: GA201 accumulated loss never divided by `k`\n"
        "Found 3 problems (1 fixable).\n"
        "1 hidden fix can be enabled with the `--unsafe-fixes` option.\n"
    )


def test_summary_counts_unsafe_fixes_only_when_enabled():
    assert render(sample_results(), "concise", unsafe_fixes=True).splitlines()[-1] == "Found 3 problems (2 fixable)."
    two_hidden = [FileResult(Path("a.py"), [diagnostic(fix=UNSAFE_FIX), diagnostic(fix=UNSAFE_FIX, row=40)])]
    assert render(two_hidden, "concise").splitlines()[-2:] == [
        "Found 2 problems (0 fixable).", "2 hidden fixes can be enabled with the `--unsafe-fixes` option."]
    assert render([FileResult(Path("a.py"), [diagnostic()])], "concise").splitlines()[-1] == \
        "Found 1 problem (0 fixable)."


@pytest.mark.parametrize("output_format", ["concise", "full"])
def test_no_findings_pass(output_format):
    assert render([], output_format) == "All checks passed!\n"
    assert render([FileResult(Path("clean.py"))], output_format) == "All checks passed!\n"


def test_show_fixes_lists_each_fixed_file_before_the_summary():
    results = [FileResult(Path("a.py"), fixed=2), FileResult(Path("b.py")), FileResult(Path("c.py"), fixed=1),
               FileResult(Path("d.py"), [diagnostic()])]
    assert render(results, "concise", show_fixes=True) == (
        "d.py:12:9: GA101 the loop steps but never clears gradients\n"
        "Fixed 2 problems in a.py\n"
        "Fixed 1 problem in c.py\n"
        "Found 1 problem (0 fixable).\n"
    )
    assert render(results[:3], "full", show_fixes=True) == (
        "Fixed 2 problems in a.py\nFixed 1 problem in c.py\nAll checks passed!\n")
    assert render(results[:3], "concise") == "All checks passed!\n"


# -- full ---------------------------------------------------------------------------

def test_full_shows_the_line_with_carets_and_the_fix():
    assert render(sample_results(), "full") == (
        "src/train.py:12:9: GA101 the loop steps but never clears gradients\n"
        "   |\n"
        "12 |         optimizer.step()\n"
        "   |         ^^^^^^^^^^^^^^^^\n"
        "   |\n"
        "   = help: Insert `optimizer.zero_grad()` after the step\n"
        "\n"
        "src/train.py:20:5: GA202 no end-of-data clause: the last `len % k` micro-batches are never stepped\n"
        "   |\n"
        "20 |     if (i + 1) % k == 0:\n"
        "   |     ^^^^^^^^^^^^^^^^^^^^\n"
        "   |\n"
        "   = help: Add an end-of-data clause (unsafe fix: use --unsafe-fixes)\n"
        "\n"
        "notebooks/run.ipynb:cell 2:3:5: GA201 accumulated loss never divided by `k`\n"
        "  |\n"
        "3 |     loss.backward()\n"
        "  |     ^^^^^^^^^^^^^^^\n"
        "  |\n"
        "\n"
        "Found 3 problems (1 fixable).\n"
        "1 hidden fix can be enabled with the `--unsafe-fixes` option.\n"
    )


def test_full_marks_an_enabled_unsafe_fix():
    results = [FileResult(Path("a.py"), [diagnostic(fix=UNSAFE_FIX)])]
    assert "   = help: Add an end-of-data clause (unsafe fix)\n" in render(results, "full", unsafe_fixes=True)


def snippet(**fields) -> list[str]:
    """The source and caret lines `full` prints for one finding."""
    text = render([FileResult(Path("a.py"), [diagnostic(**fields)])], "full")
    return text.splitlines()[2:4]


def test_carets_clip_a_multiline_span_to_its_first_line():
    assert snippet(row=5, column=5, end_row=9, end_column=2, source_line="    for x in loader:") == [
        "5 |     for x in loader:",
        "  |     ^^^^^^^^^^^^^^^^"]


def test_at_least_one_caret_even_for_an_empty_span_or_past_the_line_end():
    assert snippet(row=5, column=3, end_row=5, end_column=3, source_line="x = 1")[1] == "  |   ^"
    assert snippet(row=5, column=9, end_row=5, end_column=12, source_line="x = 1")[1] == "  |      ^"


def test_tabs_are_expanded_and_carets_follow_them():
    assert snippet(row=5, column=2, end_row=5, end_column=6, source_line="\tstep()") == [
        "5 |     step()",
        "  |     ^^^^"]


def test_control_characters_are_shown_not_obeyed():
    """A form feed is a character of the line (only \\r\\n, \\r and \\n end lines), shown as a symbol;
    so is an escape character, which would otherwise reach the terminal."""
    assert snippet(row=5, column=1, end_row=5, end_column=6, source_line="x = 1  # a\fb\x1b[31m") == [
        "5 | x = 1  # a\u240cb\u241b[31m",
        "  | ^^^^^"]


def test_wide_characters_take_two_columns():
    assert snippet(row=5, column=5, end_row=5, end_column=7, source_line="    损失 = f(x)") == [
        "5 |     损失 = f(x)",
        "  |     ^^^^"]


def test_no_snippet_without_the_source_line():
    text = render([FileResult(Path("a.py"), [diagnostic(source_line="", fix=SAFE_FIX)])], "full")
    assert text.splitlines()[:3] == ["a.py:12:9: GA101 the loop steps but never clears gradients",
                                     "= help: Insert `optimizer.zero_grad()` after the step", ""]


ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.parametrize("output_format", ["full", "concise"])
def test_color_only_adds_ansi_styles(output_format):
    colored = render(sample_results(), output_format, color=True)
    assert "\x1b[1;31mGA101\x1b[0m" in colored
    assert ANSI.sub("", colored) == render(sample_results(), output_format)


@pytest.mark.parametrize("output_format", ["json", "json-lines", "github", "gitlab", "sarif"])
def test_machine_formats_are_never_colored(output_format):
    assert render(sample_results(), output_format, color=True) == render(sample_results(), output_format)


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown output format 'xml'"):
        render([], "xml")
    assert FORMATS == ("full", "concise", "json", "json-lines", "github", "gitlab", "sarif")


# -- json and json-lines --------------------------------------------------------------

def test_json_is_ruffs_shape():
    items = json.loads(render(sample_results(), "json"))
    assert [sorted(item) for item in items] == [["cell", "code", "end_location", "filename", "fix", "location",
                                                 "message", "name", "noqa_row", "url"]] * 3
    first, second, notebook = items
    assert first == {
        "cell": None,
        "code": "GA101",
        "end_location": {"row": 12, "column": 25},
        "filename": str(Path("src/train.py").resolve()),
        "fix": {"applicability": "safe", "message": "Insert `optimizer.zero_grad()` after the step",
                "edits": [{"content": "        optimizer.zero_grad()\n", "location": {"row": 13, "column": 1},
                           "end_location": {"row": 13, "column": 1}}]},
        "location": {"row": 12, "column": 9},
        "message": "the loop steps but never clears gradients",
        "name": "missing-zero-grad",
        "noqa_row": 12,
        "url": rule_url("GA101"),
    }
    assert second["fix"]["applicability"] == "unsafe"
    assert (notebook["cell"], notebook["location"], notebook["fix"]) == (2, {"row": 3, "column": 5}, None)
    assert Path(notebook["filename"]).is_absolute()


def test_json_lines_are_the_json_objects_one_per_line():
    lines = render(sample_results(), "json-lines").splitlines()
    objects = json.loads(render(sample_results(), "json"))
    assert lines == [json.dumps(item, separators=(",", ":")) for item in objects]


def test_empty_machine_outputs():
    assert render([], "json") == "[]\n"
    assert render([], "json-lines") == ""
    assert render([], "github") == ""
    assert render([], "gitlab") == "[]\n"


# -- github ---------------------------------------------------------------------------

def test_github_workflow_commands():
    assert render(sample_results(), "github") == (
        "::error title=gacclint (GA101),file=src/train.py,line=12,col=9,endLine=12,endColumn=25"
        "::GA101 the loop steps but never clears gradients\n"
        "::error title=gacclint (GA202),file=src/train.py,line=20,col=5,endLine=21,endColumn=30"
        "::GA202 no end-of-data clause: the last `len %25 k` micro-batches are never stepped\n"
        "::error title=gacclint (GA201),file=notebooks/run.ipynb"
        "::cell 2:3:5: GA201 accumulated loss never divided by `k`\n"
    )


def test_github_escapes_data_and_properties():
    odd = FileResult(Path("dir,1/a:b%c.py"), [diagnostic(message="100% wrong:\r\nsee, here")])
    assert render([odd], "github") == (
        "::error title=gacclint (GA101),file=dir%2C1/a%3Ab%25c.py,line=12,col=9,endLine=12,endColumn=25"
        "::GA101 100%25 wrong:%0D%0Asee, here\n"
    )


# -- gitlab ---------------------------------------------------------------------------

def gitlab_issues(results: list[FileResult]) -> list[dict]:
    return json.loads(render(results, "gitlab"))


def test_gitlab_code_quality_issues(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absolute = FileResult(tmp_path / "src" / "train.py", [diagnostic()])
    issues = gitlab_issues([*sample_results(), absolute])
    assert [sorted(issue) for issue in issues] == [["check_name", "description", "fingerprint", "location",
                                                    "severity"]] * 4
    assert issues[0]["description"] == "GA101 the loop steps but never clears gradients"
    assert issues[0]["check_name"] == "GA101"
    assert issues[0]["severity"] == "major"
    assert issues[0]["location"] == {"path": "src/train.py", "lines": {"begin": 12, "end": 12}}
    assert issues[1]["location"] == {"path": "src/train.py", "lines": {"begin": 20, "end": 21}}
    # A notebook's rows are lines of a cell, not of the file: the cell goes in the description.
    assert issues[2]["description"] == "cell 2:3:5: GA201 accumulated loss never divided by `k`"
    assert issues[2]["location"] == {"path": "notebooks/run.ipynb", "lines": {"begin": 1, "end": 1}}
    # An absolute path under the current directory is reported relative to it, like the same path given relative.
    assert issues[3]["location"]["path"] == "src/train.py"
    assert issues[3]["fingerprint"] == issues[0]["fingerprint"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", issue["fingerprint"]) for issue in issues)


def test_gitlab_path_outside_the_current_directory_stays_absolute(tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    issues = gitlab_issues([FileResult(Path("../elsewhere/a.py"), [diagnostic()])])
    assert issues[0]["location"]["path"] == (tmp_path / "elsewhere" / "a.py").as_posix()


def fingerprint(*diagnostics: Diagnostic, path: str = "a.py", index: int = 0) -> str:
    return gitlab_issues([FileResult(Path(path), list(diagnostics))])[index]["fingerprint"]


def test_gitlab_fingerprint_survives_edits_above_and_reindentation():
    here = diagnostic()
    assert fingerprint(replace(here, row=here.row + 10, end_row=here.end_row + 10)) == fingerprint(here)
    assert fingerprint(replace(here, column=5, end_column=21, source_line="    optimizer.step()")) == fingerprint(here)


def test_gitlab_fingerprint_tells_findings_apart():
    here = diagnostic()
    twin = replace(here, row=30, end_row=30)
    assert fingerprint(here, twin, index=0) != fingerprint(here, twin, index=1)
    # The first of two identical findings keeps the fingerprint it had alone.
    assert fingerprint(here, twin, index=0) == fingerprint(here)
    assert fingerprint(here, path="b.py") != fingerprint(here)
    assert fingerprint(replace(here, code="GA103", name=CODES["GA103"])) != fingerprint(here)
    assert fingerprint(replace(here, source_line="        scaler.step(optimizer)")) != fingerprint(here)


# -- sarif ----------------------------------------------------------------------------

def sarif_log(results: list[FileResult]) -> dict:
    """The SARIF log, checked against the official schema and loaded by an independent object model."""
    log = json.loads(render(results, "sarif"))
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft4Validator.check_schema(schema)
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(log), key=lambda error: list(error.absolute_path))
    assert not errors, "\n".join(f"{list(error.absolute_path)}: {error.message}" for error in errors)
    sarif_pydantic.Sarif.model_validate(log)
    return log


def test_sarif_tool_describes_every_code_for_code_scanning():
    log = sarif_log([])
    assert log["version"] == "2.1.0"
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    (run,) = log["runs"]
    assert run["results"] == []
    driver = run["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("gacclint", __version__)
    assert [rule["id"] for rule in driver["rules"]] == sorted(CODES)
    for rule in driver["rules"]:
        assert rule["name"] == CODES[rule["id"]]
        assert rule["helpUri"] == rule_url(rule["id"])
        assert rule["defaultConfiguration"]["level"] in ("error", "warning")
        # What GitHub code scanning shows for a rule.
        for field in ("shortDescription", "fullDescription"):
            assert rule[field]["text"].strip()
        assert rule["help"]["text"].strip() and rule["help"]["markdown"].strip()
    ga101 = driver["rules"][sorted(CODES).index("GA101")]
    assert ga101["shortDescription"]["text"].startswith("Checks for training loops that step an optimizer")
    assert "## Why is this bad?" in ga101["help"]["markdown"]


def test_sarif_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = sarif_log(sample_results())["runs"][0]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.as_uri() + "/"
    rules = run["tool"]["driver"]["rules"]
    first, second, notebook = run["results"]
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] == "error"
        assert re.fullmatch(r"[0-9a-f]{16}:1", result["partialFingerprints"]["primaryLocationLineHash"])
    assert first["message"] == {"text": "the loop steps but never clears gradients"}
    assert first["locations"] == [{"physicalLocation": {
        "artifactLocation": {"uri": "src/train.py", "uriBaseId": "%SRCROOT%"},
        "region": {"startLine": 12, "startColumn": 9, "endLine": 12, "endColumn": 25}}}]
    assert first["fixes"] == [{
        "description": {"text": "Insert `optimizer.zero_grad()` after the step"},
        "artifactChanges": [{"artifactLocation": {"uri": "src/train.py", "uriBaseId": "%SRCROOT%"},
                             "replacements": [{"deletedRegion": {"startLine": 13, "startColumn": 1, "endLine": 13,
                                                                 "endColumn": 1},
                                               "insertedContent": {"text": "        optimizer.zero_grad()\n"}}]}],
        "properties": {"applicability": "safe"}}]
    assert second["fixes"][0]["properties"] == {"applicability": "unsafe"}
    # A notebook finding has its cell in the message; its cell edits cannot be expressed. This notebook is not
    # on disk, so its line in the .ipynb is unknown: the first (tests/test_cli_output.py reads a real one).
    assert notebook["message"]["text"] == "cell 2:3:5: accumulated loss never divided by `k`"
    assert notebook["locations"][0]["physicalLocation"]["region"] == {"startLine": 1, "endLine": 1}
    assert "fixes" not in notebook


def test_sarif_fingerprints_match_the_gitlab_rules():
    here = diagnostic()
    moved = replace(here, row=22, end_row=22)

    def line_hashes(*diagnostics: Diagnostic) -> list[str]:
        results = sarif_log([FileResult(Path("a.py"), list(diagnostics))])["runs"][0]["results"]
        return [result["partialFingerprints"]["primaryLocationLineHash"] for result in results]

    (alone,) = line_hashes(here)
    assert line_hashes(moved) == [alone]
    first, second = line_hashes(here, moved)
    line_hash, occurrence = alone.split(":")
    assert (first, second) == (alone, f"{line_hash}:2") and occurrence == "1"


def test_sarif_paths_deletions_and_unreadable_files(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    deletion = FixInfo("safe", "Remove the clear", (Edit("", 7, 1, 8, 1),))
    results = [
        FileResult(Path("my dir/train.py"), [diagnostic(fix=deletion)]),
        FileResult(tmp_path / "outside.py", [diagnostic()]),
        FileResult(Path("broken.py"), error="cannot read: permission denied"),
    ]
    run = sarif_log(results)["runs"][0]
    spaced, outside = run["results"]
    assert spaced["locations"][0]["physicalLocation"]["artifactLocation"] == {
        "uri": "my%20dir/train.py", "uriBaseId": "%SRCROOT%"}
    assert spaced["fixes"][0]["artifactChanges"][0]["replacements"] == [
        {"deletedRegion": {"startLine": 7, "startColumn": 1, "endLine": 8, "endColumn": 1}}]
    assert outside["locations"][0]["physicalLocation"]["artifactLocation"] == {
        "uri": (tmp_path / "outside.py").as_uri()}
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is True
    assert invocation["toolExecutionNotifications"] == [{
        "level": "error", "message": {"text": "cannot read: permission denied"},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": "broken.py", "uriBaseId": "%SRCROOT%"}}}]}]


# -- statistics -----------------------------------------------------------------------

def test_statistics_table():
    results = [
        FileResult(Path("a.py"), [diagnostic("GA202", fix=UNSAFE_FIX), diagnostic(fix=SAFE_FIX),
                                  diagnostic("GA202", row=40, end_row=40, fix=UNSAFE_FIX)]),
        FileResult(Path("b.py"), [diagnostic("GA202", fix=UNSAFE_FIX), diagnostic("GA303")] +
                   [diagnostic("GA303", row=row, end_row=row) for row in range(20, 29)]),
    ]
    assert statistics(results) == (
        "10\tGA303\t[ ] graph-kept-across-iterations\n"
        " 3\tGA202\t[ ] dropped-final-window\n"
        " 1\tGA101\t[*] missing-zero-grad\n"
    )
    assert statistics(results, unsafe_fixes=True).splitlines()[1] == " 3\tGA202\t[*] dropped-final-window"
    assert statistics([FileResult(Path("a.py"), [diagnostic("GA303")])]) == "1\tGA303\tgraph-kept-across-iterations\n"
    assert statistics([FileResult(Path("a.py"))]) == ""


# -- imports --------------------------------------------------------------------------

def test_printing_a_cached_run_does_not_import_the_analysis():
    """A warm run prints from plain data: rendering must not pull in libcst (or torch)."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "import gacclint.formats as formats\n"
        "from gacclint.diagnostics import Diagnostic, FileResult\n"
        "results = [FileResult(Path('a.py'), [Diagnostic('GA101', 'missing-zero-grad', 'm', 1, 1, 1, 2,"
        " source_line='x')])]\n"
        "for output_format in ('full', 'concise', 'json', 'json-lines', 'github', 'gitlab'):\n"
        "    formats.render(results, output_format)\n"
        "formats.statistics(results)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('libcst', 'torch')))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"


@pytest.mark.parametrize("layout", ["lines", "one string", "compact"])
def test_notebook_rows_map_to_the_lines_of_the_ipynb(tmp_path: Path, layout: str) -> None:
    """github, gitlab and sarif point at the .ipynb line holding the cell's row, whatever the JSON layout."""
    first = "import torch\n"
    second = "for x in data:\n    loss = model(x)\n    loss.backward()\n"
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# notes\n", "more\n"]},
             {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
              "source": first if layout == "one string" else [first]},
             {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
              "source": second if layout == "one string" else second.splitlines(keepends=True)}]
    document = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    text = json.dumps(document) if layout == "compact" else json.dumps(document, indent=1)
    (tmp_path / "nb.ipynb").write_text(text)
    lines = text.splitlines()
    # Cell 2, row 3 (`loss.backward()`): the line of the list item that begins that row, or of the one string.
    expected = next(number for number, line in enumerate(lines, start=1)
                    if "loss.backward()" in line and (layout != "one string" or "for x" in line))
    result = FileResult(tmp_path / "nb.ipynb", [diagnostic("GA101", row=3, column=5, end_row=3, end_column=20,
                                                            cell=2, source_line="    loss.backward()")])
    github = render([result], "github")
    assert f",line={expected},endLine={expected}::cell 2:3:5: GA101 " in github
    [issue] = json.loads(render([result], "gitlab"))
    assert issue["location"]["lines"] == {"begin": expected, "end": expected}
    [sarif] = json.loads(render([result], "sarif"))["runs"][0]["results"]
    assert sarif["locations"][0]["physicalLocation"]["region"] == {"startLine": expected, "endLine": expected}
    if layout == "lines":
        assert lines[expected - 1].strip() == '"    loss.backward()\\n"'
