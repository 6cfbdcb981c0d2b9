"""The runtime half of `gacclint verify`: what the rewritten loop calls.

The rewrite (:mod:`gacclint.runtime.instrument`) binds `__gacclint_probe__` to
a :class:`Probe` and calls it at the loop's iterable, its backward, its steps
and its accumulation arithmetic. The probe also installs three of torch's
global hooks while the code runs (removed afterwards, even when the code
raises): an optimizer step pre-hook, where each step's gradients are compared;
a post-hook, to stop after `--steps N`; and a module forward pre-hook, which
notes autocast, BatchNorm in training mode, and a micro-batch's sample count
when its iterable item did not show one.

For every backward, the probe needs the gradient of the *raw* loss (the
backward loss with the accumulation scaling walked back, see the rewrite) with
respect to the leaves the backward will accumulate into. The raw loss is the
backward loss times the walked-back factors `c` (`k`, `window`, `N / n`), so
the probe takes `torch.autograd.grad` of the backward loss itself (times the
GradScaler's current scale when one is passed, as the user's backward is) on
the same graph and multiplies by `c` in float64: the same value as the
gradient of the raw loss, but rounded exactly like the user's own backward, so
that under fp16/bf16 autocast the comparison measures the accumulation and not
two different half-precision roundings. (When a factor is not a number, e.g.
a per-sample weight tensor, the raw loss itself is differentiated.) It adds
the result, in float64, to two sums per parameter: weighted by the micro-batch's sample
count (the large-batch reference is that sum over the window's samples) and
unweighted (to explain a mismatch: see :mod:`gacclint.runtime.report`). At a
step, each parameter's `.grad` (already unscaled when the step comes from
`scaler.step`) is compared with the reference, and the parameter's sums start
again; when the loop clips gradients, the copy taken as they reached the last
clip before the step is compared instead (clipping is what the large batch
would get too). Memory: two float64 copies of the trained parameters, one more
copy in the `.grad` dtype for loops that clip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from gacclint.runtime.instrument import LEFT, RIGHT, Site
from gacclint.runtime.report import MicroBatch, Pass, Precision, StepMeasure, VerifyReport, build_report


class StopVerification(BaseException):
    """`--steps N` was reached. A BaseException, like KeyboardInterrupt, so that
    the script's own `except Exception:` does not swallow it."""


class ProbeFailure(BaseException):
    """The probe could not measure what the loop does (the message says why).
    A BaseException so that the script's `except Exception:` cannot hide it."""


@dataclass
class _Sums:
    """One parameter's gradients since its last step."""

    param: torch.Tensor
    weighted: torch.Tensor
    """Sum of sample count x micro-batch gradient (float64)."""
    plain: torch.Tensor
    """Sum of micro-batch gradients (float64)."""
    start: int
    """The first micro-batch that contributed."""


@dataclass
class _Scaling:
    """`result = source / factor` (divides) or `result = source * factor`, on the way to a backward."""

    result: torch.Tensor
    source: torch.Tensor
    site: int
    factor: Any
    divides: bool


@dataclass
class _Pending:
    """An instrumented step call in progress."""

    site: int
    optimizer: Any
    k: int | None
    measures_before: int


class Probe:
    """Measures a running training loop; see the module docstring."""

    def __init__(self, sites: Sequence[Site], max_steps: int | None = None) -> None:
        self.sites = list(sites)
        self.max_steps = max_steps
        self.micro_batches: list[MicroBatch] = []
        self.passes: list[Pass] = []
        self.measures: list[StepMeasure] = []
        self.precision = Precision()
        self.batchnorm: set[str] = set()
        self.unknown_samples = False
        self.unobserved_steps = 0
        self.raw_loss_chains: dict[int, list[int]] = {}
        """Backward site -> the scale sites walked back from its loss (first time seen)."""
        self._current: MicroBatch | None = None
        self._scalings: dict[int, _Scaling] = {}
        self._sums: dict[int, _Sums] = {}
        self._stepped: set[int] = set()
        self._pending: _Pending | None = None
        self._while_runs: dict[int, Pass] = {}
        self._before_clip: dict[int, torch.Tensor | None] = {}
        """Parameter -> its gradient as it reached the last clip of the window."""
        self._clips = 0
        """Clip calls since the last step."""
        self._loss_scale = 1.0
        """The GradScaler's scale at the last backward."""
        self.clipped_steps = 0

    # -- hooks ------------------------------------------------------------------

    @contextmanager
    def installed(self) -> Iterator[Probe]:
        handles = [
            register_optimizer_step_pre_hook(self._before_step),
            register_optimizer_step_post_hook(self._after_step),
            register_module_forward_pre_hook(self._before_forward),
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    # -- what the rewritten loop calls -----------------------------------------

    def iterate(self, site: int, iterable: Iterable[Any]) -> Iterator[Any]:
        """The micro-batch loop's iterable: every item starts a micro-batch."""
        run = self._new_pass(site)
        position = 0
        for item in iterable:
            self._start(run, position, _samples_in(item))
            position += 1
            yield item
        run.length = position

    def tick(self, site: int, value: Any) -> Any:
        """A `while` loop's test: every true test starts a micro-batch."""
        if value:
            run = self._while_runs.get(site)
            if run is None:
                run = self._while_runs[site] = self._new_pass(site)
            run.length = (run.length or 0) + 1
            self._start(run, run.length - 1, None)
        return value

    def div(self, site: int, numerator: Any, divisor: Any) -> Any:
        result = numerator / divisor
        self._remember(site, result, numerator, divisor, divides=True)
        return result

    def mul(self, site: int, left: Any, right: Any, mask: int) -> Any:
        result = left * right
        if mask & RIGHT:
            self._remember(site, result, left, right, divides=False)
        if mask & LEFT:
            self._remember(site, result, right, left, divides=False)
        return result

    def backward_loss(self, site: int, loss: Any, scaler: Callable[[], Any] | None = None) -> Any:
        """Called with the loss just before the user's backward runs on it; returns it unchanged."""
        if not isinstance(loss, torch.Tensor) or loss.grad_fn is None:
            return loss  # the user's backward will say what is wrong
        try:
            self._measure_backward(site, loss, scaler)
        except ProbeFailure:
            raise
        except Exception as error:  # noqa: BLE001 - reported as "could not verify"
            # The probe differentiates the user's own graph: what fails here fails in their backward too.
            raise ProbeFailure(f"the backward at line {self._line(site)} cannot run: "
                               f"{type(error).__name__}: {error}") from error
        return loss

    def clipping(self, site: int) -> None:
        """Called just before an instrumented clip call: keep the gradients it is about to change."""
        self._clips += 1
        for sums in self._sums.values():
            grad = sums.param.grad
            self._before_clip[id(sums.param)] = None if grad is None else _dense(grad).clone()

    def stepping(self, site: int, optimizer: Callable[[], Any] | None, k: Callable[[], Any] | None) -> None:
        """Called just before an instrumented step call."""
        self._pending = _Pending(site, _quietly(optimizer), _as_int(_quietly(k)), len(self.measures))

    def stepped(self, value: Any) -> Any:
        """Called with the step call's result, after it returned."""
        pending, self._pending = self._pending, None
        if pending is not None and len(self.measures) == pending.measures_before:
            # The call ran but no optimizer stepped: a GradScaler skipped it (inf/NaN).
            optimizer = pending.optimizer
            if isinstance(optimizer, torch.optim.Optimizer):
                params = _parameters(optimizer)
                if any(id(p) in self._sums for p in params):
                    window = self._window(params)
                    self.measures.append(StepMeasure(index=len(self.measures), site=pending.site, k=pending.k,
                                                     window=window, skipped=True))
                    self._close(optimizer, params)
        self._maybe_stop()
        return value

    # -- the work ------------------------------------------------------------------

    def _new_pass(self, site: int | None) -> Pass:
        run = Pass(index=len(self.passes), site=site)
        self.passes.append(run)
        return run

    def _start(self, run: Pass, position: int, samples: int | None) -> MicroBatch:
        micro_batch = MicroBatch(index=len(self.micro_batches), pass_index=run.index, position=position,
                                 samples=samples)
        self.micro_batches.append(micro_batch)
        self._current = micro_batch
        self._scalings.clear()
        return micro_batch

    def _remember(self, site: int, result: Any, source: Any, factor: Any, divides: bool) -> None:
        if (isinstance(result, torch.Tensor) and result.requires_grad
                and isinstance(source, torch.Tensor) and source.requires_grad
                and not (isinstance(factor, torch.Tensor) and factor.requires_grad)):
            self._scalings.setdefault(id(result), _Scaling(result, source, site, factor, divides))

    def _raw(self, loss: torch.Tensor) -> tuple[torch.Tensor, list[int], float | None]:
        """Walk back through the recorded accumulation scalings to the raw loss.

        Returns the raw loss, the scale sites walked through, and `c` with
        `raw = c * loss` (None when a factor is not a plain number).
        """
        chain: list[int] = []
        tensor = loss
        factor: float | None = 1.0
        while len(chain) <= 16:
            entry = self._scalings.get(id(tensor))
            if entry is None or entry.result is not tensor:
                break
            chain.append(entry.site)
            value = _number(entry.factor)
            if factor is not None and value is not None and value != 0:
                factor = factor * value if entry.divides else factor / value
            else:
                factor = None
            tensor = entry.source
        return tensor, chain, factor

    def _measure_backward(self, site: int, loss: torch.Tensor, scaler: Callable[[], Any] | None) -> None:
        micro_batch = self._current
        if micro_batch is None:  # a backward before any iteration: its own pass
            micro_batch = self._start(self._new_pass(None), 0, None)
        raw, chain, factor = self._raw(loss)
        self.raw_loss_chains.setdefault(site, chain)
        leaves = _leaves(loss)
        if not leaves:
            return
        if micro_batch.backwards == 0:
            micro_batch.clean_before = _all_clear(leaves)
        if raw.numel() != 1 or loss.numel() != 1:
            raise ProbeFailure(f"the loss at line {self._line(site)} is not a scalar: verify needs one loss value "
                               "per micro-batch")
        differentiated, factor = (loss, factor) if factor is not None else (raw, 1.0)
        scale = self._loss_scale = self._scale_of(scaler)
        target = (differentiated * scale if scale != 1.0 else differentiated).reshape(())
        grads = torch.autograd.grad(target, leaves, retain_graph=True, allow_unused=True)
        factor /= scale
        samples = micro_batch.samples
        if samples is None:
            self.unknown_samples = True
            samples = 1
        with torch.no_grad():
            for leaf, grad in zip(leaves, grads):
                if grad is None:
                    continue
                gradient = _dense(grad).to(torch.float64)
                if factor != 1.0:
                    gradient = gradient * factor
                sums = self._sums.get(id(leaf))
                if sums is None:
                    sums = self._sums[id(leaf)] = _Sums(leaf, torch.zeros_like(gradient), torch.zeros_like(gradient),
                                                        micro_batch.index)
                sums.weighted.add_(gradient, alpha=samples)
                sums.plain.add_(gradient)
        micro_batch.backwards += 1

    def _scale_of(self, scaler: Callable[[], Any] | None) -> float:
        instance = _quietly(scaler)
        if instance is None:
            return 1.0
        enabled = getattr(instance, "is_enabled", None)
        if callable(enabled) and not enabled():
            return 1.0
        get_scale = getattr(instance, "get_scale", None)
        if not callable(get_scale):
            return 1.0
        self.precision.scaler = True
        return float(get_scale())

    def _window(self, params: Sequence[torch.Tensor]) -> tuple[int, ...]:
        starts = [self._sums[id(p)].start for p in params if id(p) in self._sums]
        if not starts:
            return ()
        return tuple(mb.index for mb in self.micro_batches[min(starts):] if mb.backwards)

    def _close(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> None:
        for param in params:
            self._sums.pop(id(param), None)
            self._before_clip.pop(id(param), None)
        self._stepped.add(id(optimizer))
        self._clips = 0

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        params = _parameters(optimizer)
        pending = self._pending
        if pending is None and not any(id(p) in self._sums for p in params):
            self.unobserved_steps += 1  # a step outside the instrumented loops
            return
        try:
            measure = self._compare(optimizer, params, pending)
        except Exception as error:  # noqa: BLE001
            raise ProbeFailure(f"could not compare the gradients at a step: {type(error).__name__}: {error}") from error
        self.measures.append(measure)
        self._close(optimizer, params)

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._pending is None:
            self._maybe_stop()

    def _maybe_stop(self) -> None:
        if self.max_steps is not None and len(self.measures) >= self.max_steps:
            raise StopVerification

    def _compare(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                 pending: _Pending | None) -> StepMeasure:
        window = self._window(params)
        samples = sum(self.micro_batches[index].samples or 1 for index in window) or 1
        diffs: list[torch.Tensor] = []
        refs: list[torch.Tensor] = []
        dots: list[torch.Tensor] = []  # g.ref, ref.ref, g.E, E.E, g.g per parameter
        clipped = any(id(param) in self._before_clip for param in params)
        self.clipped_steps += clipped
        for param in params:
            if param.numel() == 0:
                continue
            grad = self._before_clip[id(param)] if clipped and id(param) in self._before_clip else param.grad
            self.precision.grad_dtypes.add(str(grad.dtype if grad is not None else param.dtype).removeprefix("torch."))
            g = (_dense(grad).to(torch.float64) if grad is not None
                 else torch.zeros(param.shape, dtype=torch.float64, device=param.device))
            sums = self._sums.get(id(param))
            if sums is not None:
                reference = sums.weighted / samples
                plain = sums.plain
            else:
                reference = plain = torch.zeros_like(g)
            diffs.append((g - reference).abs().max())
            refs.append(reference.abs().max())
            dots += [(g * reference).sum(), (reference * reference).sum(), (g * plain).sum(), (plain * plain).sum(),
                     (g * g).sum()]
        values = _floats(diffs + refs + dots)
        count = len(diffs)
        totals = [math.fsum(values[2 * count + j::5]) for j in range(5)]
        return StepMeasure(
            index=len(self.measures), site=pending.site if pending else None, k=pending.k if pending else None,
            window=window, params=tuple(zip(values[:count], values[count:2 * count])),
            g_ref=totals[0], ref_ref=totals[1], g_sum=totals[2], sum_sum=totals[3], g_g=totals[4],
            earlier_step=id(optimizer) in self._stepped, clips=self._clips if clipped else 0,
            loss_scale=self._loss_scale)

    def _before_forward(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if not torch.is_grad_enabled():
            return  # evaluation: adds nothing to any gradient
        if isinstance(module, _BatchNorm) and module.training:
            self.batchnorm.add(type(module).__name__)
        for device_type in ("cpu", "cuda"):
            if torch.is_autocast_enabled(device_type):
                self.precision.autocast_dtypes.add(str(torch.get_autocast_dtype(device_type)).removeprefix("torch."))
        micro_batch = self._current
        if micro_batch is not None and micro_batch.samples is None and next(module.parameters(), None) is not None:
            micro_batch.samples = _samples_in(args)

    def _line(self, site: int) -> int | None:
        return self.sites[site].line if 0 <= site < len(self.sites) else None

    # -- the report ---------------------------------------------------------------------

    def report(self, *, target: str, device: str | None, error: str | None = None, stopped: bool = False,
               notes: Iterable[str] = ()) -> VerifyReport:
        return build_report(
            target=target, device=device, measures=self.measures, micro_batches=self.micro_batches,
            passes=self.passes, precision=self.precision,
            step_lines={site.index: site.line for site in self.sites if site.kind == "step"},
            raw_loss=self._raw_loss_lines(), notes=[*notes, *self._notes()], error=error,
            stopped_after=len(self.measures) if stopped else None)

    def _raw_loss_lines(self) -> list[str]:
        lines = []
        for site in self.sites:
            if site.kind != "backward" or site.index not in self.raw_loss_chains:
                continue
            chain = [self.sites[index] for index in self.raw_loss_chains[site.index]]
            if chain:
                walked = ", ".join(f"`{scale.code}` (line {scale.line})" for scale in chain)
                lines.append(f"line {site.line} `{site.code}`: the loss before {walked}")
            else:
                lines.append(f"line {site.line} `{site.code}`: the backward's loss itself "
                             "(no accumulation scaling on its path)")
        return lines

    def _notes(self) -> list[str]:
        notes = []
        if self.batchnorm:
            notes.append(f"BatchNorm in training mode ({', '.join(sorted(self.batchnorm))}): it normalises with "
                         "each micro-batch's own statistics, so no accumulation reproduces the gradient of one "
                         "large batch; steps are compared with the sample-weighted mean of the micro-batch "
                         "gradients, the best accumulation can do, and a match does not cover that difference")
        if self.clipped_steps:
            notes.append(f"{self.clipped_steps} steps clipped their gradients: they are compared as they reached "
                         "the last clip before the step (a large batch is clipped the same way)")
        if self.unknown_samples:
            notes.append("some micro-batches showed no tensor with a batch dimension: each counted as 1 sample")
        if self.unobserved_steps:
            notes.append(f"{self.unobserved_steps} optimizer steps outside the instrumented loops were not compared")
        return notes


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _quietly(thunk: Callable[[], Any] | None) -> Any:
    """Evaluate a `lambda: name` from the rewrite; a name that does not resolve gives None."""
    if thunk is None:
        return None
    try:
        return thunk()
    except Exception:  # noqa: BLE001 - only a label for the report
        return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return _as_int(value.item())
    return None


def _number(value: Any) -> float | None:
    """A scaling factor as a float: numbers and one-element tensors."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().reshape(())) if value.numel() == 1 else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _samples_in(value: Any, depth: int = 0) -> int | None:
    """Leading dimension of the first tensor in an item (tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        return int(value.shape[0]) if value.dim() > 0 else None
    if depth > 4:
        return None
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for element in value:
            found = _samples_in(element, depth + 1)
            if found is not None:
                return found
    return None


def _parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [param for group in optimizer.param_groups for param in group["params"]]


def _leaves(loss: torch.Tensor) -> list[torch.Tensor]:
    """The tensors a backward of `loss` accumulates into (its graph's AccumulateGrad nodes)."""
    leaves: list[torch.Tensor] = []
    seen_nodes: set[Any] = set()
    seen_leaves: set[int] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen_nodes:
            continue
        seen_nodes.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            if id(variable) not in seen_leaves:
                seen_leaves.add(id(variable))
                leaves.append(variable)
            continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to_dense() if tensor.is_sparse else tensor.detach()


def _all_clear(leaves: Sequence[torch.Tensor]) -> bool:
    """No gradient held, or every held gradient is zero."""
    grads = [_dense(leaf.grad) for leaf in leaves if leaf.grad is not None]
    if not grads:
        return True
    return sum(_floats([torch.count_nonzero(grad) for grad in grads])) == 0


def _floats(tensors: Sequence[torch.Tensor]) -> list[float]:
    """0-d tensors to floats, with one device sync per device."""
    values = [0.0] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for index, tensor in enumerate(tensors):
        by_device.setdefault(tensor.device, []).append(index)
    for indices in by_device.values():
        stacked = torch.stack([tensors[i].to(torch.float64) for i in indices]).tolist()
        for index, value in zip(indices, stacked):
            values[index] = float(value)
    return values
