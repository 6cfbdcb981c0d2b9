"""The conventions a Ruff user expects (issue 17), checked against the installed
`gacclint` binary in a subprocess: exit codes and error lines, Ctrl-C, the
flags Ruff has (`check --fix`, `--stdin-filename`, `--output-file`,
`--show-files`, `--show-settings`, `--watch`, `--statistics` in every format),
`rule GA001`/`GA002`, GA002's fix, `fix --diff`, `verify` on a notebook, and
notebook findings on the lines of the .ipynb file in the annotation formats."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "fixtures" / "notebooks" / "train_accumulate.ipynb"
FIXED_NOTEBOOK = ROOT / "fixtures" / "notebooks" / "train_accumulate.fixed.ipynb"
SEED = ROOT / "fixtures" / "seeds" / "000_accumulation.py"

_SCRIPT = Path(sys.executable).with_name("gacclint")
GACCLINT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "gacclint"]

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
# GA202 whose only fix is unsafe: `fix` (safe fixes) leaves it.
UNSAFE_ONLY = """\
for i, x in enumerate(data):
    (loss / k).backward()
    if (i + 1) % k == 0:
        opt.step()
        opt.zero_grad()
"""
GA202_LINE = "train.py:4:8: GA202 `(i + 1) % k == 0` has no end-of-data clause"  # then the rule's evidence


def gacclint(*args: object, cwd: Path, stdin: bytes | None = None, env: dict | None = None,
             ) -> tuple[int, str, str]:
    completed = subprocess.run([*GACCLINT, *map(str, args)], cwd=cwd, input=stdin, capture_output=True,
                               env={**os.environ, **(env or {})}, timeout=120, check=False)
    return completed.returncode, completed.stdout.decode(), completed.stderr.decode()


# -- exit codes and error lines -----------------------------------------------------------------


def test_a_file_that_was_not_checked_is_an_error_never_all_checks_passed(tmp_path: Path) -> None:
    (tmp_path / "utf16.py").write_bytes(BUGGY.encode("utf-16"))
    code, out, err = gacclint("check", "--no-cache", "utf16.py", "missing.py", cwd=tmp_path)
    assert code == 2
    assert err.splitlines() == [
        "gacclint: utf16.py: UTF-16 encoded: Python source must be UTF-8 or declare an ASCII-compatible encoding",
        "gacclint: missing.py: no such file or directory"]
    assert out == "No problems found, but 2 files could not be checked (see the errors above).\n"
    assert "All checks passed" not in out + err
    # With findings elsewhere: both are said, and errors still win the exit code.
    (tmp_path / "train.py").write_text(BUGGY)
    code, out, err = gacclint("check", "--no-cache", "--output-format", "concise", ".", cwd=tmp_path)
    assert code == 2
    assert out.splitlines()[0].startswith(GA202_LINE)
    assert out.splitlines()[1:] == ["Found 1 problem (1 fixable).",
                                    "1 file could not be checked (see the errors above)."]
    assert gacclint("check", "--no-cache", "--exit-zero", ".", cwd=tmp_path)[0] == 2


def test_undecodable_sources_are_one_line_each(tmp_path: Path) -> None:
    (tmp_path / "latin.py").write_bytes(b"x = '\xe9'\n" + BUGGY.encode())
    (tmp_path / "unknown.py").write_bytes(b"# coding: klingon\n" + BUGGY.encode())
    code, out, err = gacclint("check", "--no-cache", ".", cwd=tmp_path)
    assert code == 2
    assert err.splitlines() == ["gacclint: latin.py: cannot decode: invalid or missing encoding declaration",
                                "gacclint: unknown.py: cannot decode: unknown encoding: klingon"]
    assert out == "No problems found, but 2 files could not be checked (see the errors above).\n"


def test_an_empty_folder_warns_and_exits_zero(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert gacclint("check", "empty", cwd=tmp_path) == (
        0, "", "warning: No Python files found under the given path(s)\n")
    code, out, err = gacclint("check", "--output-format", "json", "empty", cwd=tmp_path)
    assert (code, json.loads(out)) == (0, [])


def test_bad_settings_are_one_line_naming_the_file_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.gacclint]\nselct = ["GA2"]\n')
    (tmp_path / "train.py").write_text(BUGGY)
    code, out, err = gacclint("check", ".", cwd=tmp_path)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and "pyproject.toml" in err and "'selct'" in err


def test_ctrl_c_stops_at_once_exits_130_and_leaves_no_worker(tmp_path: Path) -> None:
    """Enough files for worker processes and a progress bar (a terminal on stderr);
    Ctrl-C, as a terminal sends it (to the whole process group), once the bar shows."""
    import pty
    import select

    seed = SEED.read_text()
    for number in range(450):  # ~290 KB: over the parallel threshold, several seconds of analysis
        (tmp_path / f"train_{number}.py").write_text(seed)
    leader, follower = pty.openpty()
    process = subprocess.Popen([*GACCLINT, "check", "--no-cache", "."], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=follower, stdin=subprocess.DEVNULL, start_new_session=True)
    os.close(follower)
    seen = b""
    try:
        while b"/450" not in seen:
            ready, _, _ = select.select([leader], [], [], 60)
            assert ready, seen
            seen += os.read(leader, 4096)
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 130
        while True:  # what the terminal got before the end
            ready, _, _ = select.select([leader], [], [], 0)
            try:
                chunk = os.read(leader, 4096) if ready else b""
            except OSError:
                chunk = b""
            if not chunk:
                break
            seen += chunk
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.stdout.close()
        os.close(leader)
    assert b"Traceback" not in seen
    assert b"450/450" not in seen  # it stopped, rather than finishing the run first
    with pytest.raises(ProcessLookupError):  # no worker process outlived it
        os.killpg(process.pid, 0)


# -- flags ---------------------------------------------------------------------------------------


def test_check_fix_is_fix(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(BUGGY)
    (tmp_path / "b.py").write_text(BUGGY)
    with_check = gacclint("check", "--fix", "a.py", cwd=tmp_path)
    with_fix = gacclint("fix", "b.py", cwd=tmp_path)
    assert with_check == with_fix == (0, "Fixed 2 problems in 1 file.\nAll checks passed!\n", "")
    assert (tmp_path / "a.py").read_text() == FIXED
    (tmp_path / "a.py").write_text(BUGGY)
    assert gacclint("check", "--fix", "--exit-non-zero-on-fix", "a.py", cwd=tmp_path)[0] == 1


def test_stdin_check_reports_under_the_given_name_with_its_settings(tmp_path: Path) -> None:
    code, out, _ = gacclint("check", "--output-format", "concise", "--stdin-filename", "src/train.py", "-",
                            cwd=tmp_path, stdin=BUGGY.encode())
    assert code == 1 and out.startswith(f"src/{GA202_LINE}") and out.endswith("\nFound 1 problem (1 fixable).\n")
    assert len(out.splitlines()) == 2
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "pyproject.toml").write_text('[tool.gacclint]\nignore = ["GA202"]\n')
    assert gacclint("check", "--stdin-filename", "src/train.py", cwd=tmp_path, stdin=BUGGY.encode())[:2] == (
        0, "All checks passed!\n")


def test_stdin_fix_writes_the_fixed_source_to_stdout(tmp_path: Path) -> None:
    code, out, err = gacclint("check", "--fix", "--stdin-filename", "train.py", "-", cwd=tmp_path,
                              stdin=BUGGY.encode())
    assert (code, out) == (0, FIXED)
    assert err == "All checks passed!\n"
    # What cannot be fixed is reported on stderr, and the source goes through.
    code, out, err = gacclint("fix", "--output-format", "concise", "--stdin-filename", "t.py", "-", cwd=tmp_path,
                              stdin=UNSAFE_ONLY.encode())
    assert (code, out) == (1, UNSAFE_ONLY)
    assert err.startswith("t.py:3:8: GA202 ")
    code, out, _ = gacclint("fix", "--diff", "--stdin-filename", "train.py", "-", cwd=tmp_path,
                            stdin=BUGGY.encode())
    assert code == 1 and out.startswith("--- a/train.py\n+++ b/train.py\n")
    # A notebook on stdin: the fixed notebook, byte for byte what `fix` writes.
    code, out, _ = gacclint("fix", "--stdin-filename", "nb.ipynb", "-", cwd=tmp_path, stdin=NOTEBOOK.read_bytes())
    assert (code, out) == (0, FIXED_NOTEBOOK.read_text())


def test_output_file_holds_what_stdout_would(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(BUGGY)
    for output_format in ("full", "sarif"):
        expected = gacclint("check", "--output-format", output_format, "train.py", cwd=tmp_path)
        code, out, err = gacclint("check", "--output-format", output_format, "-o", f"reports/{output_format}.txt",
                                  "train.py", cwd=tmp_path)
        assert (code, out, err) == (1, "", "")
        assert (tmp_path / "reports" / f"{output_format}.txt").read_text() == expected[1]


def test_show_files_and_show_settings(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.gacclint]\nignore = ["GA2"]\nextend-exclude = ["skip/"]\n')
    for name in ("b.py", "a.ipynb", "skip/c.py", "sub/d.py", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(BUGGY)
    assert gacclint("check", "--show-files", cwd=tmp_path) == (0, "a.ipynb\nb.py\nsub/d.py\n", "")
    code, out, _ = gacclint("check", "--show-settings", "sub/d.py", cwd=tmp_path)
    assert code == 0
    lines = out.splitlines()
    assert lines[:2] == ['Resolved settings for: "sub/d.py"', f'Settings path: "{tmp_path / "pyproject.toml"}"']
    assert 'ignore = ["GA2"]' in lines
    enabled = json.loads(next(line for line in lines if line.startswith("enabled = ")).split(" = ", 1)[1])
    assert "GA101" in enabled and not any(code.startswith("GA2") for code in enabled)
    assert any(line.startswith("exclude = ") and '"skip/"' in line for line in lines)


def test_watch_runs_again_when_a_file_changes(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(BUGGY)
    process = subprocess.Popen([*GACCLINT, "check", "--no-cache", "--output-format", "concise", "--watch", "."],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "GACCLINT_WATCH_MAX_RUNS": "2", "GACCLINT_WATCH_INTERVAL": "0.05"})
    try:
        first = []
        while not first or not first[-1].startswith("Found "):
            first.append(process.stdout.readline())
            assert first[-1], "the first run printed no summary"
        (tmp_path / "train.py").write_text(FIXED)  # an editor saves
        rest, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert len(first) == 2 and first[0].startswith(GA202_LINE) and first[1] == "Found 1 problem (1 fixable).\n"
    assert rest == "All checks passed!\n"
    assert err.splitlines() == ["Watching for file changes (Ctrl-C to stop).", "File change detected..."]
    assert process.returncode == 0


def test_statistics_in_every_format(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(BUGGY)
    (tmp_path / "b.py").write_text(UNSAFE_ONLY)
    code, out, _ = gacclint("check", "--statistics", "--output-format", "json", ".", cwd=tmp_path)
    assert code == 1
    assert json.loads(out) == [{"code": "GA202", "name": "dropped-final-window", "count": 2, "fixable": True}]
    code, out, _ = gacclint("check", "--statistics", "--output-format", "json-lines", ".", cwd=tmp_path)
    assert [json.loads(line) for line in out.splitlines()] == [
        {"code": "GA202", "name": "dropped-final-window", "count": 2, "fixable": True}]
    for output_format in ("full", "concise", "github", "gitlab", "sarif"):
        assert gacclint("check", "--statistics", "--output-format", output_format, ".", cwd=tmp_path)[:2] == (
            1, "2\tGA202\t[*] dropped-final-window\n")


# -- rules, GA002, fix --diff, verify ------------------------------------------------------------


@pytest.mark.parametrize("code, name", [("GA001", "syntax-error"), ("GA002", "unused-noqa")])
def test_rule_documents_the_builtin_codes(tmp_path: Path, code: str, name: str) -> None:
    status, out, _ = gacclint("rule", code, cwd=tmp_path)
    assert status == 0
    assert out.startswith(f"# {name} ({code})\n")
    for heading in ("## What it does", "## Why is this bad?", "## Example", "## Fix"):
        assert heading in out
    listing = gacclint("rule", "--all", cwd=tmp_path)[1].splitlines()
    assert [line.split()[0] for line in listing[:2]] == ["GA001", "GA002"]


def test_fix_applies_ga002(tmp_path: Path) -> None:
    stale = FIXED.replace("optimizer.step()", "optimizer.step()  # noqa: GA101, E501")
    (tmp_path / "train.py").write_text(stale)
    code, out, _ = gacclint("check", "--extend-select", "GA002", "--output-format", "concise", "train.py",
                            cwd=tmp_path)
    assert (code, out.splitlines()[0]) == (1, "train.py:6:27: GA002 Unused `noqa` directive (unused: `GA101`)")
    assert gacclint("fix", "--extend-select", "GA002", "train.py", cwd=tmp_path) == (
        0, "Fixed 1 problem in 1 file.\nAll checks passed!\n", "")
    assert (tmp_path / "train.py").read_text() == FIXED.replace("optimizer.step()", "optimizer.step()  # noqa: E501")


def test_fix_diff_exits_1_while_unfixable_findings_remain(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text(UNSAFE_ONLY)
    assert gacclint("fix", "--diff", "t.py", cwd=tmp_path) == (1, "", "Would fix 0 problems in 0 files.\n1 problem "
                                                                   "would remain (no fix that this run applies; "
                                                                   "`gacclint check` shows them).\n")
    (tmp_path / "t.py").write_text(FIXED)
    assert gacclint("fix", "--diff", "t.py", cwd=tmp_path)[:2] == (0, "")


def test_verify_on_a_notebook_says_what_to_do(tmp_path: Path) -> None:
    code, out, err = gacclint("verify", NOTEBOOK, cwd=tmp_path)
    assert (code, out) == (2, "")
    assert err == (f"gacclint: {NOTEBOOK}: could not verify: verify runs Python scripts, not notebooks; export it "
                   f"(`jupyter nbconvert --to script {NOTEBOOK}`) and verify the .py file\n")


# -- notebooks in the annotation formats --------------------------------------------------------


def test_notebook_findings_land_on_the_ipynb_lines(tmp_path: Path) -> None:
    notebook = tmp_path / "train.ipynb"
    notebook.write_bytes(NOTEBOOK.read_bytes())
    json_lines = notebook.read_text().splitlines()

    def file_line(number: int) -> str:
        return json.loads(json_lines[number - 1].strip().rstrip(","))

    code, out, _ = gacclint("check", "--output-format", "concise", "train.ipynb", cwd=tmp_path)
    # Text formats keep the cell and its row.
    assert [line.split(": ")[0] for line in out.splitlines()[:2]] == ["train.ipynb:cell 4:4:9",
                                                                     "train.ipynb:cell 4:5:12"]
    code, out, _ = gacclint("check", "--output-format", "github", "train.ipynb", cwd=tmp_path)
    lines = [dict(part.split("=", 1) for part in command.split("::")[1].split(" ", 1)[1].split(","))
             for command in out.splitlines()]
    assert [(entry["line"], entry["endLine"]) for entry in lines] == [("88", "88"), ("89", "89")]
    assert file_line(88) == "        loss.backward()\n"
    assert file_line(89).startswith("        if (i + 1) % accumulation_steps == 0")
    assert out.splitlines()[0].split("::")[2].startswith("cell 4:4:9: GA201 ")
    code, out, _ = gacclint("check", "--output-format", "gitlab", "train.ipynb", cwd=tmp_path)
    assert [issue["location"]["lines"] for issue in json.loads(out)] == [{"begin": 88, "end": 88},
                                                                         {"begin": 89, "end": 89}]
    code, out, _ = gacclint("check", "--output-format", "sarif", "train.ipynb", cwd=tmp_path)
    regions = [result["locations"][0]["physicalLocation"]["region"]
               for result in json.loads(out)["runs"][0]["results"]]
    assert regions == [{"startLine": 88, "endLine": 88}, {"startLine": 89, "endLine": 89}]
