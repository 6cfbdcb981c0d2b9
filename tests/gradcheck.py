"""Run a training script and check every optimizer step against the large batch.

Gradient accumulation is correct when the gradient an optimizer step applies
equals the gradient of the loss over *all* samples of its window (the
micro-batches since the previous step) computed in one large batch. The
linter proves this statically for the shapes it knows; this module proves it
by running the script, so the runnable fixtures can show that each buggy
script really computes the wrong update and that its fixed version does not.

This is the test suite's *oracle*, deliberately independent of `gacclint
verify` (``gacclint/runtime``): verify rewrites the loop and sums each
micro-batch's own gradient, this harness only watches torch's global hooks and
recomputes every window as one large float64 batch on a copy of the model.
``tests/test_runnable.py`` checks that the two agree step by step, which is
the evidence that verify's reference is the true large-batch gradient. Use
``gacclint.runtime`` for anything else; this needs the fixture conventions
below.

Two phases, kept apart so that the recording can be inspected on its own:

* :func:`run_and_record` executes the script in-process with torch's global
  hooks installed; it records every parameter's value and gradient as each
  optimizer step is about to run, and the sample count of each forward call.
* :func:`check_recording` replays each step's window on a float64 copy of the
  model at that step's parameters and compares gradients.

Conventions a script must follow (the runnable fixtures do): module-level
names ``model`` (the trained ``nn.Module``), ``dataset`` (a ``TensorDataset``
of inputs and targets, iterated in order, e.g. ``DataLoader(shuffle=False)``)
and ``loss_fn`` (mean reduction). The harness maps forward calls to dataset
rows sequentially and wraps around at the end of the dataset for each new
epoch; it cannot see shuffling, sampling or skipped batches.
"""

from __future__ import annotations

import copy
import math
import runpy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import TensorDataset

__all__ = [
    "FP32_TOLERANCE",
    "ForwardCall",
    "ParamSnapshot",
    "Recording",
    "Report",
    "StepCheck",
    "StepSnapshot",
    "Tolerance",
    "TrainingSetup",
    "check_recording",
    "compare_gradients",
    "recorded_gradients",
    "reference_gradients",
    "run_and_record",
]

Gradients = dict[str, torch.Tensor]
"""Float64 gradients keyed by parameter name (``model.named_parameters()``)."""


# --------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSnapshot:
    """One parameter as an optimizer step was about to see it."""

    parameter: torch.Tensor
    """The live parameter: used only for its identity, to find its name in the model."""
    value: torch.Tensor
    """Float64 copy of the value the step's gradient should have been computed at."""
    grad: torch.Tensor | None
    """Float64 copy of ``.grad``; ``None`` after ``zero_grad(set_to_none=True)``."""


@dataclass(frozen=True)
class StepSnapshot:
    """The state of one ``optimizer.step()`` call, taken just before it ran."""

    index: int
    params: tuple[ParamSnapshot, ...]


@dataclass(frozen=True)
class ForwardCall:
    """A top-level module call: ``model(x)``, but also ``loss_fn(pred, y)``.

    Every top-level call is kept, because which module is "the model" is only
    known from the script's globals once it has finished.
    """

    module: nn.Module
    samples: int | None
    """Leading dimension of the first tensor argument; ``None`` if there is none."""
    next_step: int
    """Index of the step this forward preceded (``len(steps)`` if none came after)."""


@dataclass(frozen=True)
class Recording:
    """Everything :func:`run_and_record` saw while the script ran."""

    script_path: Path
    script_globals: dict[str, Any]
    steps: tuple[StepSnapshot, ...]
    forwards: tuple[ForwardCall, ...]

    def forwards_of(self, module: nn.Module) -> list[ForwardCall]:
        """The top-level calls of ``module``, in order."""
        return [call for call in self.forwards if call.module is module]


@dataclass
class _Recorder:
    """The hook callbacks and the state they fill while the script runs."""

    steps: list[StepSnapshot] = field(default_factory=list)
    forwards: list[ForwardCall] = field(default_factory=list)
    depth: int = 0
    """Module calls currently running: submodules of the model run at depth > 0."""

    def before_step(
        self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any
    ) -> None:
        params = tuple(
            _snapshot(param)
            for group in optimizer.param_groups
            for param in group["params"]
        )
        self.steps.append(StepSnapshot(index=len(self.steps), params=params))

    def before_forward(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        # A forward without autograd (evaluation) adds nothing to any gradient,
        # so it belongs to no window.
        if self.depth == 0 and torch.is_grad_enabled():
            self.forwards.append(
                ForwardCall(
                    module=module, samples=_leading_dim(args), next_step=len(self.steps)
                )
            )
        self.depth += 1

    def after_forward(
        self, module: nn.Module, args: tuple[Any, ...], output: Any
    ) -> None:
        self.depth -= 1


def _snapshot(param: torch.Tensor) -> ParamSnapshot:
    grad = param.grad
    return ParamSnapshot(
        parameter=param,
        value=param.detach().to(dtype=torch.float64, copy=True),
        grad=None if grad is None else grad.detach().to(dtype=torch.float64, copy=True),
    )


def _leading_dim(args: tuple[Any, ...]) -> int | None:
    for arg in args:
        if isinstance(arg, torch.Tensor):
            return arg.shape[0] if arg.dim() > 0 else None
    return None


def run_and_record(script_path: str | Path) -> Recording:
    """Run ``script_path`` as ``__main__`` in this process and record its steps.

    The hooks are torch's *global* ones, so the script needs no change and no
    cooperation; they are removed afterwards even when the script raises, so
    that one recording never leaks into the next (or into other tests).
    """
    path = Path(script_path)
    recorder = _Recorder()
    handles = [
        register_optimizer_step_pre_hook(recorder.before_step),
        register_module_forward_pre_hook(recorder.before_forward),
        # always_call keeps the depth right when a forward raises.
        register_module_forward_hook(recorder.after_forward, always_call=True),
    ]
    try:
        script_globals = runpy.run_path(str(path), run_name="__main__")
    finally:
        for handle in handles:
            handle.remove()
    return Recording(
        script_path=path,
        script_globals=script_globals,
        steps=tuple(recorder.steps),
        forwards=tuple(recorder.forwards),
    )


# --------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """How close a step's gradient must be to the large-batch one.

    A parameter passes when ``max|g - ref| <= atol + rtol * max|ref|``: the
    bound is on the whole tensor (infinity norm), not per element, so a
    gradient entry that happens to be near zero cannot fail on rounding noise.
    """

    rtol: float
    atol: float


FP32_TOLERANCE = Tolerance(rtol=1e-5, atol=1e-7)
"""For fp32 models: summing ``k`` fp32 micro-batch gradients instead of one
float64 large batch costs 1e-8 to 2e-6 relative on the runnable fixtures (more
as gradients shrink late in training), far below the smallest real
accumulation bug, a factor such as ``k`` or ``r / k``."""


@dataclass(frozen=True)
class StepCheck:
    """One optimizer step compared with its large-batch reference."""

    step: int
    micro_batch_sizes: tuple[int, ...]
    """Samples in each forward of the window, in order."""
    rows: tuple[int, ...]
    """Dataset rows of the window, in order (the large batch)."""
    epochs: tuple[int, ...]
    """Epochs (0-based passes over the dataset) the window's samples come from."""
    max_rel_error: float
    """Largest ``max|g - ref| / max|ref|`` over the parameters; ``inf`` for an
    empty window."""
    scale: float
    """Least-squares factor ``s`` in ``g ~ s * ref``: 1 when right, ``k`` for an
    unscaled loss, ``r / k`` for a partial window divided by ``k``, 0 when the
    gradient was cleared before the step (``nan`` for an empty window)."""
    ok: bool

    @property
    def micro_batches(self) -> int:
        return len(self.micro_batch_sizes)

    @property
    def samples(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class Report:
    """Per-step comparison of a recording with the large-batch reference."""

    steps: tuple[StepCheck, ...]
    never_stepped: int
    """Micro-batches run after the last step: their gradients were never applied."""

    @property
    def ok(self) -> bool:
        """Every step matched its reference and every micro-batch was stepped."""
        return self.never_stepped == 0 and all(step.ok for step in self.steps)

    def table(self) -> str:
        """A human-readable table, meant for assertion messages."""
        lines = [
            f"{'step':>4} {'micro-batches':>13} {'samples':>7} {'epochs':>6} "
            f"{'scale':>8} {'max rel err':>11}  ok"
        ]
        for row in self.steps:
            epochs = ",".join(str(epoch) for epoch in row.epochs)
            verdict = "yes" if row.ok else "NO"
            lines.append(
                f"{row.step:>4} {row.micro_batches:>13} {row.samples:>7} {epochs:>6} "
                f"{row.scale:>8.4f} {row.max_rel_error:>11.2e}  {verdict}"
            )
        lines.append(f"never stepped: {self.never_stepped} micro-batch(es)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


@dataclass(frozen=True)
class TrainingSetup:
    """The script's objects the check needs, found by the fixture convention."""

    model: nn.Module
    dataset: TensorDataset
    loss_fn: nn.Module

    @classmethod
    def from_globals(cls, names: Mapping[str, Any]) -> TrainingSetup:
        """Take ``model``, ``dataset`` and ``loss_fn`` from a script's globals."""
        return cls(
            model=names["model"], dataset=names["dataset"], loss_fn=names["loss_fn"]
        )


def check_recording(
    recording: Recording,
    script_globals: Mapping[str, Any] | None = None,
    tolerance: Tolerance = FP32_TOLERANCE,
) -> Report:
    """Compare each recorded step with the gradient of its window as one large batch.

    ``script_globals`` defaults to the globals the script ended with; it must
    hold ``model``, ``dataset`` and ``loss_fn`` (see the module docstring).
    """
    setup = TrainingSetup.from_globals(
        recording.script_globals if script_globals is None else script_globals
    )
    windows = _windows(recording.forwards_of(setup.model), len(recording.steps))
    size = len(setup.dataset)
    consumed = 0  # samples fed to the model so far, across epochs
    checks: list[StepCheck] = []
    for snapshot, window in zip(recording.steps, windows[:-1], strict=True):
        positions = range(consumed, consumed + sum(window))
        consumed += sum(window)
        rows = tuple(position % size for position in positions)
        epochs = tuple(sorted({position // size for position in positions}))
        checks.append(
            _check_step(setup, snapshot, tuple(window), rows, epochs, tolerance)
        )
    return Report(steps=tuple(checks), never_stepped=len(windows[-1]))


def _windows(calls: Sequence[ForwardCall], step_count: int) -> list[list[int]]:
    """Sample counts of the model's forwards, grouped by the step they preceded.

    Has ``step_count + 1`` entries: the last holds the forwards after the last step.
    """
    windows: list[list[int]] = [[] for _ in range(step_count + 1)]
    for call in calls:
        if call.samples is None:
            raise ValueError(
                "a forward of the model had no tensor argument to count samples "
                f"from: {call}"
            )
        windows[call.next_step].append(call.samples)
    return windows


def _check_step(
    setup: TrainingSetup,
    snapshot: StepSnapshot,
    micro_batch_sizes: tuple[int, ...],
    rows: tuple[int, ...],
    epochs: tuple[int, ...],
    tolerance: Tolerance,
) -> StepCheck:
    if not rows:
        # A step with no new data re-applies stale or empty gradients: there is
        # no large batch it could equal.
        return StepCheck(
            step=snapshot.index,
            micro_batch_sizes=micro_batch_sizes,
            rows=rows,
            epochs=epochs,
            max_rel_error=math.inf,
            scale=math.nan,
            ok=False,
        )
    reference = reference_gradients(setup, snapshot, rows)
    recorded = recorded_gradients(setup.model, snapshot)
    max_rel_error, scale, ok = compare_gradients(recorded, reference, tolerance)
    return StepCheck(
        step=snapshot.index,
        micro_batch_sizes=micro_batch_sizes,
        rows=rows,
        epochs=epochs,
        max_rel_error=max_rel_error,
        scale=scale,
        ok=ok,
    )


def _named_snapshots(
    model: nn.Module, snapshot: StepSnapshot
) -> Iterator[tuple[str, ParamSnapshot]]:
    """The step's parameters by model name, skipping those the step did not see."""
    by_identity = {id(param.parameter): param for param in snapshot.params}
    for name, param in model.named_parameters():
        if id(param) in by_identity:
            yield name, by_identity[id(param)]


def recorded_gradients(model: nn.Module, snapshot: StepSnapshot) -> Gradients:
    """The gradients the step applied, by parameter name (a missing ``.grad`` is 0)."""
    return {
        name: param.grad if param.grad is not None else torch.zeros_like(param.value)
        for name, param in _named_snapshots(model, snapshot)
    }


def reference_gradients(
    setup: TrainingSetup, snapshot: StepSnapshot, rows: Sequence[int]
) -> Gradients:
    """Float64 gradient of ``loss_fn(model(X[rows]), Y[rows])`` at the step's params.

    Computed on a deep copy so the script's model (and its ``.grad``) is left as
    it ended; only the parameters the step saw are returned.
    """
    named = dict(_named_snapshots(setup.model, snapshot))
    replica = copy.deepcopy(setup.model).to(torch.float64)
    params = [param for name, param in replica.named_parameters() if name in named]
    with torch.no_grad():
        for name, param in zip(named, params, strict=True):
            param.copy_(named[name].value)
    inputs, targets = setup.dataset[torch.as_tensor(rows, dtype=torch.long)]
    loss = setup.loss_fn(replica(_as_float64(inputs)), _as_float64(targets))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {
        name: torch.zeros_like(param) if grad is None else grad
        for name, param, grad in zip(named, params, grads, strict=True)
    }


def _as_float64(tensor: torch.Tensor) -> torch.Tensor:
    # Class labels and token ids must stay integers.
    return tensor.to(torch.float64) if tensor.is_floating_point() else tensor


def compare_gradients(
    recorded: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    tolerance: Tolerance = FP32_TOLERANCE,
) -> tuple[float, float, bool]:
    """``(max relative error, scale, ok)`` of ``recorded`` against ``reference``.

    See :class:`StepCheck` for what the numbers mean and :class:`Tolerance`
    for when a parameter passes.
    """
    max_rel_error = 0.0
    ok = True
    dot = norm2 = 0.0
    for name, ref in reference.items():
        got = recorded[name]
        diff = (got - ref).abs().max().item()
        ref_max = ref.abs().max().item()
        ok = ok and diff <= tolerance.atol + tolerance.rtol * ref_max
        if ref_max > 0:
            max_rel_error = max(max_rel_error, diff / ref_max)
        elif diff > 0:
            max_rel_error = math.inf
        dot += (got * ref).sum().item()
        norm2 += (ref * ref).sum().item()
    scale = dot / norm2 if norm2 > 0 else math.nan
    return max_rel_error, scale, ok
