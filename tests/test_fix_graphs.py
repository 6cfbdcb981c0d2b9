"""GA301's split of summed losses keeps the gradients and the logged value.

The fixed loop backpropagates each model's loss as soon as it exists; run on
the same models and data, it must leave the same `.grad` on every parameter
at every step as the original sum did, and log the same combined loss.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from gacclint.fixes.apply import fix_source  # noqa: E402
from gacclint.selection import Selection  # noqa: E402

SETUP = """\
import torch
from torch import nn

torch.manual_seed(0)
xs = torch.randn(24, 3)
ys = xs @ torch.tensor([[1.0], [-2.0], [0.5]])
loader = [(xs[i:i + 4], ys[i:i + 4]) for i in range(0, 24, 4)]
model_a, model_b = nn.Linear(3, 1), nn.Linear(3, 1)
loss_fn = nn.MSELoss()
k = 2
grads, logged = [], []
"""

ENSEMBLE = """\
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model_a(x), y) + 0.5 * loss_fn(model_b(x), y)
    (loss / k).backward()
    logged.append(loss.item())
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        grads.append([p.grad.clone() for p in (*model_a.parameters(), *model_b.parameters())])
        for p in (*model_a.parameters(), *model_b.parameters()):
            p.grad = None
"""


def run(loop: str) -> dict:
    names: dict = {}
    exec(compile(SETUP + loop, "<loop>", "exec"), names)  # noqa: S102 - the test's own snippet
    return names


def test_split_losses_give_the_same_gradients_and_log_the_same_value() -> None:
    outcome = fix_source(ENSEMBLE.encode(), Selection(select=("GA301",)))
    fixed = outcome.fixed.decode()
    assert [f.code for f in outcome.applied] == ["GA301"], fixed
    assert "    loss_2 = 0.5 * loss_fn(model_b(x), y)\n" in fixed and "loss = (loss_1 + loss_2).detach()" in fixed, fixed
    before, after = run(ENSEMBLE), run(fixed)
    assert before["logged"] == pytest.approx(after["logged"])
    assert len(before["grads"]) == len(after["grads"]) == 3
    for old, new in zip(before["grads"], after["grads"]):
        for a, b in zip(old, new):
            torch.testing.assert_close(a, b)
