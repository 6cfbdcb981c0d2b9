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


def test_explain_takes_a_finding_place_as_check_prints_it(tmp_path: Path) -> None:
    result = _explain_location(tmp_path, "train.py", LOOP, "6:12")
    assert result.exit_code == 0, result.output
    assert "train.py:2: micro-batch loop" in result.output and "GA202 fired at 6:12" in result.output


NOTEBOOK_CELLS = [
    {"cell_type": "markdown", "metadata": {}, "source": ["# Training\n"]},
    {"cell_type": "code", "metadata": {}, "execution_count": 1, "outputs": [],
     "source": ["model = make_model()\n", "optimizer = make_optimizer(model)\n", "k = 4\n"]},
    {"cell_type": "code", "metadata": {}, "execution_count": 2, "outputs": [],
     "source": ["%%time\n", "for i, (x, y) in enumerate(loader):\n", "    loss = criterion(model(x), y)\n",
                "    loss.backward()\n", "    if (i + 1) % k == 0:\n", "        optimizer.step()\n",
                "        optimizer.zero_grad()\n"]},
]


def _notebook(tmp_path: Path) -> Path:
    import json

    path = tmp_path / "notes.ipynb"
    path.write_text(json.dumps({"cells": NOTEBOOK_CELLS, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_explain_a_notebook_loop_in_its_cell_rows(tmp_path: Path) -> None:
    path = _notebook(tmp_path)
    check = CliRunner().invoke(main, ["check", "--no-cache", "--output-format", "concise", str(path)])
    place = next(line for line in check.output.splitlines() if " GA202 " in line).split(": GA202")[0]
    assert place == f"{path}:cell 2:5:8"
    result = CliRunner().invoke(main, ["explain", place])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{path}:cell 2:2: micro-batch loop: `for i, (x, y) in enumerate(loader):`" in out
    assert "cell 2:4 backward" in out and "cell 2:6 step" in out
    assert "GA201 fired at cell 2:4:5" in out and "GA202 fired at cell 2:5:8" in out


def test_explain_notebook_places_it_cannot_read(tmp_path: Path) -> None:
    path = _notebook(tmp_path)
    expected = {
        f"{path}:3": "name the code cell",
        f"{path}:cell 9:1": "cell 9: the notebook has 2 code cells",
        f"{path}:cell 2:40": "cell 2:40: the cell has 7 rows",
        f"{path}:cell 1:2": "no loop holds this line (training loops start at lines: cell 2:2)",
        f"{tmp_path / 'train.py'}:cell 1:2": "only a notebook has cells",
    }
    for location, message in expected.items():
        result = CliRunner().invoke(main, ["explain", location])
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1 and message in result.output, result.output


def _explain_location(tmp_path: Path, name: str, source: str, place: str):
    path = tmp_path / name
    path.write_text(source)
    return CliRunner().invoke(main, ["explain", f"{path}:{place}"])


def test_explain_says_why_ga202_is_silent_where_the_run_ends_on_a_step_budget(tmp_path: Path) -> None:
    source = textwrap.dedent("""\
        def train(model, loader, optimizer, k, max_steps):
            step = 0
            for batch_step, batch in enumerate(loader):
                loss = model(batch) / k
                loss.backward()
                if (batch_step + 1) % k == 0:
                    optimizer.step()
                    optimizer.zero_grad()
                    step += 1
                if step >= max_steps:
                    break
    """)
    result = _explain(tmp_path, 3, source)
    assert result.exit_code == 0, result.output
    assert ("GA202 silent: the loop is the whole run and ends on a budget of steps: at most the run's last "
            "micro-batches go unstepped") in result.output
    assert "provable from literals" not in result.output


def test_explain_shows_each_optimizers_own_window(tmp_path: Path) -> None:
    source = textwrap.dedent("""\
        def train(G, D, loader, k, crit):
            optG = torch.optim.Adam(G.parameters())
            optD = torch.optim.Adam(D.parameters())
            for i, (x, z) in enumerate(loader):
                d_loss = crit(D(x), 1)
                d_loss.backward()
                if (i + 1) % k == 0:
                    optD.step()
                    optG.zero_grad()
                    g_loss = crit(D(G(z)), 1)
                    g_loss.backward()
                    optG.step()
                    optD.zero_grad()
    """)
    result = _explain(tmp_path, 4, source)
    assert result.exit_code == 0, result.output
    # the loop as a whole does not accumulate (the generator's backward runs on the boundary only) ...
    assert "          accumulation loop: no\n" in result.output
    # ... but the discriminator's optimizer does, and the window rules judge it
    assert "optimizer `optD`: accumulation loop: yes, k = `k`" in result.output
    assert "optimizer `optG`: accumulation loop: no" in result.output
    assert "GA202 fired at 7:12" in result.output
