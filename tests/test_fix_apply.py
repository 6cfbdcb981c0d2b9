"""How fixes are applied: together per pass, to a fixpoint, dropped when wrong, never silent.

Rules' own fixes are checked by their examples and the fixture twins; these
tests pin the application: independent loops are fixed in the same pass, a
chain of fixes (GA202 then GA203) runs to its end with no pass cap, a fix
whose code does not parse or that leaves its finding behind is dropped and
named while the others still apply, and fixes that keep making work for each
other stop with `converged` false and a message from `gacclint fix`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import libcst as cst
import pytest

import gacclint.fixes.apply as apply_module
from gacclint.engine import Located, lint_source
from gacclint.fixes.apply import fix_source
from gacclint.fixes.edits import InsertAfter, InsertBefore
from gacclint.fixes.imports import add_import
from gacclint.fixes.edits import apply_edits
from gacclint.rules.base import Applicability, Finding, Fix
from gacclint.selection import Selection

LOOP = """\
def train_{n}(model, loader, optimizer, loss_fn, k):
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
"""


def test_independent_loops_are_fixed_in_one_pass() -> None:
    source = "\n\n".join(LOOP.format(n=n) for n in range(12)).encode()
    outcome = fix_source(source, Selection(select=("GA101",)))
    assert outcome.converged and not outcome.dropped
    assert [f.code for f in outcome.applied] == ["GA101"] * 12
    assert outcome.passes == 1
    assert outcome.fixed.decode().count("            optimizer.zero_grad()\n") == 12


def test_a_chain_of_fixes_in_many_loops_runs_to_its_end() -> None:
    # Each loop needs GA201, then GA202's clause, then GA203's real window:
    # 12 loops are 36 fixes, beyond the old silent cap of 25.
    loop = LOOP.replace("loss_fn(model(x), y) / k", "loss_fn(model(x), y)").replace(
        " or (i + 1) == len(loader)", "").replace("optimizer.step()", "optimizer.step()\n            optimizer.zero_grad()")
    source = "\n\n".join(loop.format(n=n) for n in range(12)).encode()
    outcome = fix_source(source, Selection())
    assert outcome.converged and not outcome.dropped
    assert sorted({f.code for f in outcome.applied}) == ["GA201", "GA202", "GA203"]
    assert len(outcome.applied) == 36
    assert lint_source(outcome.fixed, Selection())[1] == []
    assert outcome.passes <= 4


def _with_extra(monkeypatch, extra) -> None:
    """lint_module with one more finding, made by `extra(module)`."""
    real = apply_module.lint_module

    def lint(module: cst.Module, selection: Selection) -> list[Located]:
        found = list(real(module, selection))
        finding = extra(module)
        if finding is not None:
            found.append(Located(finding.code, finding.message, 1, 1, 1, 2, finding.fix, finding))
        return found

    monkeypatch.setattr(apply_module, "lint_module", lint)


def test_a_fix_that_does_not_parse_is_dropped_and_the_others_apply(monkeypatch) -> None:
    def broken(module: cst.Module) -> Finding:
        anchor = module.body[0]
        return Finding("GA999", "broken", anchor, Fix(Applicability.SAFE, "break it", (InsertBefore(anchor, "def ("),)))

    _with_extra(monkeypatch, broken)
    source = "\n\n".join(LOOP.format(n=n) for n in range(3)).encode()
    outcome = fix_source(source, Selection(select=("GA101",)))
    assert [d.finding.code for d in outcome.dropped] == ["GA999"]
    assert "does not parse" in outcome.dropped[0].reason
    assert [f.code for f in outcome.applied] == ["GA101"] * 3
    assert [f.code for f in outcome.remaining] == ["GA999"]  # still reported, its fix named as dropped


def test_a_fix_that_leaves_its_finding_is_dropped(monkeypatch) -> None:
    def stubborn(module: cst.Module) -> Finding:
        anchor = module.body[-1]
        return Finding("GA998", "stubborn", anchor,
                       Fix(Applicability.SAFE, "add a line", (InsertAfter(anchor, "x = 1"),)))

    _with_extra(monkeypatch, stubborn)
    outcome = fix_source(LOOP.format(n=0).encode(), Selection(select=("GA101",)))
    assert [(d.finding.code, d.reason) for d in outcome.dropped] == [("GA998", "the fix leaves its own finding behind")]
    assert [f.code for f in outcome.applied] == ["GA101"]


def _ping_pong(module: cst.Module) -> Finding:
    """Two findings that each fix makes the other appear: no fixpoint."""
    count = module.code.count("ping = 1")
    code = "GA997" if count % 2 == 0 else "GA996"
    anchor = module.body[-1]
    return Finding(code, "ping-pong", anchor, Fix(Applicability.SAFE, "one more", (InsertAfter(anchor, "ping = 1"),)))


def test_fixes_that_never_settle_stop_and_say_so(monkeypatch) -> None:
    _with_extra(monkeypatch, _ping_pong)
    outcome = fix_source(b"ping = 0\n", Selection(select=("GA101",)))
    assert not outcome.converged
    assert outcome.passes >= 25  # no silent cap at 25: the guard is far above what a file needs


def test_cli_names_what_remains_and_exits_one(tmp_path: Path) -> None:
    target = tmp_path / "train.py"
    target.write_text(LOOP.format(n=0).replace("/ k", "") + textwrap.dedent("""\

        def other(model, loader, optimizer, loss_fn, k):
            for i, (x, y) in enumerate(loader):
                loss_fn(model(x), y).backward()
                if args.warmup:
                    scheduler.step()
                if (i + 1) % k == 0 or (i + 1) == len(loader):
                    optimizer.step()
                    optimizer.zero_grad()
        """), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "gacclint", "fix", "--no-cache", "--output-format", "concise",
                             "train.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("Fixed "), result.stdout
    left = [line.split(" ", 2)[1] for line in result.stdout.splitlines() if line.startswith("train.py:")]
    assert left == ["GA401"], result.stdout


@pytest.mark.parametrize(("before", "after"), [
    ("import torch\n\nx = 1\n", "import contextlib\n\nimport torch\n\nx = 1\n"),
    ('"""Doc."""\n\nimport torch\nfrom torch import nn\n', '"""Doc."""\n\nimport contextlib\n\nimport torch\nfrom torch import nn\n'),
    ("import os\nimport sys\n\nimport torch\n", "import contextlib\nimport os\nimport sys\n\nimport torch\n"),
    ("import abc\nimport os\nimport torch\n", "import abc\nimport contextlib\nimport os\nimport torch\n"),
    ("import abc\nfrom typing import Any\n\nimport torch\n",
     "import abc\nimport contextlib\nfrom typing import Any\n\nimport torch\n"),
    ("from __future__ import annotations\n\nimport torch\n",
     "from __future__ import annotations\n\nimport contextlib\n\nimport torch\n"),
    ("# header\nimport torch\n", "# header\nimport contextlib\n\nimport torch\n"),
], ids=["third-party-only", "docstring", "stdlib-first", "stdlib-middle", "stdlib-from", "future", "comment"])
def test_an_added_import_goes_where_isort_puts_it(before: str, after: str) -> None:
    module = cst.parse_module(before)
    assert apply_edits(module, add_import(module, "contextlib")).code == after
