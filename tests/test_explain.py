"""`gacclint explain FILE:LINE`: the loop model as a user reads it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from click.testing import CliRunner

from gacclint.cli import main

LOOP = textwrap.dedent("""\
    def train(model, loader, optimizer, k):
        for step, batch in enumerate(loader):
            loss = model(batch)
            loss = loss / k
            loss.backward()
            if step % k == 0:
                optimizer.step()
                optimizer.zero_grad()


    def evaluate(model, loader):
        for batch in loader:
            helper_that_trains(model, batch)
""")


def _explain(tmp_path: Path, line: int, source: str = LOOP):
    path = tmp_path / "train.py"
    path.write_text(source)
    return CliRunner().invoke(main, ["explain", f"{path}:{line}"])


def test_explain_shows_events_evaluated_guards_and_rules(tmp_path: Path) -> None:
    result = _explain(tmp_path, 6)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "train.py:2: micro-batch loop: `for step, batch in enumerate(loader):`" in out
    assert "counter: `step` (enumerate, from 0, restarts each pass)" in out
    assert "5 backward" in out and "loss: scaled (/ k)" in out
    # the guard as evaluated, with its evidence
    assert "on the boundary: k = `k`, first window one micro-batch, final partial window never stepped" in out
    assert "windows of 1, 4, 4, 4, and the last 2 are never stepped" in out
    assert "accumulation loop: yes, k = `k`" in out
    assert "GA104 fired at 6:12" in out
    assert "GA202 fired at 6:12" in out
    assert "GA201 silent: the backward loss is scaled, not unscaled" in out


def test_explain_a_loop_that_is_not_a_training_loop(tmp_path: Path) -> None:
    result = _explain(tmp_path, 13)
    assert result.exit_code == 0, result.output
    assert "`for batch in loader:` is not a training loop" in result.output
    assert "training loops of this file start at lines: 2" in result.output


def test_explain_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    for argument in ("train.py", f"{tmp_path / 'missing.py'}:3"):
        result = CliRunner().invoke(main, ["explain", argument])
        assert result.exit_code == 2
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("gacclint: ")
    result = _explain(tmp_path, 100)
    assert result.exit_code == 2 and "no loop holds this line" in result.output


def test_explain_from_the_installed_binary(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_text(LOOP)
    binary = shutil.which("gacclint", path=str(Path(sys.executable).parent)) or "gacclint"
    done = subprocess.run([binary, "explain", f"{path}:3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "GA202 fired" in done.stdout
