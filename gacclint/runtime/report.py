"""What a verification found: per-step verdicts, diagnoses in rule terms, output.

The probe (:mod:`gacclint.runtime.probe`) only measures: for each optimizer
step, a few float64 norms and dot products between the gradient `g` the
optimizer saw, the large-batch reference `ref` (the sample-weighted mean of
the window's micro-batch gradients) and `E`, the plain sum of those gradients.
This module turns the measurements into verdicts and explanations, with plain
floats only, so it does not import PyTorch and can be tested on its own.

How a mismatch is explained, in order (the first that holds wins):

* `g` is zero: the gradients were cleared between the backward and the step (GA103);
* a micro-batch after the first of the window started from clean gradients:
  something cleared them inside the window, and the step saw only the last
  micro-batches (GA102);
* the window's first micro-batch did not start from clean gradients after an
  earlier step: gradients were never cleared (GA101);
* the loop clips, and the clip saw the gradient times the GradScaler's scale
  (clipping before `unscale_`, GA402), or clipped more than once in the window
  (partial sums, GA403);
* `g` is a multiple `E / d` of the micro-batch sum, i.e. every micro-batch
  counted equally, divided by `d`: `d = 1` with several micro-batches is an
  undivided loss (GA201); `d = k` with fewer than `k` micro-batches is a
  partial window divided by `k` (GA203 at the end of a pass, GA104 at the start
  of training); `d = k` with more than `k` micro-batches spanning two passes is
  the previous pass's tail leaking into this window (GA202); `d` equal to the
  window's micro-batch count with micro-batches of different sizes is a mean
  of means where the samples should have been weighted;
* `d = k x k`: the loss was divided twice (over-scaled; GA204 when a framework
  did one of the divisions);
* otherwise the factor `scale = <g, ref> / <ref, ref>` and the error are reported.

Before these, a step that differs is read two other ways the probe measured
(:class:`Alternative`): the mean of the micro-batch means, accepted (with a
note saying which mean the code computes, which one the large batch would,
and by how much) when only the pass's last micro-batch is short, reported as
the token-level accumulation bug when the micro-batch means are over tokens,
and as equal weighting otherwise; and a summed loss whose gradients were
divided after the backward by the window's token or sample count, accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

# --------------------------------------------------------------------------
# Measurements (filled by the probe)
# --------------------------------------------------------------------------


@dataclass
class MicroBatch:
    """One iteration of a micro-batch loop."""

    index: int
    pass_index: int
    """Which pass over an iterable it came from (0-based, across all loops)."""
    position: int
    """Its index within that pass."""
    samples: int | None = None
    """Leading dimension of its inputs; None when no tensor showed one."""
    clean_before: bool | None = None
    """Were the gradients all None or zero when its first backward began?"""
    backwards: int = 0


@dataclass
class Pass:
    """One run of a micro-batch loop over its iterable (an epoch, usually)."""

    index: int
    site: int | None
    length: int | None = None
    """Micro-batches in the pass; None until the iterable is exhausted."""


@dataclass
class Alternative:
    """Another reading of a window, measured when a step differs from the large batch."""

    kind: str
    """`means` (each micro-batch's mean weighed 1/m), `divided:tokens` or `divided:samples`
    (the gradients divided, after the backward, by the window's token or sample count)."""
    factor: float
    params: tuple[tuple[float, float], ...]
    """Per parameter: (max|g - alternative|, max|alternative|)."""
    gap: float = 0.0
    """For `means`: the largest max|alternative - reference| over the parameters."""
    total: float = 0.0


@dataclass
class StepMeasure:
    """What the probe measured at one optimizer step."""

    index: int
    site: int | None
    k: int | None
    window: tuple[int, ...]
    """Indices of the micro-batches since the previous step of these parameters."""
    skipped: bool = False
    """The step call ran but the optimizer did not (a GradScaler found inf/NaN)."""
    params: tuple[tuple[float, float], ...] = ()
    """Per parameter: (max|g - ref|, max|ref|)."""
    g_ref: float = 0.0
    ref_ref: float = 0.0
    g_sum: float = 0.0
    """<g, E>, with E the plain sum of the window's micro-batch gradients."""
    sum_sum: float = 0.0
    g_g: float = 0.0
    earlier_step: bool = False
    """These parameters were stepped before (so their gradients should have been cleared since)."""
    clips: int = 0
    """Clip calls in the window, when the gradients compared are those the last one saw."""
    loss_scale: float = 1.0
    """The GradScaler's scale at the window's last backward (1 without one)."""
    kind: str = "mean"
    """How the loss's root reduces: `mean` (over samples or tokens) or `sum`."""
    counts: tuple[float, ...] = ()
    """What each backward of the window's first line averaged over (samples, tokens; 1 for sums)."""
    alternatives: list[Alternative] = field(default_factory=list)
    worst: tuple[str, float, float] | None = None
    """The parameter furthest from its reference: (name, norm of the reference, norm of the gradient)."""
    window_normaliser: bool = False
    outside_factor: bool = False
    """A factor applied outside the loop's code (a framework dividing by its own count) scaled the loss."""


@dataclass
class Precision:
    """What decides the tolerance: the gradients' dtypes, autocast, a GradScaler."""

    grad_dtypes: set[str] = field(default_factory=set)
    autocast_dtypes: set[str] = field(default_factory=set)
    scaler: bool = False


# --------------------------------------------------------------------------
# Tolerance
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """How close a step's gradient must be to the large-batch one.

    A parameter passes when `max|g - ref| <= rtol * max|ref| + atol * S`,
    with `S` the largest `max|ref|` over the step's parameters: the bound is on
    the whole tensor (infinity norm), so an entry near zero cannot fail on
    rounding noise, and `atol` scales with the step's gradients, so a small
    model's tiny gradients are not waved through.
    """

    rtol: float
    atol: float
    precision: str
    """What the tolerance was chosen for, e.g. `float32` or `autocast bfloat16 with float32 gradients`."""

    def describe(self) -> str:
        return (f"per parameter max|g - ref| <= {self.rtol:g} * max|ref| + {self.atol:g} * "
                f"(largest max|ref| of the step) [{self.precision}]")

    @property
    def fit(self) -> float:
        """Relative slack when matching a gradient against an explanation (a factor such as `k`)."""
        return min(0.05, max(1e-3, 10 * self.rtol))


# The reference and the user's gradient come from the same graph through the
# same kernels (see probe.py), so what separates them is the accumulation: k
# micro-batch gradients summed in the `.grad` dtype against a float64 sum.
# Measured on the fixtures (tests/test_verify.py): fp32 differs by at most
# ~1e-6 relative, bf16 autocast with fp32 gradients by 0. The smallest real bug
# is a factor such as r / k, or a reweighting of a few percent (a 6-sample
# micro-batch counted like an 8-sample one: ~1e-1 here).
FP32 = Tolerance(1e-5, 1e-7, "float32")
FP64 = Tolerance(1e-9, 1e-12, "float64")
AMP = Tolerance(1e-3, 1e-4, "autocast {dtype} with float32 gradients")
"""Autocast: the two backward passes still round alike, but GPU kernels that
add with atomics (embedding and scatter backward) may sum in a different order
from one pass to the next, which at half precision moves a few units in the
last place; 1e-3 covers that and still sees a 1% reweighting."""
FP16_GRADS = Tolerance(5e-3, 5e-4, "float16 gradients")
BF16_GRADS = Tolerance(2e-2, 2e-3, "bfloat16 gradients")
"""Half-precision parameters accumulate `.grad` in half precision: each of the
k additions rounds to 11 (fp16) or 8 (bf16) significant bits."""


def tolerance_for(precision: Precision) -> Tolerance:
    """The loosest precision that took part decides."""
    scaler = " and a GradScaler" if precision.scaler else ""
    if "bfloat16" in precision.grad_dtypes:
        return Tolerance(BF16_GRADS.rtol, BF16_GRADS.atol, BF16_GRADS.precision + scaler)
    if "float16" in precision.grad_dtypes:
        return Tolerance(FP16_GRADS.rtol, FP16_GRADS.atol, FP16_GRADS.precision + scaler)
    if precision.autocast_dtypes:
        dtypes = "/".join(sorted(precision.autocast_dtypes))
        return Tolerance(AMP.rtol, AMP.atol, AMP.precision.format(dtype=dtypes) + scaler)
    if precision.grad_dtypes and precision.grad_dtypes <= {"float64"}:
        return FP64
    return FP32


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Diagnosis:
    """Why a step (or the run) is wrong, in rule terms when a rule explains it."""

    code: str | None
    """The rule whose bug this is (`GA201`), or None when no rule names it."""
    message: str


@dataclass(frozen=True)
class StepResult:
    """One optimizer step compared with its large-batch reference."""

    step: int
    """1-based, in the order the steps ran."""
    line: int | None
    """Line of the step call, when it was an instrumented one."""
    sample_counts: tuple[int | None, ...]
    """Samples of each micro-batch of the window, in order."""
    passes: tuple[int, ...]
    """1-based passes over the data (epochs) the window's micro-batches came from."""
    max_rel_error: float
    """Largest `max|g - ref| / max|ref|` over the parameters (nan when skipped)."""
    scale: float
    """Least-squares factor `s` in `g ~ s * ref`: 1 when right, `k` for an
    unscaled loss, `r / k` for a partial window divided by `k`, 0 when cleared."""
    ok: bool | None
    """None for a step the GradScaler skipped (inf/NaN gradients): not compared."""
    diagnosis: Diagnosis | None = None
    accepted: str | None = None
    """Why a step that differs from the sample-weighted reference still passes (a short last
    micro-batch averaged as the mean of micro-batch means; gradients divided by the window's count)."""
    parameter: str | None = None
    """The parameter furthest from its reference."""
    expected_norm: float = math.nan
    """Norm of that parameter's large-batch gradient."""
    actual_norm: float = math.nan
    """Norm of the gradient the optimizer saw for it."""

    @property
    def micro_batches(self) -> int:
        return len(self.sample_counts)

    @property
    def samples(self) -> int:
        return sum(count or 0 for count in self.sample_counts)

    @property
    def verdict(self) -> str:
        if self.ok is None:
            return "skipped"
        return "ok" if self.ok else "MISMATCH"


@dataclass(frozen=True)
class VerifyReport:
    """Everything one verification found; see :attr:`verdict`."""

    target: str
    device: str | None
    tolerance: Tolerance
    steps: tuple[StepResult, ...] = ()
    never_stepped: int | None = None
    """Micro-batches run after the last step; None when not counted (stopped early or crashed)."""
    never_stepped_diagnosis: Diagnosis | None = None
    raw_loss: tuple[str, ...] = ()
    """For each backward: what was taken as its raw loss."""
    notes: tuple[str, ...] = ()
    error: str | None = None
    """Why the run could not be verified (exit 2)."""
    stopped_after: int | None = None
    """`--steps N`: the run was stopped after N steps."""
    run_tail: int = 0
    """Micro-batches after the last step that are the run's last partial window, where windows
    straddle passes (a counter carried across them): RULES.md's GA202 exempts them."""

    @property
    def compared(self) -> list[StepResult]:
        return [step for step in self.steps if step.ok is not None]

    @property
    def verdict(self) -> str:
        """`verified`, `mismatch`, or `error` (could not run, or no step to compare)."""
        if self.error is not None:
            return "error"
        if any(step.ok is False for step in self.steps) or (self.never_stepped and not self.run_tail):
            return "mismatch"
        return "verified" if self.compared and not self._nothing_backpropagated else "error"

    @property
    def _nothing_backpropagated(self) -> bool:
        """Every compared step had an empty window: no backward ran, and 0 = 0 proves nothing."""
        return bool(self.compared) and all(step.micro_batches == 0 for step in self.compared)

    @property
    def ok(self) -> bool:
        return self.verdict == "verified"

    @property
    def exit_code(self) -> int:
        return {"verified": 0, "mismatch": 1}.get(self.verdict, 2)

    @property
    def why_not_run(self) -> str | None:
        if self.error is not None:
            return self.error
        if self.verdict == "error" and self._nothing_backpropagated:
            return ("no backward ran before any optimizer step: every window was empty, nothing to compare "
                    "(does the run take the branch with the backward?)")
        if self.verdict == "error":
            return "every optimizer step was skipped by the GradScaler (inf/NaN gradients): nothing to compare"
        return None

    @property
    def codes(self) -> set[str]:
        """Rule codes of every diagnosis."""
        return {d.code for d in self.diagnoses() if d.code}

    def diagnoses(self) -> list[Diagnosis]:
        """One diagnosis per distinct explanation, naming the steps it applies to."""
        groups: dict[tuple[str | None, str], list[int]] = {}
        for step in self.steps:
            if step.diagnosis is not None:
                groups.setdefault((step.diagnosis.code, step.diagnosis.message), []).append(step.step)
        found = [Diagnosis(code, f"{_step_list(steps)}: {message}") for (code, message), steps in groups.items()]
        if self.never_stepped_diagnosis is not None:
            found.append(self.never_stepped_diagnosis)
        return found

    def accepted(self) -> list[str]:
        """Steps that pass although they differ from the sample-weighted mean, and why."""
        groups: dict[str, list[int]] = {}
        for step in self.steps:
            if step.ok and step.accepted:
                groups.setdefault(step.accepted, []).append(step.step)
        return [f"{_step_list(steps)}: {message}" for message, steps in groups.items()]

    @property
    def first_mismatch(self) -> StepResult | None:
        return next((step for step in self.steps if step.ok is False), None)

    # -- output ---------------------------------------------------------------

    def table(self, limit: int | None = None) -> str:
        """The per-step table; with `limit`, long runs keep mismatches and the ends."""
        header = (f"{'step':>4} {'line':>5} {'micro-batches':>13} {'samples':>7} {'passes':>6} "
                  f"{'scale':>8} {'max rel err':>11}  verdict")
        lines = [header]
        shown = _rows_to_show(self.steps, limit)
        previous = 0
        for step in self.steps:
            if step.step not in shown:
                continue
            if step.step > previous + 1:
                lines.append(f"{'...':>4} ({step.step - previous - 1} more steps, no mismatch)")
            previous = step.step
            passes = ",".join(str(p) for p in sorted(set(step.passes)))
            verdict = step.verdict + (f" {step.diagnosis.code}" if step.diagnosis and step.diagnosis.code else "")
            lines.append(f"{step.step:>4} {step.line if step.line else '-':>5} {step.micro_batches:>13} "
                         f"{step.samples:>7} {passes:>6} {_number(step.scale, '.4f'):>8} "
                         f"{_number(step.max_rel_error, '.2e'):>11}  {verdict}")
        if self.steps and self.steps[-1].step > previous:
            lines.append(f"{'...':>4} ({self.steps[-1].step - previous} more steps, no mismatch)")
        return "\n".join(lines)

    def text(self, limit: int | None = 60) -> str:
        """The human report `gacclint verify` prints."""
        lines = [f"gacclint verify: {self.target}" + (f" on {self.device}" if self.device else "")]
        lines += [f"raw loss: {entry}" for entry in self.raw_loss]
        lines.append(f"tolerance: {self.tolerance.describe()}")
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"note: {note}" for note in self.accepted()]
        if self.steps:
            lines += ["", self.table(limit), ""]
        lines += [(f"{d.message} ({d.code})" if d.code else d.message) for d in self.diagnoses()]
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        compared = self.compared
        skipped = len(self.steps) - len(compared)
        extra = (f" (and {skipped} step{'s' if skipped != 1 else ''} the GradScaler skipped for inf/NaN, "
                 "not compared)") if skipped else ""
        stopped = f"; stopped after {self.stopped_after} steps" if self.stopped_after else ""
        if self.verdict == "error":
            return f"Could not verify: {self.why_not_run}"
        if self.verdict == "verified":
            tail = "every micro-batch was stepped" if not self.never_stepped else "micro-batches after the last step not counted"
            if self.run_tail:
                tail = (f"every micro-batch was stepped but the run's last {self.run_tail}, a partial window of a count "
                        "carried across passes")
            return (f"Verified: all {len(compared)} compared steps{extra} apply the large-batch gradient of their window; "
                    f"{tail}{stopped}.")
        bad = sum(1 for step in compared if not step.ok)
        lost = f"; {self.never_stepped} micro-batches never stepped" if self.never_stepped else ""
        return f"Mismatch: {bad} of {len(compared)} steps{extra} differ from the large-batch gradient{lost}{stopped}."

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "device": self.device,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "error": self.why_not_run,
            "run_tail": self.run_tail,
            "tolerance": {"rtol": self.tolerance.rtol, "atol": self.tolerance.atol,
                          "precision": self.tolerance.precision},
            "raw_loss": list(self.raw_loss),
            "steps": [{
                "step": step.step,
                "line": step.line,
                "micro_batches": step.micro_batches,
                "samples": step.samples,
                "sample_counts": list(step.sample_counts),
                "passes": sorted(set(step.passes)),
                "scale": _finite(step.scale),
                "max_rel_error": _finite(step.max_rel_error),
                "verdict": step.verdict,
                "code": step.diagnosis.code if step.diagnosis else None,
                "diagnosis": step.diagnosis.message if step.diagnosis else None,
                "accepted": step.accepted,
                "parameter": step.parameter,
                "expected_norm": _finite(step.expected_norm),
                "actual_norm": _finite(step.actual_norm),
            } for step in self.steps],
            "never_stepped": self.never_stepped,
            "diagnoses": [{"code": d.code, "message": d.message} for d in self.diagnoses()],
            "accepted": self.accepted(),
            "notes": list(self.notes),
            "stopped_after": self.stopped_after,
        }

    def __str__(self) -> str:
        return self.text(limit=None)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _number(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "-")


def _step_list(steps: Sequence[int]) -> str:
    """`step 3`, `steps 1-4, 6`."""
    if len(steps) == 1:
        return f"step {steps[0]}"
    runs: list[str] = []
    start = previous = steps[0]
    for step in [*steps[1:], None]:
        if step is not None and step == previous + 1:
            previous = step
            continue
        runs.append(str(start) if start == previous else f"{start}-{previous}")
        if step is not None:
            start = previous = step
    return "steps " + ", ".join(runs)


def _rows_to_show(steps: Sequence[StepResult], limit: int | None) -> set[int]:
    if limit is None or len(steps) <= limit:
        return {step.step for step in steps}
    keep = {step.step for step in steps[: limit // 3]} | {step.step for step in steps[-5:]}
    keep |= {step.step for step in steps if step.ok is False}
    return keep


# --------------------------------------------------------------------------
# From measurements to a report
# --------------------------------------------------------------------------


def build_report(*, target: str, device: str | None, measures: Sequence[StepMeasure],
                 micro_batches: Sequence[MicroBatch], passes: Sequence[Pass], precision: Precision,
                 step_lines: dict[int, int], raw_loss: Iterable[str] = (), notes: Iterable[str] = (),
                 error: str | None = None, stopped_after: int | None = None) -> VerifyReport:
    tolerance = tolerance_for(precision)
    steps = tuple(_result(measure, micro_batches, passes, tolerance, step_lines) for measure in measures)
    never_stepped: int | None = None
    never_diagnosis = None
    run_tail = 0
    if error is None and not measures:
        ran = sum(1 for mb in micro_batches if mb.backwards)
        error = "no optimizer step ran in an instrumented training loop" + (
            f" (after {ran} micro-batch{'es' if ran != 1 else ''} with a backward)" if ran else "")
    if error is None and stopped_after is None:
        last = max((index for measure in measures for index in measure.window), default=-1)
        never_stepped = sum(1 for mb in micro_batches if mb.index > last and mb.backwards)
        # Windows of k micro-batches that straddle passes (a count carried across them) leave only
        # the run's last partial window unstepped, which no pass drops on its own. (A count that
        # restarts each pass leaks its tail into the next pass's first window instead: k + r.)
        straddling = [m for m in measures
                      if len({micro_batches[i].pass_index for i in m.window if i < len(micro_batches)}) > 1]
        straddling = bool(straddling) and all(len(m.window) == m.k for m in straddling)
        k = next((m.k for m in reversed(measures) if m.k), None)
        if never_stepped and straddling and k is not None and never_stepped < k:
            run_tail = never_stepped
        elif never_stepped:
            off_by_one = any(step.diagnosis and step.diagnosis.code == "GA104" for step in steps)
            never_diagnosis = Diagnosis(
                "GA104" if off_by_one else "GA202",
                f"{never_stepped} micro-batch{'es' if never_stepped != 1 else ''} never stepped: "
                "their gradients were computed after the last optimizer step and never applied")
    return VerifyReport(target=target, device=device, tolerance=tolerance, steps=steps, run_tail=run_tail,
                        never_stepped=never_stepped, never_stepped_diagnosis=never_diagnosis,
                        raw_loss=tuple(raw_loss), notes=tuple(notes), error=error, stopped_after=stopped_after)


def _result(measure: StepMeasure, micro_batches: Sequence[MicroBatch], passes: Sequence[Pass],
            tolerance: Tolerance, step_lines: dict[int, int]) -> StepResult:
    window = [micro_batches[index] for index in measure.window]
    common: dict[str, Any] = dict(
        step=measure.index + 1, line=step_lines.get(measure.site) if measure.site is not None else None,
        sample_counts=tuple(mb.samples for mb in window), passes=tuple(mb.pass_index + 1 for mb in window))
    if measure.worst is not None:
        common.update(parameter=measure.worst[0], expected_norm=measure.worst[1], actual_norm=measure.worst[2])
    if measure.skipped:
        return StepResult(**common, max_rel_error=math.nan, scale=math.nan, ok=None)
    scale = measure.g_ref / measure.ref_ref if measure.ref_ref > 0 else (0.0 if measure.g_g == 0 else math.inf)
    ok = bool(window) and _within(measure.params, tolerance)
    if not window:
        ok = measure.g_g == 0  # a step with nothing to apply is harmless only when it applies nothing
    max_rel = 0.0
    for diff, ref in measure.params:
        if ref > 0:
            max_rel = max(max_rel, diff / ref)
        elif diff > 0:
            max_rel = math.inf
    accepted = diagnosis = None
    if not ok and window:
        accepted, diagnosis = _other_readings(measure, window, passes, tolerance)
        ok = accepted is not None
    if not ok and diagnosis is None:
        diagnosis = _diagnose(measure, window, passes, tolerance, scale)
    return StepResult(**common, max_rel_error=max_rel, scale=scale, ok=ok, diagnosis=diagnosis, accepted=accepted)


def _within(params: Sequence[tuple[float, float]], tolerance: Tolerance) -> bool:
    largest = max((ref for _, ref in params), default=0.0)
    return all(diff <= tolerance.rtol * ref + tolerance.atol * largest for diff, ref in params)


def _other_readings(measure: StepMeasure, window: list[MicroBatch], passes: Sequence[Pass],
                    tolerance: Tolerance) -> tuple[str | None, Diagnosis | None]:
    """A step that differs from the sample-weighted reference but matches another reading."""
    largest = max((ref for _, ref in measure.params), default=0.0)
    for alternative in measure.alternatives:
        if not _within(alternative.params, tolerance):
            continue
        if alternative.kind.startswith("divided:"):
            what = alternative.kind.split(":", 1)[1]
            return (f"a summed loss whose gradients were divided, after the backward, by the window's {what} "
                    f"count ({_count(alternative.total)}): the large batch's mean over its {what}s"), None
        if alternative.kind != "means":
            continue
        m = len(window)
        gap = alternative.gap / largest if largest > 0 else 0.0
        sizes = [mb.samples for mb in window]
        counts = list(measure.counts)
        per_sample = len(counts) == m and all(
            (size or 0) > 0 and abs(count / (size or 1) - counts[0] / (sizes[0] or 1)) <= 1e-9 * count
            for count, size in zip(counts, sizes))
        if not per_sample:
            shown = ", ".join(_count(count) for count in counts)
            return None, Diagnosis(None, (
                f"token-level accumulation bug: each micro-batch's loss is a mean over its own tokens ({shown}) "
                f"and the {m} micro-batch means were weighted equally (1/{m} each); one large batch takes the "
                f"mean over all {_count(sum(counts))} tokens, so micro-batches with fewer tokens count too much "
                f"(the gradients differ by {gap:.2%}, max rel): sum the per-token losses and divide by the "
                "window's token count (`num_items_in_batch`)"))
        last = window[-1]
        length = passes[last.pass_index].length
        short_tail = (len(set(sizes[:-1])) <= 1 and sizes[-1] != sizes[0] and length is not None
                      and last.position == length - 1)
        shown = ", ".join(str(size) for size in sizes)
        total = sum(size or 0 for size in sizes)
        if short_tail:
            return (f"the code computes the mean of the {m} micro-batch means ({shown} samples, each weighed "
                    f"1/{m}); one large batch computes the mean over its {total} samples (each micro-batch "
                    f"weighed by samples/{total}); with the pass's short last micro-batch they differ by "
                    f"{gap:.2%} (max rel), accepted as the usual average of a final window"), None
        return None, Diagnosis(None, (
            f"micro-batches weighted equally, not by their samples ({shown}): the code computes the mean of "
            f"the {m} micro-batch means, one large batch the mean over its {total} samples; they differ by "
            f"{gap:.2%} (max rel): weight each micro-batch's loss by its samples / the window's samples"))
    return None, None


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _close(value: float, target: float, slack: float) -> bool:
    return target != 0 and abs(value / target - 1) <= slack


def _diagnose(measure: StepMeasure, window: list[MicroBatch], passes: Sequence[Pass],
              tolerance: Tolerance, scale: float) -> Diagnosis:
    m = len(window)
    if m == 0:
        return Diagnosis(None, "applied gradients although no micro-batch ran since the previous step")
    if measure.g_g == 0:
        return Diagnosis("GA103", "gradient is zero: the gradients were cleared between the backward and the step")
    cleared = [j for j, mb in enumerate(window) if j > 0 and mb.clean_before]
    if cleared:
        kept = m - cleared[-1]
        seen = "only the last micro-batch" if kept == 1 else f"only the last {kept} micro-batches"
        return Diagnosis("GA102", f"saw {seen} of its {m}: the gradients were cleared inside the window")
    if measure.earlier_step and window[0].clean_before is False:
        return Diagnosis("GA101", "gradient still holds the micro-batches of earlier steps: "
                                  "the gradients were not cleared after the previous step")
    slack = tolerance.fit
    if measure.clips and measure.loss_scale > 1 and _close(scale, measure.loss_scale, slack):
        return Diagnosis("GA402", f"the clip saw {scale:.0f}x the large-batch gradient: it ran before "
                                  "`scaler.unscale_(optimizer)`, on gradients still multiplied by the loss scale")
    if measure.clips > 1:
        return Diagnosis("GA403", f"gradients were clipped {measure.clips} times in the window: each clip cut a "
                                  "partial sum, not the window's gradient")
    k = measure.k
    divisor = _equal_weight_divisor(measure, slack)
    if divisor is not None:
        if m > 1 and _close(divisor, 1, slack):
            return Diagnosis("GA201", f"gradient is {scale:.2f}x the large-batch mean: "
                                      "the loss was not divided by k")
        if k and _close(divisor, k, slack) and m < k:
            last = window[-1]
            length = passes[last.pass_index].length
            ends_pass = length is not None and last.position == length - 1
            if ends_pass or (length is None and measure.earlier_step):
                return Diagnosis("GA203", f"gradient is {scale:.2f}x the large-batch mean: the final window of "
                                          f"{m} micro-batch{'es' if m != 1 else ''} was divided by k = {k}")
            if not measure.earlier_step and window[0].position == 0:
                return Diagnosis("GA104", f"saw {m} micro-batch{'es' if m != 1 else ''} where k = {k}: "
                                          "the step boundary is off by one")
        if k and _close(divisor, k, slack) and m > k:
            spanned = sorted({mb.pass_index for mb in window})
            if len(spanned) > 1:
                leaked = sum(1 for mb in window if mb.pass_index != window[-1].pass_index)
                return Diagnosis("GA202", f"window of {m} micro-batches spans passes "
                                          f"{', '.join(str(p + 1) for p in spanned)}: the last {leaked} of the "
                                          "previous pass were not stepped when it ended")
        base = k or m
        if base > 1 and m >= base and _close(divisor, base * base, slack):
            if measure.outside_factor:
                return Diagnosis("GA204", f"gradient is {scale:.2f}x the large-batch mean: each micro-batch was "
                                          f"divided by {divisor:.4g} = {base} x {base}: the loss was divided by hand "
                                          "and again by the framework (over-scaled)")
            return Diagnosis(None, f"gradient is {scale:.2f}x the large-batch mean: each micro-batch was "
                                   f"divided by {divisor:.4g} = {base} x {base}: the loss was divided by the "
                                   "accumulation count twice (over-scaled)")
        sizes = [mb.samples for mb in window]
        if _close(divisor, m, slack) and len(set(sizes)) > 1:
            return Diagnosis(None, f"micro-batches weighted equally, not by their samples "
                                   f"({', '.join(str(s) for s in sizes)}): weight each micro-batch's loss by its "
                                   "samples / the window's samples to get the large-batch mean")
        return Diagnosis(None, f"gradient is {scale:.2f}x the large-batch mean: each of the {m} micro-batches "
                               f"was divided by {divisor:.4g}")
    return Diagnosis(None, f"gradient is {scale:.2f}x the large-batch mean and not a multiple of it "
                           "(see max rel err)")


def _equal_weight_divisor(measure: StepMeasure, slack: float) -> float | None:
    """`d` when `g = E / d` (every micro-batch counted equally), else None."""
    if measure.sum_sum <= 0 or measure.g_sum <= 0 or measure.g_g <= 0:
        return None
    factor = measure.g_sum / measure.sum_sum
    residual = max(0.0, measure.g_g - measure.g_sum * factor)
    if math.sqrt(residual / measure.g_g) > slack:
        return None
    return 1 / factor
