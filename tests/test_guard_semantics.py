"""Guards are judged by what they evaluate to: findings against a brute-force run.

Hypothesis generates accumulation loops across boundary spellings (`% k == 0`,
`not ... % k`, `% k != 0: continue`, `== k - 1`, names bound to the test,
same-module predicates, a counter reset at the step, a `>=` counter), counters
(enumerate from 0 or 1, a counter incremented before or after the test),
end-of-data clauses (several spellings, or none) and clear placements. Each
program is then *run* with stand-in objects for several `k` and loader lengths,
recording after which micro-batches the optimizer steps and clears, and the
codes RULES.md prescribes are derived from what happened (GA104: the first
window is not `k`; GA202: some micro-batches of a pass are never stepped; GA203:
the final partial window is stepped while every loss is divided by `k`; GA102:
a clear on every micro-batch before its backward). gacclint must report exactly
those codes, never reading the program's spelling for it.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gacclint.engine import lint_source
from gacclint.selection import Selection

EXAMPLES = int(os.environ.get("GACCLINT_FUZZ", "400"))
CODES = ("GA102", "GA104", "GA202", "GA203")


@dataclass(frozen=True)
class Loop:
    counter: str  # "enum0", "enum1", "pre" (incremented before the test), "post", "reset"
    spelling: str  # how the boundary is written
    tail: str  # "" or an end-of-data spelling
    divided: bool
    clear: str  # "boundary" or "every"
    literal_k: bool

    def source(self) -> str:
        k = "4" if self.literal_k else "k"
        lines = []
        if self.spelling == "predicate":
            lines += ["def is_update(step, k):", f"    return (step + 1) % {k} == 0", ""]
        lines.append("def train(model, loader, optimizer, k):")
        if self.counter in ("pre", "post", "reset"):
            lines.append("    count = 0")
        if self.counter == "enum1":
            lines.append("    for i, (x, y) in enumerate(loader, start=1):")
        elif self.counter == "enum0":
            lines.append("    for i, (x, y) in enumerate(loader):")
        else:
            lines.append("    for x, y in loader:")
        body = []
        if self.clear == "every":
            body.append("optimizer.zero_grad()")
        body.append("loss = loss_fn(model(x), y)")
        body.append(f"loss = loss / {k}" if self.divided else "loss = loss * 1.0")
        body.append("loss.backward()")
        if self.counter == "pre" or self.counter == "reset":
            body.append("count += 1")
        index = {"enum0": "i", "enum1": "i"}.get(self.counter, "count")
        # The position the test sees, counting micro-batches from 1 when the spelling is right.
        one_based = {"enum0": f"({index} + 1)", "enum1": index, "pre": index, "post": f"({index} + 1)",
                     "reset": index}[self.counter]
        zero_based = {"enum0": index, "enum1": f"({index} - 1)", "pre": f"({index} - 1)", "post": index,
                      "reset": f"({index} - 1)"}[self.counter]
        position = zero_based if self.spelling.startswith("offbyone") else one_based
        last = {"": "", "len": f"{one_based} == len(loader)", "minus1": f"{zero_based} == len(loader) - 1",
                "named": "is_last"}[self.tail]
        if self.tail == "named":
            body.append(f"is_last = {zero_based} == len(loader) - 1")
        if self.counter == "reset":
            test = f"{index} >= {k}"
        elif self.spelling == "predicate":
            test = f"is_update({zero_based}, k)"
        elif self.spelling in ("eq", "offbyone_eq"):
            test = f"{position} % {k} == 0"
        elif self.spelling == "not":
            test = f"not {position} % {k}"
        elif self.spelling == "minus1":
            test = f"{zero_based} % {k} == {k} - 1"
        else:
            test = f"{position} % {k} == 0"
        if last:
            test = f"{test} or {last}"
        if self.spelling == "continue":
            body.append(f"if not ({test}):")
            body.append("    continue")
            step_block = ["optimizer.step()"]
            if self.clear == "boundary":
                step_block.append("optimizer.zero_grad()")
            if self.counter == "reset":
                step_block.append("count = 0")
            body += step_block
        elif self.spelling == "bound":
            body.append(f"should_step = {test}")
            body.append("if should_step:")
            body.append("    optimizer.step()")
            if self.clear == "boundary":
                body.append("    optimizer.zero_grad()")
            if self.counter == "reset":
                body.append("    count = 0")
        else:
            body.append(f"if {test}:")
            body.append("    optimizer.step()")
            if self.clear == "boundary":
                body.append("    optimizer.zero_grad()")
            if self.counter == "reset":
                body.append("    count = 0")
        if self.counter == "post":
            body.append("count += 1")
        lines += ["        " + line for line in body]
        return "\n".join(lines) + "\n"


loops = st.builds(
    Loop,
    counter=st.sampled_from(["enum0", "enum1", "pre", "post", "reset"]),
    spelling=st.sampled_from(["eq", "not", "minus1", "offbyone_eq", "predicate", "continue", "bound"]),
    tail=st.sampled_from(["", "len", "minus1", "named"]),
    divided=st.booleans(),
    clear=st.sampled_from(["boundary", "every"]),
    literal_k=st.booleans(),
).filter(lambda loop: not (loop.spelling == "continue" and loop.counter == "post"))  # it would never count


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.batch = 0

    def step(self) -> None:
        self.events.append(("step", self.batch))

    def zero_grad(self) -> None:
        self.events.append(("clear", self.batch))


class _Loss:
    def __init__(self, recorder: _Recorder) -> None:
        self.recorder = recorder

    def __truediv__(self, other):
        return self

    def __mul__(self, other):
        return self

    def backward(self) -> None:
        self.recorder.batch += 1
        self.recorder.events.append(("backward", self.recorder.batch))


def _run(source: str, k: int, n: int) -> _Recorder:
    recorder = _Recorder()
    namespace: dict = {"loss_fn": lambda out, y: _Loss(recorder)}
    exec(compile(source, "<generated>", "exec"), namespace)
    namespace["train"](lambda x: x, [(i, i) for i in range(n)], recorder, k)
    return recorder


def expected_codes(loop: Loop) -> set[str]:
    """What RULES.md prescribes, read off runs of the program.

    GA202: some pass leaves micro-batches unstepped and no pass steps a partial last
    window (a clause that steps the tail in some configuration is an end-of-data clause,
    RULES.md *guard*); GA203: some pass steps a partial last window divided by `k`."""
    expected: set[str] = set()
    source = loop.source()
    unstepped = partial_stepped = False
    for k in ((4,) if loop.literal_k else (2, 3, 4)):
        for n in (k - 1, 3 * k, 3 * k + 1, 4 * k - 1):
            recorder = _run(source, k, n)
            steps = [batch for kind, batch in recorder.events if kind == "step"]
            if loop.clear == "every":
                return {"GA102"}  # every micro-batch's gradient is wiped before its backward
            if n >= 2 * k and steps and steps[0] != k:
                expected.add("GA104")
            if not steps or steps[-1] != n:
                unstepped = True
            elif n - ([0] + steps)[-2] < k:
                # stepped because it is the last (a longer pass would not step there), not by the period
                longer = _run(source, k, n + 4 * k)
                if ("step", n) not in longer.events:
                    partial_stepped = True
    if unstepped and not partial_stepped:
        expected.add("GA202")
    if partial_stepped and loop.divided:
        expected.add("GA203")
    return expected


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(loops)
def test_findings_match_a_run_of_the_loop(loop: Loop) -> None:
    source = loop.source()
    expected = expected_codes(loop)
    if "GA102" in expected:
        # With the gradients wiped on every micro-batch, window shapes are moot: only GA102 is asserted.
        found = {f.code for f in lint_source(source.encode(), Selection(select=("GA102",)))[1]}
        assert found == {"GA102"}, source
        return
    found = {f.code for f in lint_source(source.encode(), Selection(select=CODES))[1]}
    assert found == expected, f"expected {sorted(expected)}, got {sorted(found)}\n{source}"


def test_generated_programs_run() -> None:
    loop = Loop("enum0", "eq", "len", True, "boundary", False)
    assert "optimizer.step()" in loop.source()
    recorder = _run(loop.source(), 4, 10)
    assert [b for kind, b in recorder.events if kind == "step"] == [4, 8, 10]
    assert expected_codes(loop) == {"GA203"}
    assert textwrap.dedent(loop.source()).startswith("def train")
