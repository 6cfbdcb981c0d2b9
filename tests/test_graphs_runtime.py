"""GA301-GA303 fixes keep the maths and release the graphs, measured on CPU.

Each script in fixtures/graphs runs in this process with two global probes:
an optimizer step pre-hook records every parameter's gradient at every step,
and `torch.autograd.graph.saved_tensors_hooks` counts the tensors autograd
saves for backward, live, so the peak number and bytes held at once are
known. The fixed script must produce the same gradients at every step as the
original (the rewrite does not change the maths), and:
- GA301: a lower peak of saved tensors (one task's graph alive at a time);
- GA302: the original raises (a second backward through a freed graph), the
  fixed one steps the gradients of both losses;
- GA303: after the loop, the accumulator no longer reaches any autograd node.
"""

from __future__ import annotations

import runpy
from dataclasses import dataclass, field
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch.optim.optimizer import register_optimizer_step_pre_hook  # noqa: E402

GRAPHS = Path(__file__).resolve().parent.parent / "fixtures" / "graphs"


@dataclass
class SavedTensors:
    """Tensors saved for backward that are alive now, and the most at once."""

    live: int = 0
    live_bytes: int = 0
    peak: int = 0
    peak_bytes: int = 0

    def pack(self, tensor):
        return _Saved(self, tensor)

    @staticmethod
    def unpack(saved: "_Saved"):
        return saved.tensor


class _Saved:
    def __init__(self, counter: SavedTensors, tensor) -> None:
        self.counter, self.tensor = counter, tensor
        self.bytes = tensor.numel() * tensor.element_size()
        counter.live += 1
        counter.live_bytes += self.bytes
        counter.peak = max(counter.peak, counter.live)
        counter.peak_bytes = max(counter.peak_bytes, counter.live_bytes)

    def __del__(self) -> None:
        self.counter.live -= 1
        self.counter.live_bytes -= self.bytes


@dataclass
class Run:
    steps: list[list] = field(default_factory=list)  # per step: every parameter's grad
    saved: SavedTensors = field(default_factory=SavedTensors)
    namespace: dict = field(default_factory=dict)


def run(script: Path) -> Run:
    result = Run()

    def record(optimizer, args, kwargs):
        result.steps.append([p.grad.detach().clone() for group in optimizer.param_groups for p in group["params"]])

    handle = register_optimizer_step_pre_hook(record)
    try:
        with torch.autograd.graph.saved_tensors_hooks(result.saved.pack, SavedTensors.unpack):
            result.namespace = runpy.run_path(str(script), run_name="__main__")
    finally:
        handle.remove()
    return result


def assert_same_gradients(first: Run, second: Run) -> None:
    assert len(first.steps) == len(second.steps) > 0
    for index, (a, b) in enumerate(zip(first.steps, second.steps)):
        for grad_a, grad_b in zip(a, b, strict=True):
            assert torch.allclose(grad_a, grad_b, rtol=1e-6, atol=1e-7), f"step {index} differs"


def reachable_nodes(value) -> int:
    """Autograd nodes still reachable from `value` (0 for numbers and detached tensors)."""
    if not isinstance(value, torch.Tensor) or value.grad_fn is None:
        return 0
    seen, stack = set(), [value.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)


@pytest.mark.parametrize("name", ["ga301_two_tasks", "ga301_three_tasks", "ga301_halved_tasks"])
def test_ga301_fix_keeps_gradients_and_lowers_peak_saved_tensors(name: str) -> None:
    original = run(GRAPHS / f"{name}.py")
    fixed = run(GRAPHS / f"{name}.fixed.py")
    assert_same_gradients(original, fixed)
    assert fixed.saved.peak_bytes < original.saved.peak_bytes
    assert fixed.saved.peak < original.saved.peak
    print(f"{name}: peak saved tensors {original.saved.peak} ({original.saved.peak_bytes} B) -> "
          f"{fixed.saved.peak} ({fixed.saved.peak_bytes} B)")


def test_ga302_original_raises_and_fixed_steps_both_losses() -> None:
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        run(GRAPHS / "ga302_edition2.py")
    fixed = run(GRAPHS / "ga302_edition2.fixed.py")
    # Same seed, data and models as the two-task script: the gradients of loss1 + loss2.
    assert_same_gradients(run(GRAPHS / "ga301_two_tasks.py"), fixed)


def test_ga303_fix_keeps_gradients_and_drops_the_kept_graphs() -> None:
    original = run(GRAPHS / "ga303_running_loss.py")
    fixed = run(GRAPHS / "ga303_running_loss.fixed.py")
    assert_same_gradients(original, fixed)
    kept = reachable_nodes(original.namespace["running_loss"])
    assert kept > len(original.steps)  # at least one node per iteration is still alive
    assert reachable_nodes(fixed.namespace["running_loss"]) == 0
    assert float(fixed.namespace["running_loss"]) == pytest.approx(original.namespace["running_loss"].item())
