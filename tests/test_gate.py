"""The gates that spare most files the parser must never spare a file the loop
model would report on (gacclint/gate.py): checked against the model itself on
every fixture, every rule example, and generated programs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gacclint.engine import parse
from gacclint.gate import may_hold_training_loop, owns_backward_call
from gacclint.loops.find import build_model
from gacclint.rules import all_rules

ROOT = Path(__file__).resolve().parent.parent


def model_reports_on(source: bytes) -> bool:
    model = build_model(parse(source))
    return bool(model.loops or model.step_helpers)


def gates_pass(source: bytes) -> bool:
    """Both gates, gate 2 as the runner asks it (with the source, to skip
    statements) and checked against gate 2 on the whole tree."""
    if not may_hold_training_loop(source):
        return False
    tree = ast.parse(source)
    verdict = owns_backward_call(tree, source)
    assert verdict == owns_backward_call(tree)
    return verdict


def known_programs() -> list[tuple[str, bytes]]:
    programs = [(str(p.relative_to(ROOT)), p.read_bytes()) for p in sorted((ROOT / "fixtures").rglob("*.py"))]
    for rule in all_rules():
        for number, example in enumerate(rule.VALID + rule.INVALID):
            programs.append((f"{rule.code} example {number}", example.code.encode()))
    return programs


@pytest.mark.parametrize(("name", "source"), known_programs(), ids=lambda value: value if isinstance(value, str) else "")
def test_no_fixture_or_example_with_a_loop_is_gated_out(name: str, source: bytes) -> None:
    if model_reports_on(source):
        assert gates_pass(source), name


@pytest.mark.parametrize("spelling", [
    "loss.backward()",
    "loss.backward ()",
    "loss . backward\t(\n)",
    "loss.backward \\\n    ()",
    "(loss.backward  # a comment between the name and its call\n     ())",
    "self.manual_backward(loss)",
    "scaler.scale(loss).backward()",
])
def test_every_spelling_of_a_backward_call_passes_the_text_gate(spelling: str) -> None:
    source = f"for batch in loader:\n    {spelling}\n    optimizer.step()\n".encode()
    assert model_reports_on(source)
    assert gates_pass(source)


@pytest.mark.parametrize("source", [
    # an autograd Function: backward is defined, never called by a loop
    "class Square(torch.autograd.Function):\n    @staticmethod\n    def backward(ctx, grad):\n"
    "        for g in grad:\n            pass\n        return grad\n",
    # a docstring that shows a training step
    'def train():\n    """>>> for x in loader:\n    ...     model(x).sum().backward()"""\n',
    # a backward outside any loop, in a function that never steps
    "def training_step(self, batch):\n    self.accelerator.backward(self.loss(batch))\n",
    # "backward compatibility" in a comment
    "# kept for backward compatibility (see #12)\nx = 1\n",
])
def test_files_without_a_loop_held_backward_are_gated_out(source: str) -> None:
    assert not model_reports_on(source.encode())
    assert not gates_pass(source.encode())


@pytest.mark.parametrize("source", [
    # the backward call is in a decorator, above the row of its `def`
    b"@hook(lambda: (optimizer.step(), loss.backward()))\ndef train():\n    pass\n",
    # rows ended by \r and \r\n, as CPython counts them
    b"x = 1\r\ry = 2\r\nfor batch in loader:\r    loss.backward()\r    optimizer.step()\r",
    b"x = 1\r\n\r\nfor batch in loader:\r\n    loss.backward()\r\n",
    # an identifier that NFKC makes `backward`, and one with other non-ASCII around it
    "x = 1\nfor batch in loader:\n    loss.\uff42ackward()\n".encode(),
    "s = 'é'\nfor batch in loader:\n    loss.backward()  # é\n".encode(),
    # UTF-7: `+AAo-` is a line break, so the bytes' rows are not CPython's
    b"# coding: utf-7\nx = 1+AAo-y = 2+AAo-z = 3\nfor batch in loader:\n    loss.backward()\n",
    # Latin-1, declared
    "# -*- coding: latin-1 -*-\ns = 'é'\nfor batch in loader:\n    loss.backward()\n".encode("latin-1"),
])
def test_gate_2_skipping_statements_by_their_rows_keeps_every_loop(source: bytes) -> None:
    tree = ast.parse(source)
    assert owns_backward_call(tree)
    assert owns_backward_call(tree, source)


# --- generated programs: loops, functions and classes nested at random, holding
# backward, step and clear calls in random spellings --------------------------------

_CALLS = st.sampled_from([
    "loss.backward()", "loss.backward (retain_graph=True)", "engine.backward(loss)", "self.manual_backward(loss)",
    "scaler.scale(loss).backward()", "optimizer.step()", "scaler.step(optimizer)", "xm.optimizer_step(optimizer)",
    "optimizer.zero_grad()", "scheduler.step()", "loss = model(x).sum() / k", "backward(loss)", "step(optimizer)",
    "torch.autograd.backward(loss)", "total += loss",
])


@st.composite
def _blocks(draw, depth: int = 0) -> list[str]:
    statements: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["call", "call", "for", "while", "def", "class", "if", "with"] if depth < 3 else ["call"]))
        if kind == "call":
            statements.append(draw(_CALLS))
            continue
        header = {"for": "for i, x in enumerate(loader):", "while": "while True:", "def": "def helper(self):",
                  "class": "class Trainer:", "if": "if (i + 1) % k == 0:", "with": "with torch.no_grad():"}[kind]
        body = draw(_blocks(depth + 1))
        statements.append(header + "\n" + "\n".join("    " + line for block in body for line in block.split("\n")))
    return statements


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_blocks())
def test_generated_programs_the_model_reports_on_pass_the_gates(statements: list[str]) -> None:
    source = ("\n".join(statements) + "\n").encode()
    if model_reports_on(source):
        assert gates_pass(source), source.decode()
