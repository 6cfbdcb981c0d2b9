"""Generated buggy loops, fixed, then run: every step applies the large-batch gradient.

Hypothesis composes a runnable accumulation loop from independent choices:
the boundary's spelling (a counter from 0 or from 1, `enumerate(loader, 1)`),
where the gradients are cleared (never, every micro-batch, just before the
step, a `for p in model.parameters()` clear, right after the step), how the
loss is scaled (not at all, by `k` in a statement or inside the backward, by
the real window), whether the end-of-data clause is there, GradScaler order
(clip before `unscale_`, `update()` every micro-batch) and a scheduler
stepped every micro-batch. `fix_source` with unsafe fixes must leave no
fixable finding and converge; the fixed script, run under
`tests/gradcheck.py`, must step the mean gradient of every window and step
every micro-batch; a second fix changes nothing; and a loop that was correct
to begin with is not changed at all. The example count is bounded so the
test stays well under a minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from gradcheck import check_recording, run_and_record  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gacclint.engine import lint_source  # noqa: E402
from gacclint.fixes.apply import fix_source  # noqa: E402
from gacclint.selection import Selection  # noqa: E402

PREAMBLE = """\
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
features = torch.randn(40, 3)
targets = features @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1
dataset = TensorDataset(features, targets)
loader = DataLoader(dataset, batch_size=4, shuffle=False)
model = nn.Linear(3, 1)
loss_fn = nn.MSELoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
{k_name} = 4
"""


@dataclass(frozen=True)
class Loop:
    k_name: str  # how the accumulation count is spelled
    from_one: bool  # enumerate(loader, 1) and `i % k == 0`
    off_by_one: bool  # `i % k == 0` with a counter from 0 (GA104)
    tail: bool  # the end-of-data clause is there
    clear: str  # none | micro-batch | parameters | before-step | after-step
    scaling: str  # none | statement | backward | window
    scaler: str  # none | ok | clip-before-unscale | update-every-micro-batch
    scheduler: str  # none | micro-batch | block

    @property
    def correct(self) -> bool:
        return (not self.off_by_one and self.tail and self.clear == "after-step" and self.scaling == "window"
                and self.scaler in ("none", "ok") and self.scheduler != "micro-batch")

    def source(self) -> str:
        k = self.k_name
        counter = "i"
        header = "for i, (x, y) in enumerate(loader, 1):" if self.from_one else "for i, (x, y) in enumerate(loader):"
        position = f"({counter} - 1)" if self.from_one else counter
        last = counter if self.from_one else f"({counter} + 1)"
        if self.from_one:
            test = f"{counter} % {k} == 0"
        elif self.off_by_one:
            test = f"{counter} % {k} == 0"
        else:
            test = f"({counter} + 1) % {k} == 0"
        if self.tail:
            test += f" or {last} == len(loader)"
        lines = [PREAMBLE.format(k_name=k)]
        if self.scheduler != "none":
            lines.append("scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)\n")
        if self.scaler != "none":
            lines.append('scaler = torch.amp.GradScaler("cpu")\n')
        lines.append("\nfor epoch in range(2):\n")
        body = [header]
        if self.clear == "micro-batch":
            body.append("    optimizer.zero_grad()")
        elif self.clear == "parameters":
            body += ["    for p in model.parameters():", "        p.grad = None"]
        body.append("    loss = loss_fn(model(x), y)")
        scaled = "loss"
        if self.scaling == "statement":
            body.append(f"    loss = loss / {k}")
        elif self.scaling == "backward":
            scaled = f"loss / {k}"
        elif self.scaling == "window":
            body.append(f"    window = min({k}, len(loader) - ({position} // {k}) * {k})")
            scaled = "loss / window"
        if self.scaler != "none":
            body.append(f"    scaler.scale({scaled}).backward()")
        else:
            body.append(f"    ({scaled}).backward()" if scaled != "loss" else "    loss.backward()")
        if self.scaler == "update-every-micro-batch":
            body.append("    scaler.update()")
        if self.scheduler == "micro-batch":
            body.append("    scheduler.step()")
        body.append(f"    if {test}:")
        if self.clear == "before-step":
            body.append("        optimizer.zero_grad()")
        if self.scaler == "clip-before-unscale":
            body.append("        torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)")
        if self.scaler != "none":
            body.append("        scaler.step(optimizer)")
            if self.scaler != "update-every-micro-batch":
                body.append("        scaler.update()")
        else:
            body.append("        optimizer.step()")
        if self.scheduler == "block":
            body.append("        scheduler.step()")
        if self.clear == "after-step":
            body.append("        optimizer.zero_grad()")
        lines.append("".join(f"    {line}\n" for line in body))
        return "".join(lines)


loops = st.builds(
    Loop,
    k_name=st.sampled_from(["k", "accumulation_steps", "grad_accum"]),
    from_one=st.booleans(),
    off_by_one=st.booleans(),
    tail=st.booleans(),
    clear=st.sampled_from(["none", "micro-batch", "parameters", "before-step", "after-step"]),
    scaling=st.sampled_from(["none", "statement", "backward", "window"]),
    scaler=st.sampled_from(["none", "ok", "clip-before-unscale", "update-every-micro-batch"]),
    scheduler=st.sampled_from(["none", "micro-batch", "block"]),
).filter(lambda loop: not (loop.from_one and loop.off_by_one))

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def fixed_and_run(source: str, tmp_path: Path) -> tuple[str, object]:
    outcome = fix_source(source.encode(), Selection(), unsafe=True)
    fixed = outcome.fixed.decode()
    assert outcome.converged and not outcome.dropped, (fixed, [(d.finding.code, d.reason) for d in outcome.dropped])
    left = [(f.code, f.row) for f in lint_source(outcome.fixed, Selection())[1]]
    assert not left, (left, fixed)
    assert not fix_source(outcome.fixed, Selection(), unsafe=True).changed, fixed
    script = tmp_path / "train.py"
    script.write_text(fixed, encoding="utf-8")
    return fixed, check_recording(run_and_record(script))


@SETTINGS
@given(loop=loops)
def test_a_generated_buggy_loop_is_fixed_to_the_large_batch_gradient(loop: Loop, tmp_path_factory) -> None:
    source = loop.source()
    fixed, report = fixed_and_run(source, tmp_path_factory.mktemp("loop"))
    assert report.ok, f"{loop}\n--- fixed:\n{fixed}\n{report.table()}"
    assert sum(step.samples for step in report.steps) == 2 * 40, report.table()
    if loop.correct:
        assert fixed == source, "a correct loop was changed"


@pytest.mark.parametrize("from_one", [False, True], ids=["from-0", "from-1"])
def test_a_correct_generated_loop_is_left_alone(from_one: bool) -> None:
    loop = Loop("k", from_one, False, True, "after-step", "window", "ok", "block")
    source = loop.source()
    assert lint_source(source.encode(), Selection())[1] == []
    assert not fix_source(source.encode(), Selection(), unsafe=True).changed
