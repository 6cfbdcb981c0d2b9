"""The command line's newer features end to end, as a user sees them: notebooks,
configuration, `# noqa`, exit codes and flags, output formats, the result
cache, file discovery, parallel analysis, and what a warm run imports.

Module-level behaviour is pinned in test_formats, test_config, test_noqa and
test_notebook; here every assertion is about stdout, stderr, exit codes and
files on disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gacclint.cli import main
from gacclint.runner import usable_cores

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fixtures" / "seeds"
NOTEBOOKS = ROOT / "fixtures" / "notebooks"
NOTEBOOK = NOTEBOOKS / "train_accumulate.ipynb"
FIXED_NOTEBOOK = NOTEBOOKS / "train_accumulate.fixed.ipynb"

# GA101 at 4:5 (the step); its fix appends `optimizer.zero_grad()`.
NO_CLEAR = """\
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
"""
NO_CLEAR_FIXED = NO_CLEAR + "    optimizer.zero_grad()\n"
GA101 = ("GA101 `optimizer` is stepped but gradients are never cleared in this loop: every step applies the sum of "
         "all gradients so far")
# GA202 at 4:8, with a safe fix (the loop iterates `loader`, so `len(loader)` exists).
DROPPED_TAIL = """\
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
"""
GA202 = ("GA202 `(i + 1) % k == 0` has no end-of-data clause: the last `len(loader) % k` micro-batches of each pass "
         "are never stepped")
# The same over `data`: `len(data)` may not exist, so the fix is unsafe.
UNSAFE_ONLY = DROPPED_TAIL.replace("loader", "data")
CLEAN = """\
for x, y in loader:
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    optimizer.step()
"""
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def findings(*args: object, base: Path | None = None) -> set[tuple[str, str]]:
    """(path relative to `base`, default the current directory; code) of every
    finding `check --output-format json` reports."""
    code, out, err = run("check", "--output-format", "json", *args)
    assert code in (0, 1), err
    return {(_rel(Path(item["filename"]), base), item["code"]) for item in json.loads(out)}


def _rel(path: Path, base: Path | None = None) -> str:
    return Path(os.path.relpath(path.resolve(), (base or Path.cwd()).resolve())).as_posix()


def cell_lines(notebook: Path) -> list[list[str]]:
    """The lines of each code cell, read straight from the notebook's JSON."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return ["".join(cell["source"]).splitlines() for cell in cells if cell["cell_type"] == "code"]


# -- 1. notebooks ------------------------------------------------------------------------


def test_notebook_findings_are_located_by_code_cell_and_row() -> None:
    code, out, _ = run("check", "--output-format", "concise", NOTEBOOK)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == (
        f"{NOTEBOOK}:cell 4:4:9: GA201 `loss` is backpropagated on every micro-batch but never divided by "
        "`accumulation_steps`: each step applies `accumulation_steps` times the mean gradient")
    # The message may go on with the rule's evidence (the schedule for a sample k).
    assert lines[1].startswith(
        f"{NOTEBOOK}:cell 4:5:12: GA202 `(i + 1) % accumulation_steps == 0` has no end-of-data clause: the last "
        "`len(loader) % accumulation_steps` micro-batches of each pass are never stepped")
    assert lines[2:] == ["Found 2 problems (2 fixable)."]
    # The positions are those of the notebook's 4th code cell (markdown cells not counted).
    cell = cell_lines(NOTEBOOK)[3]
    assert cell[3].index("loss.backward()") + 1 == 9
    assert cell[4].index("(i + 1) % accumulation_steps == 0") + 1 == 12


def test_notebook_json_names_the_cell() -> None:
    code, out, _ = run("check", "--output-format", "json", NOTEBOOK)
    assert code == 1
    found = [(item["cell"], item["code"], item["location"]["row"], item["location"]["column"])
             for item in json.loads(out)]
    assert found == [(4, "GA201", 4, 9), (4, "GA202", 5, 12)]
    # Fix edits are in rows of the cell too: the GA202 edit replaces the cell's 5th line.
    ga202 = json.loads(out)[1]
    [edit] = ga202["fix"]["edits"]
    assert (edit["location"]["row"], edit["end_location"]["row"]) == (5, 6)
    assert edit["content"].startswith(cell_lines(NOTEBOOK)[3][4].rstrip(":"))


def test_a_notebook_cell_that_does_not_parse_hides_no_other_cell(tmp_path: Path) -> None:
    # A pasted sketch (`...` where a block should be) is reported where it is; the training loop of
    # another cell is still checked, and fixed without touching the sketch.
    document = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    sketch = {"cell_type": "code", "execution_count": None, "id": "sketch", "metadata": {}, "outputs": [],
              "source": ["with torch.autocast('cuda'):\n", "...\n", "    loss = model(x)"]}
    document["cells"].insert(1, sketch)
    path = tmp_path / "with_sketch.ipynb"
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    code, out, _ = run("check", "--output-format", "json", path)
    assert code == 1
    found = [(item["cell"], item["code"], item["location"]["row"]) for item in json.loads(out)]
    assert found[0][:2] == (1, "GA001")  # the first code cell (markdown cells are not counted)
    assert [(cell, rule) for cell, rule, _ in found[1:]] == [(5, "GA201"), (5, "GA202")]
    run("fix", "--unsafe-fixes", path)
    fixed = json.loads(path.read_text(encoding="utf-8"))
    assert fixed["cells"][1]["source"] == sketch["source"]
    assert [item["code"] for item in json.loads(run("check", "--output-format", "json", path)[1])] == ["GA001"]


def test_notebook_fix_writes_exactly_the_fixed_notebook(tmp_path: Path) -> None:
    path = tmp_path / "train_accumulate.ipynb"
    shutil.copyfile(NOTEBOOK, path)
    code, out, _ = run("fix", "--unsafe-fixes", path)
    assert code == 0
    assert out.splitlines() == ["Fixed 3 problems in 1 file.", "All checks passed!"]
    assert path.read_bytes() == FIXED_NOTEBOOK.read_bytes()
    assert run("check", path)[0] == 0


def test_findings_left_after_a_notebook_fix_show_the_fixed_cells(tmp_path: Path) -> None:
    # The fix grows the loop's cell (a window line, a wrapped test); the clip it cannot fix is
    # then reported at its row in the fixed cell, under that row's text, and a later cell's
    # finding keeps its own cell.
    loop = ("def train(loader, model, optimizer, scaler, k):\n"
            "    for step, (x, y) in enumerate(loader):\n"
            "        loss = loss_fn(model(x), y) / k\n"
            "        scaler.scale(loss).backward()\n"
            "        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "        if (step + 1) % k == 0:\n"
            "            scaler.step(optimizer)\n"
            "            scaler.update()\n"
            "            optimizer.zero_grad()\n")
    later = ("for i, (x, y) in enumerate(loader):\n"
             "    loss_fn(model(x), y).backward()\n"
             "    optimizer.step()\n"
             "    if (i + 1) % k == 0:\n"
             "        optimizer.zero_grad()\n")
    document = {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                           "source": source} for source in ("import torch\nscaler = torch.cuda.amp.GradScaler()", loop,
                                                            later)],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    code, out, _ = run("fix", "--select", "GA101,GA202,GA203,GA403", path)
    fixed = json.loads(path.read_text(encoding="utf-8"))["cells"][1]["source"]
    clip_row = next(number for number, line in enumerate(fixed.splitlines(), 1) if "clip_grad_norm_" in line)
    assert clip_row > 5  # the fix added rows above it
    assert f"nb.ipynb:cell 2:{clip_row}:16: GA403" in out
    assert f"{clip_row} |         norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)" in out
    assert "nb.ipynb:cell 3:3:5: GA101" in out  # no fix: where it is, as before
    assert "3 |     optimizer.step()" in out


def test_notebook_fix_diff_shows_the_cell_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    shutil.copyfile(NOTEBOOK, path)
    code, out, err = run("fix", "--diff", path)
    assert code == 1
    assert path.read_bytes() == NOTEBOOK.read_bytes()
    assert "Would fix 3 problems in 1 file." in err
    lines = out.splitlines()
    # A diff of the cell as the user sees it, in rows of the cell: never the
    # program gacclint analyses (separator and placeholder lines).
    before, after = (len(cell_lines(notebook)[3]) for notebook in (NOTEBOOK, FIXED_NOTEBOOK))
    assert lines[:3] == [f"--- a/{path}:cell 4", f"+++ b/{path}:cell 4", f"@@ -1,{before} +1,{after} @@"]
    assert "-        if (i + 1) % accumulation_steps == 0:" in lines
    assert "+        if (i + 1) % accumulation_steps == 0 or (i + 1) == len(loader):" in lines
    assert "gacclint-notebook" not in out and "pass  #" not in out


def test_notebook_diff_near_a_cell_boundary_shows_no_separator(tmp_path: Path) -> None:
    """A fix within three lines of a cell's start: the context stops at the cell's edge."""
    notebook = {"cells": [
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["%matplotlib inline\n", "k = 4"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": NO_CLEAR.rstrip("\n").splitlines(keepends=True)},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(notebook, indent=1) + "\n")
    code, out, _ = run("fix", "--diff", path)
    assert code == 1
    assert out == (f"--- a/{path}:cell 2\n+++ b/{path}:cell 2\n@@ -1,4 +1,5 @@\n"
                   " for x, y in loader:\n     loss = loss_fn(model(x), y)\n     loss.backward()\n"
                   "-    optimizer.step()\n\\ No newline at end of file\n"
                   "+    optimizer.step()\n+    optimizer.zero_grad()\n\\ No newline at end of file\n")


def test_a_folder_walk_finds_notebooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "notebooks").mkdir()
    shutil.copyfile(NOTEBOOK, tmp_path / "notebooks" / "train.ipynb")
    shutil.copyfile(NOTEBOOKS / "clean.ipynb", tmp_path / "notebooks" / "clean.ipynb")
    (tmp_path / "train.py").write_text(NO_CLEAR)
    monkeypatch.chdir(tmp_path)
    assert findings(".") == {("notebooks/train.ipynb", "GA201"), ("notebooks/train.ipynb", "GA202"),
                             ("train.py", "GA101")}


# -- 2. configuration --------------------------------------------------------------------

PROJECT = {
    "a.py": NO_CLEAR,
    "b.py": DROPPED_TAIL,
    "tests/t.py": NO_CLEAR,
    "gen/g.py": NO_CLEAR,
    "legacy.py": NO_CLEAR,
    ".venv/v.py": NO_CLEAR,  # excluded by default
}
EVERYTHING = {("a.py", "GA101"), ("b.py", "GA202"), ("tests/t.py", "GA101"), ("gen/g.py", "GA101"),
              ("legacy.py", "GA101")}


@pytest.mark.parametrize(("table", "expected"), [
    ("", EVERYTHING),
    ('select = ["GA2"]', {("b.py", "GA202")}),
    ('ignore = ["GA101"]', {("b.py", "GA202")}),
    ('select = ["GA1"]', EVERYTHING - {("b.py", "GA202")}),
    ('select = ["GA1"]\nextend-select = ["GA202"]', EVERYTHING),
    ('per-file-ignores = { "tests/**" = ["GA101"] }', EVERYTHING - {("tests/t.py", "GA101")}),
    ('per-file-ignores = { "!tests/**" = ["GA1"] }', {("b.py", "GA202"), ("tests/t.py", "GA101")}),
    # `exclude` replaces the defaults: .venv is walked again.
    ('exclude = ["gen/"]', EVERYTHING - {("gen/g.py", "GA101")} | {(".venv/v.py", "GA101")}),
    ('extend-exclude = ["legacy.py", "gen/"]', EVERYTHING - {("legacy.py", "GA101"), ("gen/g.py", "GA101")}),
], ids=["empty", "select", "ignore", "select-prefix", "extend-select", "per-file-ignores", "per-file-ignores-negated",
        "exclude", "extend-exclude"])
def test_pyproject_settings_change_what_check_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str,
                                                      expected: set[tuple[str, str]]) -> None:
    write(tmp_path, {**PROJECT, "pyproject.toml": f"[tool.gacclint]\n{table}\n"})
    monkeypatch.chdir(tmp_path)
    assert findings(".") == expected
    # The same from a folder below the project: the settings are the project's, not the current directory's.
    monkeypatch.chdir(tmp_path / "tests")
    assert findings("..", base=tmp_path) == expected


def test_unsafe_fixes_setting_counts_and_applies_unsafe_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"u.py": UNSAFE_ONLY})
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("check", "--output-format", "concise", "u.py")
    assert out.splitlines()[-2:] == ["Found 1 problem (0 fixable).",
                                     "1 hidden fix can be enabled with the `--unsafe-fixes` option."]
    (tmp_path / "pyproject.toml").write_text("[tool.gacclint]\nunsafe-fixes = true\n")
    code, out, _ = run("check", "--output-format", "concise", "u.py")
    assert out.splitlines()[-1] == "Found 1 problem (1 fixable)."
    assert run("fix", "u.py")[0] == 0
    assert "or (i + 1) == len(data)" in (tmp_path / "u.py").read_text()


def test_unsafe_fixes_setting_of_a_project_below_the_current_directory(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"proj/pyproject.toml": "[tool.gacclint]\nunsafe-fixes = true\n", "proj/u.py": UNSAFE_ONLY})
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("check", "--output-format", "concise", "proj")
    assert out.splitlines()[-1] == "Found 1 problem (1 fixable)."  # as `fix proj` would fix it:
    assert run("fix", "proj")[0] == 0
    assert "or (i + 1) == len(data)" in (tmp_path / "proj" / "u.py").read_text()


def test_nearest_pyproject_with_a_gacclint_table_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {
        "pyproject.toml": '[tool.gacclint]\nselect = ["GA2"]\n',
        "top_101.py": NO_CLEAR, "top_202.py": DROPPED_TAIL,
        "inner/pyproject.toml": '[tool.gacclint]\nselect = ["GA1"]\n',
        "inner/in_101.py": NO_CLEAR, "inner/in_202.py": DROPPED_TAIL,
        # A pyproject.toml without [tool.gacclint] is passed over: the root's settings apply.
        "other/pyproject.toml": "[tool.black]\nline-length = 100\n",
        "other/ot_101.py": NO_CLEAR, "other/ot_202.py": DROPPED_TAIL,
    })
    monkeypatch.chdir(tmp_path)
    assert findings(".") == {("top_202.py", "GA202"), ("inner/in_101.py", "GA101"), ("other/ot_202.py", "GA202")}
    monkeypatch.chdir(tmp_path / "inner")
    assert findings(".") == {("in_101.py", "GA101")}
    # --config replaces discovery for every file.
    (tmp_path / "other.toml").write_text('select = ["GA101"]\nextend-exclude = ["other/"]\n')
    monkeypatch.chdir(tmp_path)
    assert findings("--config", "other.toml", ".") == {("top_101.py", "GA101"), ("inner/in_101.py", "GA101")}


@pytest.mark.parametrize(("name", "text", "message"), [
    ("pyproject.toml", '[tool.gacclint]\nselec = ["GA1"]\n',
     "unknown key 'selec' in [tool.gacclint] of pyproject.toml (did you mean 'select'?)"),
    ("pyproject.toml", '[tool.gacclint]\nignore = ["GA9"]\n',
     "unknown rule code or prefix 'GA9' in 'ignore' in [tool.gacclint] of pyproject.toml"),
    ("pyproject.toml", '[tool.gacclint\nselect = ["GA1"]\n',
     "pyproject.toml: invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 15)"),
    ("pyproject.toml", '[tool.gacclint]\nunsafe-fixes = "yes"\n',
     "'unsafe-fixes' in [tool.gacclint] of pyproject.toml must be true or false, not a string"),
    ("other.toml", 'extend-selct = ["GA002"]\n', "unknown key 'extend-selct' in other.toml (did you mean 'extend-select'?)"),
], ids=["unknown-key", "bad-code", "invalid-toml", "bad-type", "config-file"])
def test_a_bad_configuration_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                                     text: str, message: str) -> None:
    write(tmp_path, {"a.py": NO_CLEAR, name: text})
    monkeypatch.chdir(tmp_path)
    config = ["--config", name] if name != "pyproject.toml" else []
    for command in ("check", "fix"):
        code, out, err = run(command, *config, ".")
        assert (code, out, err) == (2, "", f"gacclint: error: {message}\n")
    assert (tmp_path / "a.py").read_text() == NO_CLEAR


def test_a_bad_configuration_met_on_the_way_to_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"good.py": CLEAN, "sub/pyproject.toml": "[tool.gacclint]\nselect = 1\n", "sub/a.py": NO_CLEAR})
    monkeypatch.chdir(tmp_path)
    code, out, err = run("check", ".")
    assert (code, out) == (2, "")
    assert err == "gacclint: error: 'select' in [tool.gacclint] of sub/pyproject.toml must be a list of strings, " \
                  "not an integer\n"


def test_an_unknown_code_on_the_command_line_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(NO_CLEAR)
    for option in ("--select", "--ignore", "--extend-select"):
        code, out, err = run("check", option, "GA999", tmp_path)
        assert (code, out) == (2, "")
        assert "unknown rule code or prefix: GA999" in err and "Traceback" not in err


# -- 3. noqa ---------------------------------------------------------------------------


@pytest.mark.parametrize(("comment", "reported"), [
    ("  # noqa: GA101", False),
    ("  # NOQA:GA202,GA101", False),
    ("  # noqa", False),
    ("  # noqa: GA202", True),
    ("  # noqa: E501", True),
])
def test_noqa_on_the_reported_line(tmp_path: Path, comment: str, reported: bool) -> None:
    path = tmp_path / "a.py"
    path.write_text(NO_CLEAR.replace("optimizer.step()", "optimizer.step()" + comment))
    code, out, _ = run("check", "--output-format", "concise", path)
    if reported:
        assert (code, out.splitlines()[0]) == (1, f"{path}:4:5: {GA101}")
    else:
        assert (code, out) == (0, "All checks passed!\n")


def test_unused_noqa_is_reported_when_selected(tmp_path: Path) -> None:
    path = tmp_path / "a.py"
    path.write_text(NO_CLEAR.replace("optimizer.step()", "optimizer.step()  # noqa: GA202"))
    assert run("check", "--output-format", "concise", "-q", path)[1] == f"{path}:4:5: {GA101}\n"
    code, out, _ = run("check", "--output-format", "concise", "-q", "--extend-select", "GA002", path)
    assert (code, out) == (1, f"{path}:4:5: {GA101}\n{path}:4:23: GA002 Unused `noqa` directive (unused: `GA202`)\n")


def test_add_noqa_writes_directives_once_and_then_check_passes(tmp_path: Path) -> None:
    write(tmp_path, {
        "a.py": NO_CLEAR,
        "b.py": DROPPED_TAIL,
        "c.py": NO_CLEAR.replace("optimizer.step()", "optimizer.step()  # noqa: E501"),
        "clean.py": CLEAN,
    })
    code, out, err = run("check", "--add-noqa", tmp_path)
    assert (code, out, err) == (0, "All checks passed!\n", "Added 3 noqa directives.\n")
    assert (tmp_path / "a.py").read_text() == NO_CLEAR.replace("optimizer.step()", "optimizer.step()  # noqa: GA101")
    assert (tmp_path / "b.py").read_text() == DROPPED_TAIL.replace("== 0:", "== 0:  # noqa: GA202")
    assert (tmp_path / "c.py").read_text() == NO_CLEAR.replace("optimizer.step()",
                                                                "optimizer.step()  # noqa: E501, GA101")
    assert (tmp_path / "clean.py").read_text() == CLEAN
    snapshot = {path: path.read_bytes() for path in tmp_path.iterdir()}
    code, out, err = run("check", "--add-noqa", tmp_path)
    assert (code, err) == (0, "Added 0 noqa directives.\n")
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == snapshot
    assert run("check", tmp_path)[:2] == (0, "All checks passed!\n")


def test_add_noqa_in_a_notebook_changes_only_those_lines(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    shutil.copyfile(NOTEBOOK, path)
    code, _, err = run("check", "--add-noqa", path)
    assert (code, err) == (0, "Added 2 noqa directives.\n")
    original = NOTEBOOK.read_text(encoding="utf-8")
    expected = original.replace('"        loss.backward()\\n"', '"        loss.backward()  # noqa: GA201\\n"').replace(
        '== 0:\\n"', '== 0:  # noqa: GA202\\n"')
    assert expected != original
    assert path.read_text(encoding="utf-8") == expected
    assert run("check", path)[:2] == (0, "All checks passed!\n")


def test_json_noqa_row_is_where_the_directive_goes(tmp_path: Path) -> None:
    path = tmp_path / "a.py"
    path.write_text(NO_CLEAR.replace("    optimizer.step()", "    optimizer \\\n        .step()"))
    [finding] = json.loads(run("check", "--output-format", "json", path)[1])
    run("check", "--add-noqa", path)
    noqa_rows = [row for row, line in enumerate(path.read_text().splitlines(), 1) if "# noqa: GA101" in line]
    assert noqa_rows == [5]
    assert (finding["location"]["row"], finding["noqa_row"]) == (4, 5)


def test_fix_leaves_a_suppressed_finding_alone(tmp_path: Path) -> None:
    suppressed = NO_CLEAR.replace("optimizer.step()", "optimizer.step()  # noqa: GA101")
    write(tmp_path, {"a.py": suppressed, "b.py": NO_CLEAR})
    code, out, _ = run("fix", tmp_path)
    assert code == 0
    assert out.splitlines()[0] == "Fixed 1 problem in 1 file."
    assert (tmp_path / "a.py").read_text() == suppressed
    assert (tmp_path / "b.py").read_text() == NO_CLEAR_FIXED


# -- 4. exit codes and flags ------------------------------------------------------------


def test_exit_zero_reports_but_exits_zero(tmp_path: Path) -> None:
    path = tmp_path / "a.py"
    path.write_text(NO_CLEAR)
    code, out, _ = run("check", "--exit-zero", "--output-format", "concise", path)
    assert (code, out) == (0, f"{path}:4:5: {GA101}\nFound 1 problem (1 fixable).\n")
    code, _, _ = run("fix", "--exit-zero", "--diff", path)
    assert code == 0 and path.read_text() == NO_CLEAR


def test_exit_non_zero_on_fix(tmp_path: Path) -> None:
    path = tmp_path / "a.py"
    path.write_text(NO_CLEAR)
    assert run("fix", "--exit-non-zero-on-fix", path)[:2] == (1, "Fixed 1 problem in 1 file.\nAll checks passed!\n")
    assert path.read_text() == NO_CLEAR_FIXED
    # Nothing left to fix: 0, flag or not.
    assert run("fix", "--exit-non-zero-on-fix", path)[:2] == (0, "All checks passed!\n")
    path.write_text(NO_CLEAR)
    assert run("fix", path)[0] == 0
    assert path.read_text() == NO_CLEAR_FIXED


def test_fix_diff_exit_codes(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": NO_CLEAR, "clean.py": CLEAN})
    binary = tmp_path / "binary.py"
    binary.write_bytes(b"\x00\xff\xfe loss.backward()\n")
    code, out, _ = run("fix", "--diff", tmp_path / "a.py")
    assert code == 1 and out.startswith(f"--- a/{tmp_path / 'a.py'}\n")
    assert run("fix", "--diff", tmp_path / "clean.py")[:2] == (0, "")
    # No diff, but a file that could not be read: an error.
    code, out, err = run("fix", "--diff", binary)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"gacclint: {binary}: binary content (NUL bytes)", "Would fix 0 problems in 0 files."]
    assert (tmp_path / "a.py").read_text() == NO_CLEAR


def test_fix_diff_of_a_file_without_a_final_newline_is_a_valid_patch(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": NO_CLEAR.rstrip("\n"), "b.py": NO_CLEAR})
    code, out, _ = run("fix", "--diff", tmp_path / "a.py", tmp_path / "b.py")
    assert code == 1
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    hunk = " for x, y in loader:\n     loss = loss_fn(model(x), y)\n     loss.backward()\n"
    assert out == (f"--- a/{a}\n+++ b/{a}\n@@ -1,4 +1,5 @@\n{hunk}"
                   "-    optimizer.step()\n\\ No newline at end of file\n"
                   "+    optimizer.step()\n+    optimizer.zero_grad()\n\\ No newline at end of file\n"
                   f"--- a/{b}\n+++ b/{b}\n@@ -2,3 +2,4 @@\n{hunk.split(chr(10), 1)[1]}     optimizer.step()\n"
                   "+    optimizer.zero_grad()\n")


def test_statistics_lines(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": NO_CLEAR, "b.py": NO_CLEAR, "c.py": DROPPED_TAIL, "u.py": UNSAFE_ONLY})
    code, out, _ = run("check", "--statistics", tmp_path)
    assert (code, out) == (1, "2\tGA101\t[*] missing-zero-grad\n2\tGA202\t[*] dropped-final-window\n")
    code, out, _ = run("check", "--statistics", tmp_path / "u.py")
    assert (code, out) == (1, "1\tGA202\tdropped-final-window\n")
    # With unsafe fixes on, the unsafe fix counts as fixable, as in the summary line.
    code, out, _ = run("check", "--statistics", "--unsafe-fixes", tmp_path / "u.py")
    assert (code, out) == (1, "1\tGA202\t[*] dropped-final-window\n")


def test_quiet_prints_findings_only(tmp_path: Path) -> None:
    path = tmp_path / "a.py"
    path.write_text(NO_CLEAR)
    code, out, _ = run("check", "-q", "--output-format", "concise", path)
    assert (code, out) == (1, f"{path}:4:5: {GA101}\n")
    code, out, _ = run("check", "--quiet", path)
    assert code == 1 and out.startswith(f"{path}:4:5: {GA101}\n") and "Found" not in out
    assert "= help: Insert `optimizer.zero_grad()` after the step" in out
    assert run("check", "-q", tmp_path / "nothing.py")[1] == ""  # unreadable: on stderr only
    (tmp_path / "clean.py").write_text(CLEAN)
    assert run("check", "-q", tmp_path / "clean.py")[:2] == (0, "")
    code, out, err = run("fix", "-q", path)
    assert (code, out, err) == (0, "", "")
    assert path.read_text() == NO_CLEAR_FIXED


@pytest.mark.parametrize("output_format", ["full", "concise"])
def test_color(tmp_path: Path, output_format: str) -> None:
    path = tmp_path / "a.py"
    path.write_text(NO_CLEAR)
    colored = run("check", "--color", "always", "--output-format", output_format, path)[1]
    assert "\x1b[1;31mGA101\x1b[0m" in colored
    plain = run("check", "--color", "never", "--output-format", output_format, path)[1]
    assert "\x1b" not in plain
    assert ANSI.sub("", colored) == plain
    assert run("check", "--output-format", output_format, path)[1] == plain  # auto: CliRunner is no terminal
    assert "\x1b" not in run("check", "--color", "always", "--output-format", "json", path)[1]


def test_show_fixes_lists_what_was_fixed(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": NO_CLEAR, "b.py": DROPPED_TAIL, "clean.py": CLEAN})
    code, out, _ = run("fix", "--show-fixes", tmp_path)
    assert code == 0
    assert out.splitlines() == ["Fixed 3 problems in 2 files.", f"Fixed 1 problem in {tmp_path / 'a.py'}",
                                f"Fixed 2 problems in {tmp_path / 'b.py'}", "All checks passed!"]


SEED_FINDINGS = 7


@pytest.mark.parametrize("output_format", ["full", "concise", "json", "json-lines", "github", "gitlab", "sarif"])
def test_every_output_format_on_the_seeds(output_format: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, err = run("check", "--output-format", output_format, "fixtures/seeds")
    assert code == 1, err
    if output_format == "full":
        headers = re.findall(r"^fixtures/seeds/\S+:\d+:\d+: GA\d{3} ", out, re.MULTILINE)
        assert len(headers) == SEED_FINDINGS
        assert len(re.findall(r"^\d+ \| ", out, re.MULTILINE)) == SEED_FINDINGS  # a snippet each
        assert out.endswith("Found 7 problems (5 fixable).\n"
                            "2 hidden fixes can be enabled with the `--unsafe-fixes` option.\n")
    elif output_format == "concise":
        lines = out.splitlines()
        assert len(lines) == SEED_FINDINGS + 2
        assert lines[0].startswith("fixtures/seeds/000_accumulation.py:8:8: GA202 ")
    elif output_format == "json":
        items = json.loads(out)
        assert len(items) == SEED_FINDINGS
        assert items[0]["filename"] == str(SEEDS / "000_accumulation.py")
        assert items[0]["location"] == {"row": 8, "column": 8}
    elif output_format == "json-lines":
        items = [json.loads(line) for line in out.splitlines()]
        assert len(items) == SEED_FINDINGS and items[0]["code"] == "GA202"
    elif output_format == "github":
        lines = out.splitlines()
        assert len(lines) == SEED_FINDINGS and all(line.startswith("::error ") for line in lines)
        assert lines[0].startswith("::error title=gacclint (GA202),file=fixtures/seeds/000_accumulation.py,"
                                   "line=8,col=8,")
    elif output_format == "gitlab":
        issues = json.loads(out)
        assert len(issues) == SEED_FINDINGS
        assert issues[0]["location"] == {"path": "fixtures/seeds/000_accumulation.py",
                                         "lines": {"begin": 8, "end": 8}}
        assert len({issue["fingerprint"] for issue in issues}) == SEED_FINDINGS
    else:
        log = json.loads(out)
        assert log["version"] == "2.1.0"
        results = log["runs"][0]["results"]
        assert len(results) == SEED_FINDINGS
        assert results[0]["ruleId"] == "GA202"


# -- 5. cache -----------------------------------------------------------------------------


def test_cache_gives_the_same_result_and_follows_edits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GACCLINT_CACHE_DIR", str(cache))
    write(tmp_path, {"src/a.py": NO_CLEAR, "src/b.py": DROPPED_TAIL})
    first = run("check", "--output-format", "json", tmp_path / "src")
    assert first[0] == 1 and len(json.loads(first[1])) == 2
    assert list(cache.glob("check-*.json"))
    assert run("check", "--output-format", "json", tmp_path / "src") == first
    assert (cache / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    # An edit is seen at once, both ways.
    (tmp_path / "src" / "a.py").write_text(CLEAN)
    assert findings(tmp_path / "src") == {(_rel(tmp_path / "src" / "b.py"), "GA202")}
    (tmp_path / "src" / "b.py").write_text(CLEAN)
    assert run("check", tmp_path / "src")[:2] == (0, "All checks passed!\n")
    (tmp_path / "src" / "b.py").write_text(DROPPED_TAIL)
    assert findings(tmp_path / "src") == {(_rel(tmp_path / "src" / "b.py"), "GA202")}
    # Settings are part of the key: the same file under --select gives the selection's answer.
    assert run("check", "--select", "GA1", tmp_path / "src")[0] == 0


def test_no_cache_writes_no_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GACCLINT_CACHE_DIR", str(cache))
    (tmp_path / "a.py").write_text(NO_CLEAR)
    assert run("check", "--no-cache", tmp_path / "a.py")[0] == 1
    assert not cache.exists()
    # fix never writes the cache either.
    run("fix", "--diff", tmp_path / "a.py")
    assert not cache.exists()


def test_a_corrupt_cache_file_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GACCLINT_CACHE_DIR", str(cache))
    (tmp_path / "a.py").write_text(NO_CLEAR)
    expected = run("check", "--output-format", "concise", tmp_path / "a.py")
    assert expected[0] == 1
    for damage in (b"garbage{", b"", b"[1, 2]", b'{"x": 1}', b"\xff\xfe\x00"):
        for file in cache.glob("check-*.json"):
            file.write_bytes(damage)
        assert run("check", "--output-format", "concise", tmp_path / "a.py") == expected


def test_a_damaged_cache_entry_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GACCLINT_CACHE_DIR", str(cache))
    (tmp_path / "a.py").write_text(NO_CLEAR)
    expected = run("check", "--output-format", "concise", tmp_path / "a.py")
    [file] = cache.glob("check-*.json")
    entries = json.loads(file.read_text())
    file.write_text(json.dumps({key: [0, ["not a finding"]] for key in entries}))
    assert run("check", "--output-format", "concise", tmp_path / "a.py") == expected


def test_default_cache_folder_is_in_the_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GACCLINT_CACHE_DIR")
    write(tmp_path, {"pyproject.toml": "[tool.gacclint]\n", "pkg/a.py": NO_CLEAR})
    monkeypatch.chdir(tmp_path / "pkg")
    assert run("check", ".")[0] == 1
    assert not (tmp_path / "pkg" / ".gacclint_cache").exists()
    folder = tmp_path / ".gacclint_cache"
    assert list(folder.glob("check-*.json"))
    assert (folder / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (folder / "CACHEDIR.TAG").is_file()
    # The cache folder is never walked, and a warm run says the same.
    monkeypatch.chdir(tmp_path)
    assert findings(".") == {("pkg/a.py", "GA101")}


# -- 6. discovery --------------------------------------------------------------------------


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, capture_output=True)
    names = ["main.py", "generated/g.py", "pkg/a_scratch.py", "pkg/keep_scratch.py", "pkg/ok.py", ".venv/v.py",
             "build/b.py", "env/e.py", "pkg/mod.egg-info/m.py"]
    write(tmp_path, dict.fromkeys(names, NO_CLEAR))
    (tmp_path / ".gitignore").write_text("generated/\n*_scratch.py\n!keep_scratch.py\n")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    shutil.copyfile(NOTEBOOK, tmp_path / ".ipynb_checkpoints" / "train-checkpoint.ipynb")
    shutil.copyfile(NOTEBOOK, tmp_path / "pkg" / "train.ipynb")
    return tmp_path


def test_walk_respects_gitignore_and_default_excludes(repository: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repository)
    expected = {("main.py", "GA101"), ("pkg/keep_scratch.py", "GA101"), ("pkg/ok.py", "GA101"),
                ("pkg/train.ipynb", "GA201"), ("pkg/train.ipynb", "GA202")}
    assert findings(".") == expected
    # The same walked from a subfolder: the .gitignore above it still counts.
    (repository / "pkg" / "more_scratch.py").write_text(NO_CLEAR)
    monkeypatch.chdir(repository / "pkg")
    assert findings(".") == {("keep_scratch.py", "GA101"), ("ok.py", "GA101"), ("train.ipynb", "GA201"),
                             ("train.ipynb", "GA202")}


def test_files_named_explicitly_are_checked_unless_force_excluded(repository: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repository)
    named = ["build/b.py", ".venv/v.py", "pkg/mod.egg-info/m.py", "generated/g.py", "pkg/ok.py"]
    assert findings(*named) == {(name, "GA101") for name in named}
    assert findings("--force-exclude", *named) == {("generated/g.py", "GA101"), ("pkg/ok.py", "GA101")}
    assert findings("--force-exclude", "--extend-exclude", "generated", *named) == {("pkg/ok.py", "GA101")}
    # A folder named explicitly is walked, and excluded with --force-exclude.
    assert findings("build") == {("build/b.py", "GA101")}
    assert findings("--force-exclude", "build") == set()


# -- 7. parallel analysis gives the serial answer -----------------------------------------

_RUN_WITH_THRESHOLD = """\
import sys
import gacclint.runner
from gacclint.cli import main
gacclint.runner.PARALLEL_MIN_BYTES = int(sys.argv[1])
try:
    main(sys.argv[2:])
finally:
    # Worker processes are started through concurrent.futures' process pool only.
    print("parallel" if "concurrent.futures.process" in sys.modules else "serial", file=sys.stderr)
"""


@pytest.mark.skipif(usable_cores() < 2, reason="one core: the run is never parallel")
def test_parallel_run_equals_serial_run(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    seeds = sorted(SEEDS.glob("*.py"))
    for index, seed in enumerate(seeds):
        folder = tree / f"part{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(seed, folder / f"copy{index:02d}_{seed.name}")
    shutil.copyfile(NOTEBOOK, tree / "part0" / "train.ipynb")
    (tree / "part1" / "form_feed.py").write_text("x = 1  # a\fb\n" + NO_CLEAR)

    def cli(threshold: int, *args: object) -> tuple[int, str, str]:
        completed = subprocess.run(
            [sys.executable, "-c", _RUN_WITH_THRESHOLD, str(threshold), *map(str, args)],
            capture_output=True, text=True, cwd=tmp_path, timeout=120)
        return completed.returncode, completed.stdout, completed.stderr

    for args in (["check", "--no-cache", "--output-format", "json", "tree"], ["fix", "--diff", "tree"]):
        parallel, serial = cli(0, *args), cli(10**12, *args)
        assert parallel[2].splitlines()[-1] == "parallel" and serial[2].splitlines()[-1] == "serial"
        assert parallel[:2] == serial[:2]
        assert parallel[0] == 1 and parallel[1]
        if args[0] == "check":  # the seeds' 7, the notebook's 2, the form feed file's 1
            assert len(json.loads(parallel[1])) == SEED_FINDINGS + 3


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or usable_cores() < 2,
                    reason="needs a CPU affinity to narrow, and two cores to narrow it from")
def test_a_run_confined_to_one_core_starts_no_workers(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(NO_CLEAR)
    (tmp_path / "b.py").write_text(NO_CLEAR)
    confined = "import os, sys\nos.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n" + _RUN_WITH_THRESHOLD
    completed = subprocess.run([sys.executable, "-c", confined, "0", "check", "--no-cache", "--output-format",
                                "concise", "."], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert completed.returncode == 1 and completed.stdout.count("GA101") == 2
    assert completed.stderr.splitlines()[-1] == "serial"


# -- 8. rows are split only at \r\n, \r and \n (issue 7) --------------------------------------

FORM_FEED = "x = 1  # a\fb\n" + NO_CLEAR  # the step is on row 5; str.splitlines would make it row 6


def test_a_form_feed_in_a_comment_does_not_shift_rows(tmp_path: Path) -> None:
    path = tmp_path / "ff.py"
    path.write_text(FORM_FEED)
    code, out, _ = run("check", "--output-format", "json", path)
    [finding] = json.loads(out)
    assert (finding["location"], finding["noqa_row"]) == ({"row": 5, "column": 5}, 5)
    assert finding["fix"]["edits"] == [{"content": "    optimizer.zero_grad()\n", "location": {"row": 6, "column": 1},
                                        "end_location": {"row": 6, "column": 1}}]
    assert run("check", "--output-format", "concise", "-q", path)[1] == f"{path}:5:5: {GA101}\n"
    assert "5 |     optimizer.step()\n" in run("check", path)[1]
    code, out, _ = run("fix", "--diff", path)
    assert code == 1
    assert out == (f"--- a/{path}\n+++ b/{path}\n@@ -3,3 +3,4 @@\n     loss = loss_fn(model(x), y)\n"
                   "     loss.backward()\n     optimizer.step()\n+    optimizer.zero_grad()\n")
    assert path.read_text() == FORM_FEED
    # --add-noqa puts the directive on the reported row.
    code, _, err = run("check", "--add-noqa", path)
    assert (code, err) == (0, "Added 1 noqa directive.\n")
    assert path.read_bytes() == FORM_FEED.replace("optimizer.step()", "optimizer.step()  # noqa: GA101").encode()
    path.write_text(FORM_FEED)
    assert run("fix", path)[0] == 0
    assert path.read_bytes() == (FORM_FEED + "    optimizer.zero_grad()\n").encode()


# -- 9. a warm check never imports libcst --------------------------------------------------

_IMPORTS = """\
import sys
from gacclint.cli import main
print("after import:", "libcst" in sys.modules)
try:
    main(sys.argv[1:])
except SystemExit as exit:
    print("exit:", exit.code)
print("after check:", "libcst" in sys.modules)
"""


def test_a_warm_check_never_imports_libcst(tmp_path: Path) -> None:
    shutil.copytree(SEEDS, tmp_path / "seeds")
    shutil.copyfile(NOTEBOOK, tmp_path / "seeds" / "train.ipynb")
    environment = {**os.environ, "GACCLINT_CACHE_DIR": str(tmp_path / "cache")}

    def check() -> list[str]:
        completed = subprocess.run([sys.executable, "-c", _IMPORTS, "check", "-q", str(tmp_path / "seeds")],
                                   capture_output=True, text=True, env=environment, timeout=120)
        assert completed.returncode == 0, completed.stderr
        return [line for line in completed.stdout.splitlines() if line.startswith(("after", "exit"))]

    assert check() == ["after import: False", "exit: 1", "after check: True"]  # cold: analyses
    assert check() == ["after import: False", "exit: 1", "after check: False"]  # warm: cache only


# --- progress bar ------------------------------------------------------------------


def _stderr_of(command: list[str], cwd: Path, terminal: bool) -> bytes:
    """What `command` writes on stderr when stderr is a terminal (a pty) or a pipe."""
    import pty

    if not terminal:
        return subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE).stderr
    leader, follower = pty.openpty()
    try:
        subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=follower)
    finally:
        os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: all was read
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    return output


def test_a_progress_bar_shows_on_a_terminal_only(tmp_path: Path) -> None:
    seed = (ROOT / "fixtures" / "seeds" / "000_accumulation.py").read_text()
    for number in range(25):
        (tmp_path / f"train_{number}.py").write_text(seed)
    command = [sys.executable, "-m", "gacclint", "check", "--no-cache", "."]
    on_terminal = _stderr_of(command, tmp_path, terminal=True)
    assert b"gacclint" in on_terminal and b"/25" in on_terminal
    assert _stderr_of(command, tmp_path, terminal=False) == b""
    assert b"/25" not in _stderr_of(command + ["--quiet"], tmp_path, terminal=True)
