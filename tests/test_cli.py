"""The command as a user runs it: output lines, summaries, JSON, exit codes, writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gacclint.cli import main

BUGGY = """\
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
"""
FIXED = """\
for i, (x, y) in enumerate(loader):
    window = min(k, len(loader) - (i // k) * k)
    loss = loss_fn(model(x), y) / window
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
"""
CLEAN = """\
for x, y in loader:
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    optimizer.step()
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(BUGGY)
    (tmp_path / "clean.py").write_text(CLEAN)
    (tmp_path / "notes.txt").write_text("loss.backward() in prose")
    return tmp_path


def test_check_reports_path_row_col_code_and_summary(project: Path) -> None:
    code, out, _ = run("check", str(project))
    assert code == 1
    lines = out.splitlines()
    # The message may go on with the rule's evidence (the schedule for a sample k).
    assert lines[0].startswith(f"{project / 'train.py'}:4:8: GA202 `(i + 1) % k == 0` has no end-of-data clause: "
                               "the last `len(loader) % k` micro-batches of each pass are never stepped")
    assert lines[-1] == "Found 1 problem (1 fixable)."


def test_check_clean_file_exits_zero(project: Path) -> None:
    code, out, _ = run("check", str(project / "clean.py"))
    assert (code, out.strip()) == (0, "All checks passed!")


def test_select_and_ignore_take_prefixes(project: Path) -> None:
    assert run("check", "--select", "GA1", str(project))[0] == 0
    assert run("check", "--select", "GA2", str(project))[0] == 1
    assert run("check", "--ignore", "GA202", str(project))[0] == 0
    assert run("check", "--select", "GA2", "--ignore", "GA20", str(project))[0] == 0


def test_unknown_code_is_a_usage_error(project: Path) -> None:
    code, _, err = run("check", "--select", "GA999", str(project))
    assert code == 2
    assert "unknown rule code or prefix: GA999" in err


def test_json_output_has_ruffs_shape(project: Path) -> None:
    code, out, _ = run("check", "--output-format", "json", str(project))
    assert code == 1
    [finding] = json.loads(out)
    assert set(finding) == {"cell", "code", "end_location", "filename", "fix", "location", "message", "name",
                            "noqa_row", "url"}
    assert finding["code"] == "GA202" and finding["name"] == "dropped-final-window"
    assert finding["location"] == {"row": 4, "column": 8}
    assert finding["end_location"] == {"row": 4, "column": 24}
    assert finding["filename"] == str((project / "train.py").resolve())
    assert finding["fix"]["applicability"] == "safe"
    [edit] = finding["fix"]["edits"]
    assert edit == {"content": "    if (i + 1) % k == 0 or (i + 1) == len(loader):\n",
                    "location": {"row": 4, "column": 1}, "end_location": {"row": 5, "column": 1}}


def test_json_of_a_clean_tree_is_an_empty_array(project: Path) -> None:
    code, out, _ = run("check", "--output-format", "json", str(project / "clean.py"))
    assert (code, json.loads(out)) == (0, [])


def test_fix_rewrites_to_a_fixpoint_and_reports_nothing_left(project: Path) -> None:
    code, out, _ = run("fix", str(project))
    assert code == 0
    assert (project / "train.py").read_text() == FIXED
    assert "Fixed 2 problems in 1 file." in out
    assert (project / "clean.py").read_text() == CLEAN
    # A second run changes nothing.
    assert run("fix", str(project))[0] == 0
    assert (project / "train.py").read_text() == FIXED


def test_fix_diff_writes_nothing_and_exits_one(project: Path) -> None:
    code, out, err = run("fix", "--diff", str(project))
    assert code == 1
    assert (project / "train.py").read_text() == BUGGY
    assert "+    if (i + 1) % k == 0 or (i + 1) == len(loader):" in out
    assert "Would fix 2 problems in 1 file." in err
    assert run("fix", "--diff", str(project / "clean.py"))[0] == 0


def test_unsafe_fixes_need_the_flag(tmp_path: Path) -> None:
    source = BUGGY.replace("loader", "data")
    path = tmp_path / "train.py"
    path.write_text(source)
    code, out, _ = run("fix", str(path))
    assert code == 1 and path.read_text() == source
    assert "1 hidden fix can be enabled with the `--unsafe-fixes` option." in out
    assert run("fix", "--unsafe-fixes", str(path))[0] == 0
    assert "or (i + 1) == len(data)" in path.read_text()


def test_fix_keeps_crlf_line_endings_and_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_bytes(BUGGY.replace("\n", "\r\n").encode())
    path.chmod(0o750)
    run("fix", str(path))
    assert path.read_bytes() == FIXED.replace("\n", "\r\n").encode()
    assert path.stat().st_mode & 0o777 == 0o750


def test_unparseable_file_is_a_ga001_finding_and_the_run_goes_on(project: Path) -> None:
    (project / "broken.py").write_text("for x in loader:\n    loss.backward(\n")
    code, out, err = run("check", "--output-format", "concise", str(project))
    assert code == 1
    assert f"{project / 'broken.py'}:2:18: GA001 SyntaxError: '(' was never closed" in out
    assert "GA202" in out
    assert "Traceback" not in out + err


def test_missing_path_is_reported(tmp_path: Path) -> None:
    code, out, err = run("check", str(tmp_path / "nope.py"))
    assert code == 2
    assert err == f"gacclint: {tmp_path / 'nope.py'}: no such file or directory\n"
    assert out == "No problems found, but 1 file could not be checked (see the errors above).\n"


def test_rule_prints_documentation() -> None:
    code, out, _ = run("rule", "GA202")
    assert code == 0
    assert out.startswith("# dropped-final-window (GA202)")
    for heading in ("## What it does", "## Why is this bad?", "## Fix safety"):
        assert heading in out


def test_rule_all_lists_every_code() -> None:
    code, out, _ = run("rule", "--all")
    assert code == 0
    codes = [line.split()[0] for line in out.splitlines()]
    assert codes == ["GA001", "GA002", "GA101", "GA102", "GA103", "GA104", "GA201", "GA202", "GA203", "GA204", *codes[10:]]


def test_unknown_rule_is_a_usage_error() -> None:
    assert run("rule", "GA999")[0] == 2


def test_python_dash_m_runs_the_same_command(project: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "gacclint", "check", str(project)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "GA202" in result.stdout


def test_check_never_imports_the_code_it_reads(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "train.py").write_text(f"open({str(marker)!r}, 'w').close()\n" + BUGGY)
    run("check", str(tmp_path))
    run("fix", str(tmp_path))
    assert not marker.exists()
