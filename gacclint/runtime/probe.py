"""The runtime half of `gacclint verify`: measure what a running loop applies.

While the code runs, the probe wraps `torch.autograd.backward` (every
`loss.backward()`, and the backward a framework such as accelerate or
Lightning Fabric calls for the user, goes through it) and installs torch's
global optimizer-step and module-forward hooks; everything is removed
afterwards, even when the code raises.

**Which loss, scaled how: from the autograd graph, not from names.** At each
backward the probe walks the graph back from the tensor the backward starts
from, through multiplications and divisions by constants (and casts and
views), to the first node that is not one: the *root*, the loss as the user's
code defines it. Each constant on the way is a factor; the rewrite
(:mod:`gacclint.runtime.instrument`) has tagged the nodes made in the loop
with what the source says about them (read from the step schedule, a number,
or opaque), and a GradScaler's `scale()` is tagged too. The root tells how the
loss is reduced: a mean over samples, over tokens (`ignore_index`: the
count `nll_loss` saved), or a sum; a sum divided by a per-micro-batch count
(a masked token mean) is a mean over that count, and a sum divided by more
than the micro-batch holds (`num_items_in_batch`, a token budget) keeps that
divisor as part of the loss.

**The reference.** For a window (the micro-batches since the parameters'
previous step), one large batch gives, per backward line, the mean of its
root over the window's samples or tokens: `sum_j D_j grad R_j / sum_j D_j`
for means (`D_j` the micro-batch's count), `sum_j grad R_j` for sums, times the
loss's own constants. The probe does not run a second backward: a hook on each
parameter receives, during the user's own backward, exactly `c_j grad R_j`
(`c_j` the product of the factors) and adds it, re-weighted by
`D_j / a_j` (`a_j` the accumulation factors and the GradScaler's scale), to a
running sum in the gradient's dtype (a sparse gradient is added sparsely).
Opaque factors are judged at the step, by value: one equal to the window's
micro-batch count, `k`, or the window's sample or token count is an
accumulation factor, anything else is a constant of the loss (both sums are
kept while opaque factors are present).

**At each step** (the optimizer step pre-hook, so after `scaler.step`
unscales), each parameter's `.grad` (or the copy taken as it reached the
window's last clip) is compared with the reference: one pass over the
parameter for the differences, dot products for the diagnosis. When it
differs, two other readings are measured: the mean of the micro-batch means
(what dividing by the window size gives when the last micro-batch is short),
and gradients divided after the backward by the window's token or sample
count (per-token sums flushed with their count); see
:mod:`gacclint.runtime.report` for which are accepted.

**Per optimizer.** Each parameter's window belongs to its own optimizer. When
a backward finds a parameter's gradient cleared and the contributions it
holds came from other backward lines only (a GAN's generator loss reaching the
discriminator, cleared before the discriminator's own backward), those
contributions are dropped: they never reached a step. Cleared between two
backwards of the same line is GA102.

Memory: one running sum per parameter and backward line (two while opaque
factors are present, one more while micro-batches of different counts are in
a window), plus a copy of the gradients for loops that clip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from gacclint.runtime.instrument import LITERAL, OPAQUE, SCHEDULE, Site
from gacclint.runtime.report import (
    Alternative,
    MicroBatch,
    Pass,
    Precision,
    StepMeasure,
    VerifyReport,
    build_report,
    tolerance_for,
)

SCALER = 3
"""Tag of the node a GradScaler's `scale()` makes."""
TAG = "gacclint"
_MATCH = 1e-6
"""Relative slack when an opaque factor's value is compared with a count."""
_PASS_THROUGH = {"ToCopyBackward0", "ViewBackward0", "ReshapeAliasBackward0", "SqueezeBackward0",
                 "SqueezeBackward1", "SqueezeBackward2", "UnsqueezeBackward0", "CloneBackward0",
                 "AliasBackward0", "SelectBackward0", "ExpandBackward0", "PermuteBackward0",
                 "TBackward0", "ContiguousBackward0", "UnsafeViewBackward0"}
_COMBINE = {"AddBackward0", "AddBackward1", "SubBackward0", "SubBackward1", "MulBackward0", "DivBackward0",
            "NegBackward0", "StackBackward0", "CatBackward0", "MeanBackward0", "SumBackward0"}


class StopVerification(BaseException):
    """`--steps N` was reached. A BaseException, like KeyboardInterrupt, so that
    the script's own `except Exception:` does not swallow it."""


class ProbeFailure(BaseException):
    """The probe could not measure what the loop does (the message says why).
    A BaseException so that the script's `except Exception:` cannot hide it."""


# --------------------------------------------------------------------------
# One backward
# --------------------------------------------------------------------------


@dataclass
class _Factor:
    multiplier: float
    """The factor as a multiplier (`/ 4` is 0.25)."""
    kind: int | None
    """SCHEDULE, LITERAL, OPAQUE, SCALER, or None (made outside the loop: opaque)."""
    site: int | None


@dataclass
class _Backward:
    """What one backward contributes: its root, its count, its factors."""

    index: int
    key: int
    """The backward line's site, or -1 for a backward the rewrite did not see."""
    micro_batch: int
    kind: str
    """`mean` or `sum`: how the root reduces its elements."""
    count: float
    """`D_j`: what a mean root divides by (samples, tokens, a mask's count); 1 for a sum."""
    natural: float
    """How many elements the root reduces (for a sum: what a per-token mean would divide by)."""
    accumulation: float
    """Product of the accumulation factors and the GradScaler's scale."""
    opaque: tuple[float, ...]
    scale: float
    """The GradScaler's scale (1 without one)."""
    window_normaliser: float | None = None
    outside: bool = False
    """A factor applied outside the loop's code (a framework's division) is on its path."""

    weight: float = 1.0
    """D_j / a_j: what the hook gradient is multiplied by in the weighted sum."""
    opaque_product: float = 1.0

    def __post_init__(self) -> None:
        self.weight = self.count / self.accumulation
        self.opaque_product = math.prod(self.opaque)


@dataclass
class _Line:
    """One parameter's sums for one backward line within its window."""

    weighted: torch.Tensor | None = None
    """sum_j D_j / a_j * hook gradient (opaque factors kept as the loss's constants)."""
    resolved: torch.Tensor | None = None
    """The same with opaque factors taken as accumulation factors (only while some are present)."""
    plain: torch.Tensor | None = None
    """sum_j hook gradient / a_j, kept once the counts D_j differ (else weighted / D_first)."""
    first_count: float | None = None
    records: list[int] = field(default_factory=list)


@dataclass
class _Sums:
    param: torch.Tensor
    start: int
    """The first micro-batch that contributed."""
    lines: dict[int, _Line] = field(default_factory=dict)


@dataclass
class _Pending:
    """An instrumented step call in progress."""

    site: int
    optimizer: Any
    k: int | None
    through_scaler: bool
    measures_before: int


@dataclass
class _Reading:
    """How one backward line's sums read at a step."""

    norm: float
    use_resolved: bool
    rho: float
    """Multiplier on the weighted sum when only some opaque factors were accumulation factors."""
    plain_factor: float
    m: int
    counts: tuple[float, ...]
    kind: str
    window_total_samples: int
    naturals: float
    note: str | None = None


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
        self.backwards: list[_Backward] = []
        self.chains: dict[int, tuple[list[_Factor], str]] = {}
        """Backward line -> its factors and root, as first seen (for the report)."""
        self._current: MicroBatch | None = None
        self._sums: dict[int, _Sums] = {}
        self._stepped: set[int] = set()
        self._pending: _Pending | None = None
        self._while_runs: dict[int, Pass] = {}
        self._before_clip: dict[int, torch.Tensor | None] = {}
        self._clips = 0
        self._loss_scale = 1.0
        self.clipped_steps = 0
        self._pending_line: int | None = None
        self._spare: dict[int, list[torch.Tensor]] = {}
        self._scratch: dict[tuple[Any, Any], torch.Tensor] = {}
        """Running-sum buffers of closed windows, per parameter, reused by its next window."""
        self._active: _Backward | None = None
        self._hooked: dict[int, tuple[torch.Tensor, Any, Any]] = {}
        self._grad_state: dict[int, tuple[int, int]] = {}
        self._resolved_values: dict[tuple[int, int], set[float]] = {}
        self._roots: dict[int, torch.nn.Module] = {}
        self._names: dict[int, tuple[str, int]] = {}
        self._modules_hooked = 0
        """Modules seen running forward (to name a parameter)."""
        self._accepted: list[str] = []

    # -- installation --------------------------------------------------------

    @contextmanager
    def installed(self) -> Iterator[Probe]:
        original_backward = torch.autograd.backward
        scaler_class = torch.amp.grad_scaler.GradScaler
        original_scale = scaler_class.scale
        probe = self

        def backward(tensors: Any, grad_tensors: Any = None, *args: Any, **kwargs: Any) -> Any:
            return probe._backward(original_backward, tensors, grad_tensors, *args, **kwargs)

        def scale(self: Any, outputs: Any) -> Any:
            scaled = original_scale(self, outputs)
            _tag_scaled(scaled)
            return scaled

        handles = [
            register_optimizer_step_pre_hook(self._before_step),
            register_optimizer_step_post_hook(self._after_step),
            register_module_forward_pre_hook(self._before_forward),
        ]
        torch.autograd.backward = backward
        scaler_class.scale = scale
        try:
            yield self
        finally:
            torch.autograd.backward = original_backward
            scaler_class.scale = original_scale
            for handle in handles:
                handle.remove()
            for _, hook, post in self._hooked.values():
                hook.remove()
                post.remove()
            self._hooked.clear()

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

    def div(self, site: int, numerator: Any, divisor: Any, kind: int = OPAQUE) -> Any:
        result = numerator / divisor
        _tag(result, "DivBackward0", (site, kind, kind))
        return result

    def mul(self, site: int, left: Any, right: Any, left_kind: int = OPAQUE, right_kind: int = OPAQUE) -> Any:
        result = left * right
        if not isinstance(left, torch.Tensor) and isinstance(right, torch.Tensor):
            # `0.5 * loss` runs as `loss.__rmul__(0.5)`: in the graph the tensor is `self`, the number `other`
            left_kind, right_kind = right_kind, left_kind
        _tag(result, "MulBackward0", (site, left_kind, right_kind))
        return result

    def backward_loss(self, site: int, loss: Any, scaler: Any = None) -> Any:
        """The loss an instrumented backward line hands on: names the line of the next backward."""
        self._pending_line = site
        return loss

    def clipping(self, site: int) -> None:
        """Called just before an instrumented clip call: keep the gradients it is about to change."""
        self._clips += 1
        for sums in self._sums.values():
            grad = sums.param.grad
            self._before_clip[id(sums.param)] = None if grad is None else _dense(grad).clone()

    def stepping(self, site: int, optimizer: Callable[[], Any] | None, k: Callable[[], Any] | None,
                 through_scaler: bool = False) -> None:
        """Called just before an instrumented step call."""
        self._pending = _Pending(site, _quietly(optimizer), _as_int(_quietly(k)), through_scaler, len(self.measures))

    def stepped(self, value: Any) -> Any:
        """Called with the step call's result, after it returned."""
        pending, self._pending = self._pending, None
        if pending is not None and pending.through_scaler and len(self.measures) == pending.measures_before:
            # `scaler.step(opt)` ran but no optimizer stepped: the GradScaler skipped it (inf/NaN).
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

    # -- micro-batches ------------------------------------------------------------

    def _new_pass(self, site: int | None) -> Pass:
        run = Pass(index=len(self.passes), site=site)
        self.passes.append(run)
        return run

    def _start(self, run: Pass, position: int, samples: int | None) -> MicroBatch:
        micro_batch = MicroBatch(index=len(self.micro_batches), pass_index=run.index, position=position,
                                 samples=samples)
        self.micro_batches.append(micro_batch)
        self._current = micro_batch
        return micro_batch

    # -- backward ------------------------------------------------------------------

    def _backward(self, original: Callable[..., Any], tensors: Any, grad_tensors: Any, *args: Any,
                  **kwargs: Any) -> Any:
        if self._active is not None:  # a backward inside a backward (a hook's): not a micro-batch's
            return original(tensors, grad_tensors, *args, **kwargs)
        line, self._pending_line = self._pending_line, None
        roots = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors) if isinstance(
            tensors, (list, tuple)) else []
        if len(roots) != 1 or not isinstance(roots[0], torch.Tensor) or roots[0].grad_fn is None:
            return original(tensors, grad_tensors, *args, **kwargs)
        root = roots[0]
        if root.numel() != 1:
            raise ProbeFailure(f"a backward{self._at(line)} starts from a tensor of {root.numel()} elements: "
                               "verify needs one loss value per backward")
        seed = grad_tensors[0] if isinstance(grad_tensors, (list, tuple)) and grad_tensors else grad_tensors
        try:
            record = self._record(root, line, seed)
        except ProbeFailure:
            raise
        except Exception as error:  # noqa: BLE001 - reported as "could not verify"
            raise ProbeFailure(f"could not read the backward{self._at(line)}: "
                               f"{type(error).__name__}: {error}") from error
        self._active = record
        try:
            return original(tensors, grad_tensors, *args, **kwargs)
        finally:
            self._active = None

    def _at(self, line: int | None) -> str:
        where = self._line(line) if line is not None else None
        return f" at line {where}" if where else ""

    def _record(self, root: torch.Tensor, line: int | None, seed: Any) -> _Backward:
        micro_batch = self._current
        if micro_batch is None:  # a backward before any iteration: its own pass
            micro_batch = self._start(self._new_pass(None), 0, None)
        key = line if line is not None else -1
        factors, node = _walk(root)
        if seed is not None:
            value = _number(seed)
            if value is None:
                raise ProbeFailure("a backward with a non-scalar gradient argument cannot be read")
            factors.insert(0, _Factor(value, OPAQUE, None))
        samples = micro_batch.samples
        if samples is None:
            self.unknown_samples = True
        kind, count, natural = _reduction(node, samples or 1)
        normaliser = None
        if kind == "sum" and factors and factors[-1].multiplier != 0.0 and factors[-1].kind in (OPAQUE, None, SCHEDULE):
            divisor = 1.0 / factors[-1].multiplier
            if factors[-1].kind != SCHEDULE and 0 < divisor <= natural * (1 + 1e-9):
                kind, count = "mean", divisor  # a per-micro-batch mean: sum / its own count
                factors.pop()
            elif divisor > natural * (1 + 1e-9):
                normaliser = divisor  # divided by more than this micro-batch holds: part of the loss
                factors.pop()
        accumulation = 1.0
        scale = 1.0
        opaque: list[float] = []
        for factor in factors:
            if factor.kind == SCALER:
                scale *= factor.multiplier
                accumulation *= factor.multiplier
            elif factor.kind == SCHEDULE:
                accumulation *= factor.multiplier
            elif factor.kind == LITERAL:
                continue
            else:
                opaque.append(factor.multiplier)
        if accumulation == 0 or not math.isfinite(accumulation):
            raise ProbeFailure(f"the loss{self._at(line)} is multiplied by {accumulation}: nothing to compare")
        if scale != 1.0:
            self.precision.scaler = True
        self._loss_scale = scale
        if key not in self.chains:
            self.chains[key] = (factors, _describe_root(kind, count, natural, node))
        record = _Backward(index=len(self.backwards), key=key, micro_batch=micro_batch.index, kind=kind,
                           count=count if kind == "mean" else 1.0, natural=natural, accumulation=accumulation,
                           opaque=tuple(opaque), scale=scale, window_normaliser=normaliser,
                           outside=any(factor.kind is None for factor in factors))
        self.backwards.append(record)
        leaves = _leaves(root)
        clean = [self._clean(leaf) for leaf in leaves]
        if micro_batch.backwards == 0:
            micro_batch.clean_before = all(clean)
        micro_batch.backwards += 1
        for leaf, is_clean in zip(leaves, clean):
            sums = self._sums.get(id(leaf))
            if sums is not None and is_clean and key not in sums.lines:
                # Cleared since other lines' backwards reached it (a GAN's generator loss
                # reaching the discriminator): those never reach a step.
                del self._sums[id(leaf)]
            if id(leaf) not in self._hooked:
                self._hook(leaf)
        if len(self._roots) != self._modules_hooked:
            # Parameters a backward reaches without being leaves of its graph (a reentrant
            # checkpoint's region runs its own backward): hooked from the modules seen.
            self._modules_hooked = len(self._roots)
            for module in list(self._roots.values()):
                for param in module.parameters(recurse=False):
                    if param.requires_grad and id(param) not in self._hooked:
                        self._hook(param)
        return record

    def _hook(self, leaf: torch.Tensor) -> None:
        def on_gradient(grad: torch.Tensor) -> None:
            record = self._active
            if record is not None:
                self._add(leaf, grad, record)

        def after_accumulation(param: torch.Tensor) -> None:
            grad = param.grad
            if grad is not None:
                self._grad_state[id(param)] = (id(grad), grad._version)

        self._hooked[id(leaf)] = (leaf, leaf.register_hook(on_gradient),
                                  leaf.register_post_accumulate_grad_hook(after_accumulation))

    def _clean(self, leaf: torch.Tensor) -> bool:
        """No gradient held, or a zero one (checked only when it changed outside a backward)."""
        grad = leaf.grad
        if grad is None:
            return True
        state = (id(grad), grad._version)
        if self._grad_state.get(id(leaf)) == state:
            return False
        self._grad_state[id(leaf)] = state
        values = grad._values() if grad.is_sparse else grad
        return values.numel() == 0 or not bool(torch.count_nonzero(values))

    def _add(self, param: torch.Tensor, grad: torch.Tensor, record: _Backward) -> None:
        if grad.requires_grad:  # a backward with create_graph=True
            grad = grad.detach()
        sums = self._sums.get(id(param))
        if sums is None:
            sums = self._sums[id(param)] = _Sums(param, record.micro_batch)
        line = sums.lines.get(record.key)
        if line is None:
            line = sums.lines[record.key] = _Line(first_count=record.count)
        weight = record.weight
        opaque = record.opaque_product
        if line.resolved is None and opaque != 1.0 and line.weighted is not None:
            line.resolved = line.weighted.clone()
        if line.plain is None and record.count != line.first_count and line.weighted is not None:
            line.plain = line.weighted / line.first_count
        spare = self._spare
        line.weighted = _accumulate(line.weighted, grad, weight, param, spare)
        if line.resolved is not None or opaque != 1.0:
            line.resolved = _accumulate(line.resolved, grad, weight / opaque, param, spare)
        if line.plain is not None:
            line.plain = _accumulate(line.plain, grad, 1.0 / record.accumulation, param, spare)
        line.records.append(record.index)

    # -- steps ---------------------------------------------------------------------

    def _window(self, params: Sequence[torch.Tensor]) -> tuple[int, ...]:
        starts = [self._sums[id(p)].start for p in params if id(p) in self._sums]
        if not starts:
            return ()
        return tuple(mb.index for mb in self.micro_batches[min(starts):] if mb.backwards)

    def _close(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> None:
        for param in params:
            sums = self._sums.pop(id(param), None)
            self._before_clip.pop(id(param), None)
            if sums is not None:  # keep the buffers for the parameter's next window
                pool = self._spare.setdefault(id(param), [])
                for line in sums.lines.values():
                    pool.extend(t for t in (line.weighted, line.resolved, line.plain) if t is not None)
                del pool[3:]
        self._stepped.add(id(optimizer))
        self._clips = 0

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        params = _parameters(optimizer)
        pending = self._pending
        if not any(id(p) in self._sums for p in params):
            if pending is None or pending.measures_before < len(self.measures):
                self.unobserved_steps += 1  # outside the loops, or a wrapper's inner step measured already
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

    def _reading(self, key: int, line: _Line, k: int | None) -> _Reading:
        """How one line's sums read: the norm, and whether its opaque factors were accumulation factors."""
        records = [self.backwards[index] for index in line.records]
        by_batch: dict[int, int | None] = {}
        for record in records:
            by_batch[record.micro_batch] = self.micro_batches[record.micro_batch].samples
        m = len(by_batch)
        samples_total = sum(count or 0 for count in by_batch.values())
        counts = tuple(record.count for record in records)
        # Several backwards of one line in a micro-batch (a loop over tasks) are summed, as
        # one large batch sums them: the window's count takes each micro-batch once.
        per_batch: dict[int, list[float]] = {}
        for record in records:
            per_batch.setdefault(record.micro_batch, []).append(record.count)
        total = sum(sum(values) / len(values) for values in per_batch.values())
        naturals = sum(record.natural for record in records)
        kind = records[0].kind if records else "mean"
        norm = total if kind == "mean" and total > 0 else 1.0
        positions = {len(record.opaque) for record in records}
        use_resolved, rho = False, 1.0
        if records and positions != {0}:
            resolved_flags: list[list[bool]] = [[False] * len(record.opaque) for record in records]
            if len(positions) == 1:
                width = positions.pop()
                for position in range(width):
                    known = self._resolved_values.setdefault((key, position), set())
                    flags = []
                    for record in records:
                        samples = self.micro_batches[record.micro_batch].samples or 0
                        value = record.opaque[position]
                        candidates = [1 / m, 1 / total if total else 0.0,
                                      1 / samples_total if samples_total else 0.0,
                                      1 / naturals if naturals else 0.0,
                                      samples / samples_total if samples_total else 0.0,
                                      record.count / total if total else 0.0]
                        if k:
                            candidates.append(1 / k)
                        flags.append(any(_near(value, candidate) for candidate in candidates if candidate)
                                     or any(_near(value, seen) for seen in known))
                    if all(flags):
                        known.update(record.opaque[position] for record in records)
                    for j, flag in enumerate(flags):
                        resolved_flags[j][position] = all(flags)
            every = all(all(flags) for flags in resolved_flags)
            some = any(any(flags) for flags in resolved_flags)
            if every:
                use_resolved = line.resolved is not None
            elif some:
                ratios = [1 / math.prod(f for f, flag in zip(record.opaque, flags) if flag)
                          for record, flags in zip(records, resolved_flags)]
                rho = sum(ratios) / len(ratios)
        first = records[0] if records else None
        plain_factor = 1.0
        if use_resolved and first is not None and len({record.opaque_product for record in records}) == 1:
            plain_factor = 1 / first.opaque_product
        elif rho != 1.0:
            plain_factor = rho
        return _Reading(norm=norm, use_resolved=use_resolved, rho=rho, plain_factor=plain_factor, m=m,
                        counts=counts, kind=kind, window_total_samples=samples_total, naturals=naturals)

    def _compare(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                 pending: _Pending | None) -> StepMeasure:
        window = self._window(params)
        k = pending.k if pending else None
        clipped = any(id(param) in self._before_clip for param in params)
        self.clipped_steps += clipped
        readings: dict[tuple[int, int], _Reading] = {}
        rows: list[tuple[torch.Tensor, torch.Tensor, float | None, list[tuple[torch.Tensor, float]]]] = []
        plains: list[tuple[int, torch.Tensor]] = []
        for param in params:
            if param.numel() == 0:
                continue
            grad = self._before_clip[id(param)] if clipped and id(param) in self._before_clip else param.grad
            self.precision.grad_dtypes.add(str(grad.dtype if grad is not None else param.dtype).removeprefix("torch."))
            g = _dense(grad) if grad is not None else torch.zeros_like(param)
            sums = self._sums.get(id(param))
            reference: torch.Tensor | None = None
            means: list[tuple[torch.Tensor, float]] = []  # (plain sum, factor) per line, for E
            if sums is not None:
                for key, line in sums.lines.items():
                    signature = (key, line.records[0] if line.records else -1)
                    reading = readings.get(signature)
                    if reading is None:
                        reading = readings[signature] = self._reading(key, line, k)
                    base = line.resolved if reading.use_resolved and line.resolved is not None else line.weighted
                    if base is None:
                        continue
                    scale = reading.rho / reading.norm
                    factor = (1.0 / (line.first_count or 1.0)) * (reading.rho if not reading.use_resolved else 1.0)
                    if reference is None:  # the line's own sum becomes the reference (the window is closing)
                        reference = base.mul_(scale)
                        factor /= scale
                    else:
                        reference.add_(base, alpha=scale)
                    means.append((line.plain, reading.plain_factor) if line.plain is not None else (base, factor))
            if reference is None:
                reference = torch.zeros_like(g, dtype=_accumulation_dtype(g.dtype))
            g = g.to(reference.dtype) if g.dtype != reference.dtype else g
            proportional = (means[0][1] if len(means) == 1 and means[0][0] is reference
                            else 0.0 if not means else None)
            if proportional is None:  # E is not a multiple of the reference: measure it
                plains.append((len(rows), _combine(means, reference)))
            rows.append((g, reference, proportional, means))
        per = _measure_rows(rows, plains, self._scratch)
        tolerance = tolerance_for(self.precision)
        largest = max((row[1] for row in per), default=0.0)
        fails = any(row[0] > tolerance.rtol * row[1] + tolerance.atol * largest for row in per)
        if fails:  # the diagnosis reads the dot products: measure them exactly, not by polarisation
            per = _exact_rows(rows, per)
        totals = [math.fsum(row[j] for row in per) for j in range(2, 7)]
        measure = StepMeasure(
            index=len(self.measures), site=pending.site if pending else None, k=k,
            window=window, params=tuple((row[0], row[1]) for row in per),
            g_ref=totals[0], ref_ref=totals[1], g_sum=totals[2], sum_sum=totals[3], g_g=totals[4],
            earlier_step=id(optimizer) in self._stepped, clips=self._clips if clipped else 0,
            loss_scale=self._loss_scale)
        all_readings = list(readings.values())
        if all_readings:
            first = all_readings[0]
            measure.kind = first.kind
            measure.counts = first.counts
            measure.outside_factor = any(
                self.backwards[index].outside
                for sums in (self._sums.get(id(p)) for p in params) if sums is not None
                for line in sums.lines.values() for index in line.records[:1])
            measure.window_normaliser = any(
                self.backwards[index].window_normaliser is not None
                for sums in (self._sums.get(id(p)) for p in params) if sums is not None
                for line in sums.lines.values() for index in line.records[:1])
        if fails and rows and all_readings:
            measure.alternatives = self._alternatives(rows, all_readings, measure)
        worst = max(range(len(per)), key=lambda i: per[i][0] / per[i][1] if per[i][1] > 0 else (
            math.inf if per[i][0] > 0 else 0.0), default=None)
        if worst is not None:
            param = [p for p in params if p.numel() != 0][worst]
            measure.worst = (self._name(param), math.sqrt(max(per[worst][3], 0.0)), math.sqrt(max(per[worst][6], 0.0)))
        return measure

    def _alternatives(self, rows: list[Any], readings: list[_Reading], measure: StepMeasure) -> list[Alternative]:
        """Other readings of the window, measured when the step differs from the large batch."""
        found: list[Alternative] = []
        m = max(reading.m for reading in readings)
        # 1. The mean of the micro-batch means: each micro-batch weighed 1/m.
        if all(reading.kind == "mean" for reading in readings) and any(
                len(set(reading.counts)) > 1 for reading in readings):
            scalars = []
            for g, reference, proportional, means in rows:
                alternative = (reference * proportional if proportional is not None
                               else _combine(means, reference)) / m
                scalars += [(g - alternative).abs().max(), alternative.abs().max(),
                            (alternative - reference).abs().max()]
            values = _floats(scalars)
            found.append(Alternative(
                kind="means", factor=1.0 / m,
                params=tuple((values[3 * i], values[3 * i + 1]) for i in range(len(rows))),
                gap=max((values[3 * i + 2] for i in range(len(rows))), default=0.0)))
        # 2. Gradients divided, after the backward, by the window's token or sample count.
        if measure.ref_ref > 0 and measure.g_ref > 0 and all(reading.kind == "sum" for reading in readings):
            fitted = measure.g_ref / measure.ref_ref
            totals = {"token": sum(reading.naturals for reading in readings),
                      "sample": sum(reading.window_total_samples for reading in readings)}
            for label, total in totals.items():
                if total > 1 and abs(fitted * total - 1) <= 1e-3:
                    scalars = []
                    for g, reference, _, _ in rows:
                        alternative = reference / total
                        scalars += [(g - alternative).abs().max(), alternative.abs().max()]
                    values = _floats(scalars)
                    found.append(Alternative(kind=f"divided:{label}", factor=1.0 / total,
                                             params=tuple((values[2 * i], values[2 * i + 1]) for i in range(len(rows))),
                                             gap=0.0, total=total))
                    break
        return found

    # -- forwards ---------------------------------------------------------------

    def _before_forward(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if id(module) not in self._roots:
            self._roots[id(module)] = module
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

    def _name(self, param: torch.Tensor) -> str:
        """`Sequential.0.weight`: the parameter's path in the outermost module seen holding it."""
        cached = self._names.get(id(param))
        if cached is not None and len(self._roots) == cached[1]:
            return cached[0]
        name = self._find_name(param)
        self._names[id(param)] = (name, len(self._roots))
        return name

    def _find_name(self, param: torch.Tensor) -> str:
        best: tuple[int, str] | None = None
        for module in list(self._roots.values()):
            for name, candidate in module.named_parameters():
                if candidate is param and (best is None or name.count(".") > best[0]):
                    best = (name.count("."), f"{type(module).__name__}.{name}")
        return best[1] if best else f"parameter of shape {tuple(param.shape)}"

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
        for key, (factors, root) in self.chains.items():
            site = self.sites[key] if 0 <= key < len(self.sites) else None
            where = f"line {site.line} `{site.code}`" if site else "a backward outside the instrumented lines"
            walked = []
            for factor in factors:
                if factor.kind == LITERAL:
                    continue
                if factor.kind == SCALER:
                    walked.append("the GradScaler's scale")
                elif factor.site is not None and 0 <= factor.site < len(self.sites):
                    scale = self.sites[factor.site]
                    walked.append(f"`{scale.code}` (line {scale.line})")
                else:
                    walked.append(f"a factor {_short(factor.multiplier)} applied outside the loop's code")
            head = f"the loss before {', '.join(walked)}" if walked else \
                "the backward's loss itself (no scaling on its path)"
            lines.append(f"{where}: {head}; {root}")
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
# The autograd graph
# --------------------------------------------------------------------------


def _tag(result: Any, node_name: str, tag: tuple[int, int, int]) -> None:
    if isinstance(result, torch.Tensor) and result.grad_fn is not None and result.grad_fn.name() == node_name:
        result.grad_fn.metadata[TAG] = tag


def _tag_scaled(scaled: Any) -> None:
    if isinstance(scaled, torch.Tensor):
        if scaled.grad_fn is not None and scaled.grad_fn.name() == "MulBackward0":
            scaled.grad_fn.metadata[TAG] = (-1, SCALER, SCALER)
    elif isinstance(scaled, (list, tuple)):
        for item in scaled:
            _tag_scaled(item)


def _walk(root: torch.Tensor) -> tuple[list[_Factor], Any]:
    """The constant factors from the backward's tensor back to its root node, outermost first."""
    factors: list[_Factor] = []
    node = root.grad_fn
    for _ in range(64):
        if node is None:
            break
        name = node.name()
        inputs = node.next_functions
        if name in ("MulBackward0", "DivBackward0") and len(inputs) == 2:
            left, right = inputs[0][0], inputs[1][0]
            tag = node.metadata.get(TAG)
            if name == "DivBackward0" and left is not None and right is None:
                value = _number(node._saved_other)
                if value is None or value == 0:
                    break
                factors.append(_Factor(1.0 / value, tag[1] if tag else None, tag[0] if tag else None))
                node = left
                continue
            if name == "MulBackward0" and (left is None) != (right is None):
                constant = node._saved_self if left is None else node._saved_other
                value = _number(constant)
                if value is None:
                    break
                kind = (tag[1] if left is None else tag[2]) if tag else None
                factors.append(_Factor(value, kind, tag[0] if tag and tag[0] >= 0 else None))
                node = left if left is not None else right
                continue
            break
        if name == "NegBackward0":
            factors.append(_Factor(-1.0, LITERAL, None))
            node = inputs[0][0]
            continue
        if name in _PASS_THROUGH and inputs:
            node = inputs[0][0]
            continue
        if name in ("MeanBackward0", "SumBackward0") and _numel(getattr(node, "_saved_self_sym_sizes", ())) == 1:
            node = inputs[0][0]
            continue
        break
    return factors, node


def _reduction(node: Any, samples: int) -> tuple[str, float, float]:
    """(kind, count, natural count) of the first reduction under the root, read from its node."""
    stack = [node]
    seen = 0
    while stack and seen < 64:
        current = stack.pop()
        seen += 1
        if current is None:
            continue
        name = current.name()
        reduction = getattr(current, "_saved_reduction", None) if name.endswith("Backward0") else None
        if name.startswith("NllLoss"):
            total = float(current._saved_total_weight)
            return ("mean", total, total) if reduction == 1 else ("sum", 1.0, total)
        if name in ("MeanBackward0", "SumBackward0") and _stacked(current):
            # `torch.stack([task1, task2]).mean()`: a combination of losses, not a reduction over samples
            stack.extend(next_node for next_node, _ in reversed(current.next_functions))
            continue
        if name == "MeanBackward0" or name == "MeanBackward1":
            sizes = getattr(current, "_saved_self_sym_sizes", None)
            count = float(_numel(sizes)) if sizes is not None else float(samples)
            if name == "MeanBackward1":
                dims = getattr(current, "_saved_dim", None) or ()
                count = float(math.prod(int(sizes[d]) for d in dims)) if sizes is not None and dims else count
            return "mean", count, count
        if name in ("SumBackward0", "SumBackward1"):
            sizes = getattr(current, "_saved_self_sym_sizes", None)
            return "sum", 1.0, float(_numel(sizes)) if sizes is not None else float(samples)
        if reduction in (1, 2):
            saved = getattr(current, "_saved_self", None)
            count = float(saved.numel()) if isinstance(saved, torch.Tensor) else float(samples)
            return ("mean", count, count) if reduction == 1 else ("sum", 1.0, count)
        if name in _COMBINE or name in _PASS_THROUGH:
            stack.extend(next_node for next_node, _ in reversed(current.next_functions))
    return "mean", float(samples), float(samples)


def _stacked(node: Any) -> bool:
    inputs = node.next_functions
    return bool(inputs) and inputs[0][0] is not None and inputs[0][0].name() in ("StackBackward0", "CatBackward0")


def _describe_root(kind: str, count: float, natural: float, node: Any) -> str:
    what = node.name().removesuffix("Backward0") if node is not None else "?"
    if kind == "sum":
        return f"reduced as a sum ({what} of {_short(natural)} elements)"
    return f"reduced as a mean over {_short(count)} elements ({what})"


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


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _accumulate(total: torch.Tensor | None, grad: torch.Tensor, weight: float, param: torch.Tensor,
                spare: dict[int, list[torch.Tensor]]) -> torch.Tensor:
    if total is not None:
        return total.add_(grad, alpha=weight)
    dtype = _accumulation_dtype(grad.dtype)
    pool = spare.get(id(param))
    buffer = None
    while pool:
        candidate = pool.pop()
        if candidate.shape == param.shape and candidate.dtype == dtype and candidate.device == grad.device:
            buffer = candidate
            break
    if grad.is_sparse:
        buffer = buffer.zero_() if buffer is not None else torch.zeros(param.shape, dtype=dtype, device=grad.device)
        return buffer.add_(grad, alpha=weight)
    if buffer is None:  # a fresh one; later windows reuse it (no new allocation per window)
        return grad.to(dtype) * weight if grad.dtype != dtype else grad * weight
    return torch.mul(grad, weight, out=buffer)


_BIG = 1 << 16
"""Parameters of at least this many elements are compared one by one, through one reused buffer."""


def _scratch(pool: dict[tuple[Any, Any], torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    key = (like.dtype, like.device)
    buffer = pool.get(key)
    if buffer is None or buffer.numel() < like.numel():
        buffer = pool[key] = torch.empty(like.numel(), dtype=like.dtype, device=like.device)
    return buffer[:like.numel()].view(like.shape)


def _inf_norms(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """max|x| of each tensor, from one min-max pass (much faster than an inf-norm on CPU)."""
    small = [tensor for tensor in tensors if tensor.numel() < _BIG]
    quick = iter(torch._foreach_norm(small, math.inf) if small else ())
    found = []
    for tensor in tensors:
        if tensor.numel() < _BIG:
            found.append(next(quick))
        else:
            low, high = torch.aminmax(tensor)
            found.append(torch.maximum(high, low.neg()))
    return found


def _measure_rows(rows: list[Any], plains: list[tuple[int, torch.Tensor]],
                  scratch: dict[tuple[Any, Any], torch.Tensor]) -> list[list[float]]:
    """Per parameter: max|g - ref|, max|ref|, <g, ref>, <ref, ref>, <g, E>, <E, E>, <g, g>.

    Norms over all parameters at once (`torch._foreach_norm`, one pass each);
    the dot products from them by polarisation, `<g, r> = (|g|^2 + |r|^2 - |g - r|^2) / 2`."""
    if not rows:
        return []
    gs = [row[0] for row in rows]
    refs = [row[1] for row in rows]
    n = len(rows)
    diff_inf: list[Any] = [None] * n
    diff_two: list[Any] = [None] * n
    small = [i for i in range(n) if gs[i].numel() < _BIG]
    if small:
        diffs = torch._foreach_sub([gs[i] for i in small], [refs[i] for i in small])
        for i, inf, two in zip(small, _inf_norms(diffs), torch._foreach_norm(diffs, 2)):
            diff_inf[i], diff_two[i] = inf, two
        del diffs
    for i in range(n):
        if diff_inf[i] is None:  # a large parameter: its difference goes to one reused buffer
            diff = torch.sub(gs[i], refs[i], out=_scratch(scratch, refs[i]))
            diff_inf[i], diff_two[i] = _inf_norms([diff])[0], torch.linalg.vector_norm(diff)
    tensors = [*diff_inf, *_inf_norms(refs), *diff_two, *torch._foreach_norm(refs, 2),
               *torch._foreach_norm(gs, 2)]
    if plains:
        others = [plain for _, plain in plains]
        tensors += [*torch._foreach_norm(torch._foreach_sub([gs[i] for i, _ in plains], others), 2),
                    *torch._foreach_norm(others, 2)]
    values = _floats(tensors)
    n = len(rows)
    measured = {index: (values[5 * n + j], values[5 * n + len(plains) + j]) for j, (index, _) in enumerate(plains)}
    per = []
    for i, row in enumerate(rows):
        diff, largest, d2, r2, g2 = (values[j * n + i] for j in range(5))
        d2, r2, g2 = d2 * d2, r2 * r2, g2 * g2
        g_ref = (g2 + r2 - d2) / 2
        proportional = row[2]
        if proportional is None:
            e_diff, e_norm = measured[i]
            g_sum, sum_sum = (g2 + e_norm * e_norm - e_diff * e_diff) / 2, e_norm * e_norm
        else:
            g_sum, sum_sum = proportional * g_ref, proportional * proportional * r2
        per.append([diff, largest, g_ref, r2, g_sum, sum_sum, g2])
    return per


def _exact_rows(rows: list[Any], per: list[list[float]]) -> list[list[float]]:
    """The dot products of `_measure_rows`, computed in float64 (for a step that differs)."""
    scalars: list[torch.Tensor] = []
    for g, reference, proportional, means in rows:
        g64, r64 = g.reshape(-1).double(), reference.reshape(-1).double()
        scalars += [torch.dot(g64, r64), torch.dot(r64, r64), torch.dot(g64, g64)]
        if proportional is None:
            e64 = _combine(means, reference).reshape(-1).double()
            scalars += [torch.dot(g64, e64), torch.dot(e64, e64)]
    values = _floats(scalars)
    exact = []
    position = 0
    for (_, _, proportional, _), row in zip(rows, per):
        g_ref, ref_ref, g_g = values[position:position + 3]
        position += 3
        if proportional is None:
            g_sum, sum_sum = values[position:position + 2]
            position += 2
        else:
            g_sum, sum_sum = proportional * g_ref, proportional * proportional * ref_ref
        exact.append([row[0], row[1], g_ref, ref_ref, g_sum, sum_sum, g_g])
    return exact


def _combine(means: list[tuple[torch.Tensor, float]], like: torch.Tensor) -> torch.Tensor:
    if not means:
        return torch.zeros_like(like)
    total = means[0][0] * means[0][1]
    for tensor, factor in means[1:]:
        total.add_(tensor, alpha=factor)
    return total


def _near(value: float, target: float) -> bool:
    return target != 0 and abs(value / target - 1) <= _MATCH


def _short(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _numel(sizes: Any) -> int:
    return int(math.prod(int(size) for size in sizes)) if sizes is not None else 1


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


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to_dense() if tensor.is_sparse else tensor.detach()


def _floats(tensors: Sequence[torch.Tensor]) -> list[float]:
    """0-d tensors to floats, with one device sync per device and dtype."""
    values = [0.0] * len(tensors)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault((tensor.device, tensor.dtype), []).append(index)
    for indices in groups.values():
        stacked = torch.stack([tensors[i] for i in indices]).tolist()
        for index, value in zip(indices, stacked):
            values[index] = float(value)
    return values
