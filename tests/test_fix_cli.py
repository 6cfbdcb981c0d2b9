"""`gacclint fix` as a user runs it: one run fixes everything fixable, the
fixed code gives the large-batch gradient, a second run changes nothing, a
correct loop is never touched, and what cannot be fixed is named with exit 1.

The gradients are checked with the oracle of tests/gradcheck.py (each window
recomputed as one float64 large batch), on the runnable fixtures and on
fixtures/fixes/forty_loops.py, a module of 40 buggy loops of different kinds
whose fixed twin is exactly what one `gacclint fix --unsafe-fixes` writes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE = ROOT / "fixtures" / "runnable"
FORTY = ROOT / "fixtures" / "fixes" / "forty_loops.py"
LINE_LENGTH = 88


def gacclint(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gacclint", *args, "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def buggy_runnable() -> list[Path]:
    return sorted(p for p in RUNNABLE.glob("*.py") if not p.name.endswith(".fixed.py"))


def new_lines(before: str, after: str) -> list[str]:
    """Lines of `after` that `before` does not have (what the fix wrote)."""
    old = set(before.splitlines())
    return [line for line in after.splitlines() if line not in old]


def test_one_run_fixes_forty_buggy_loops_to_the_large_batch_gradient(tmp_path: Path) -> None:
    target = tmp_path / "forty_loops.py"
    shutil.copyfile(FORTY, target)
    result = gacclint("fix", "--unsafe-fixes", "forty_loops.py", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All checks passed!" in result.stdout, result.stdout
    fixed = int(result.stdout.split("Fixed ", 1)[1].split(" ", 1)[0])
    assert fixed >= 80, result.stdout  # every finding of every loop, in one run
    assert "dropped" not in result.stderr, result.stderr
    text = target.read_text(encoding="utf-8")
    assert text == FORTY.with_name("forty_loops.fixed.py").read_text(encoding="utf-8")

    # What the fixes wrote keeps the line length and the file's indentation.
    written = new_lines(FORTY.read_text(encoding="utf-8"), text)
    assert written
    assert [line for line in written if len(line) > LINE_LENGTH] == []
    assert [line for line in written if (len(line) - len(line.lstrip(" "))) % 4] == []

    # A second run changing nothing: tests/test_fixtures.py checks it on every fixed twin.
    # Every step of every loop applies the mean gradient of its window.
    pytest.importorskip("torch")
    from gradcheck import check_recording, run_and_record

    report = check_recording(run_and_record(target))
    assert report.ok, report.table()
    assert len(report.steps) == 40 * 3, report.table()  # windows of 4, 4 and 2 in each loop


def test_one_run_fixes_every_runnable_fixture_to_the_large_batch_gradient(tmp_path: Path) -> None:
    for script in buggy_runnable():
        shutil.copyfile(script, tmp_path / script.name)
    result = gacclint("fix", "--unsafe-fixes", ".", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for script in buggy_runnable():
        assert (tmp_path / script.name).read_bytes() == script.with_name(script.stem + ".fixed.py").read_bytes()
    again = gacclint("fix", "--unsafe-fixes", "--diff", ".", cwd=tmp_path)
    assert (again.returncode, again.stdout) == (0, ""), again.stdout + again.stderr
    pytest.importorskip("torch")
    from gradcheck import check_recording, run_and_record

    for script in buggy_runnable():
        report = check_recording(run_and_record(tmp_path / script.name))
        assert report.ok, f"{script.name}\n{report.table()}"


def test_correct_loops_are_never_changed(tmp_path: Path) -> None:
    correct = sorted(RUNNABLE.glob("*.fixed.py")) + [FORTY.with_name("forty_loops.fixed.py")]
    for script in correct:
        shutil.copyfile(script, tmp_path / script.name.replace(".fixed.py", "_ok.py"))
    result = gacclint("fix", "--unsafe-fixes", ".", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for script in correct:
        assert (tmp_path / script.name.replace(".fixed.py", "_ok.py")).read_bytes() == script.read_bytes()


UNFIXABLE = """\
import torch

for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)
    loss.backward()
    if args.warmup:
        scheduler.step()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
"""


def test_what_cannot_be_fixed_is_named_and_exits_one(tmp_path: Path) -> None:
    target = tmp_path / "train.py"
    target.write_text(UNFIXABLE, encoding="utf-8")
    result = gacclint("fix", "--output-format", "concise", "train.py", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Fixed" in result.stdout  # GA201, then GA203 on the division it wrote
    remaining = [line for line in result.stdout.splitlines() if line.startswith("train.py:")]
    assert len(remaining) == 1 and " GA401 " in remaining[0], result.stdout
    assert "(loss / window).backward()" in target.read_text(encoding="utf-8")
    diff = gacclint("fix", "--diff", "train.py", cwd=tmp_path)
    assert diff.returncode == 1, diff.stdout + diff.stderr


def test_logged_loss_keeps_its_value(tmp_path: Path) -> None:
    target = tmp_path / "train.py"
    target.write_text(UNFIXABLE.replace("    if args.warmup:\n        scheduler.step()\n",
                                        "    print(loss.item())\n"), encoding="utf-8")
    result = gacclint("fix", "train.py", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    fixed = target.read_text(encoding="utf-8")
    assert "    (loss / window).backward()\n    print(loss.item())\n" in fixed
    assert "loss = loss /" not in fixed
