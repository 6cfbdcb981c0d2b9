"""The verify report on its own: verdicts, diagnoses and output from plain numbers.

gacclint/runtime/report.py does not import PyTorch, so these run without it.
"""

from __future__ import annotations

import json

import pytest

from gacclint.runtime.report import (
    AMP,
    BF16_GRADS,
    FP32,
    MicroBatch,
    Pass,
    Precision,
    StepMeasure,
    build_report,
    tolerance_for,
)


def micro_batches(count: int, samples: int = 4, passes: int = 1) -> list[MicroBatch]:
    per_pass = count // passes
    return [MicroBatch(index=i, pass_index=i // per_pass, position=i % per_pass, samples=samples,
                       clean_before=i % 4 == 0, backwards=1) for i in range(count)]


def measure(index: int, window: range, factor: float, k: int = 4) -> StepMeasure:
    """A step whose gradient is `factor` times its reference, with equal micro-batches."""
    ref = 1.0
    return StepMeasure(index=index, site=0, k=k, window=tuple(window),
                       params=((abs(factor - 1) * ref, ref),), g_ref=factor * ref * ref, ref_ref=ref * ref,
                       g_sum=factor * ref * len(window) * ref, sum_sum=(len(window) * ref) ** 2,
                       g_g=(factor * ref) ** 2, earlier_step=index > 0)


def report_of(measures: list[StepMeasure], count: int, **kwargs):
    return build_report(target="train.py", device="cpu", measures=measures, micro_batches=micro_batches(count),
                        passes=[Pass(0, 0, count)], precision=Precision(), step_lines={0: 24}, **kwargs)


def test_an_undivided_loss_reads_as_ga201() -> None:
    report = report_of([measure(i, range(4 * i, 4 * i + 4), 4.0) for i in range(3)], 12)
    assert report.verdict == "mismatch" and report.exit_code == 1
    assert [(d.code, d.message) for d in report.diagnoses()] == [
        ("GA201", "steps 1-3: gradient is 4.00x the large-batch mean: the loss was not divided by k")]


def test_verified_and_never_stepped() -> None:
    assert report_of([measure(0, range(4), 1.0)], 4).ok
    late = report_of([measure(0, range(4), 1.0)], 6)
    assert (late.verdict, late.never_stepped, late.codes) == ("mismatch", 2, {"GA202"})
    stopped = report_of([measure(0, range(4), 1.0)], 6, stopped_after=1)
    assert (stopped.verdict, stopped.never_stepped) == ("verified", None)


def test_no_step_or_an_error_cannot_verify() -> None:
    assert report_of([], 4).why_not_run == (
        "no optimizer step ran in an instrumented training loop (after 4 micro-batches with a backward)")
    crashed = report_of([measure(0, range(4), 1.0)], 4, error="the code raised ValueError: x (train.py:3)")
    assert (crashed.verdict, crashed.exit_code) == ("error", 2)


def test_long_tables_keep_mismatches_and_the_ends() -> None:
    measures = [measure(i, range(4 * i, 4 * i + 4), 1.0 if i != 50 else 4.0) for i in range(100)]
    table = report_of(measures, 400).table(limit=30)
    rows = [line.split()[0] for line in table.splitlines()[1:]]
    assert rows[:10] == [str(n) for n in range(1, 11)]
    assert "51" in rows and rows[-5:] == ["96", "97", "98", "99", "100"]
    assert "(40 more steps, no mismatch)" in table


def test_json_has_no_infinities() -> None:
    skipped = StepMeasure(index=0, site=0, k=4, window=(0, 1, 2, 3), skipped=True)
    data = report_of([skipped, measure(1, range(4, 8), 1.0)], 8).to_dict()
    json.dumps(data, allow_nan=False)
    assert [step["verdict"] for step in data["steps"]] == ["skipped", "ok"]
    assert data["verdict"] == "verified"


@pytest.mark.parametrize("precision, expected", [
    (Precision(grad_dtypes={"float32"}), FP32),
    (Precision(grad_dtypes={"float32"}, autocast_dtypes={"bfloat16"}), AMP),
    (Precision(grad_dtypes={"bfloat16"}, autocast_dtypes={"bfloat16"}), BF16_GRADS),
])
def test_tolerance_follows_dtypes_and_autocast(precision: Precision, expected) -> None:
    chosen = tolerance_for(precision)
    assert (chosen.rtol, chosen.atol) == (expected.rtol, expected.atol)


def test_tolerance_names_the_scaler() -> None:
    chosen = tolerance_for(Precision(grad_dtypes={"float32"}, autocast_dtypes={"float16"}, scaler=True))
    assert chosen.precision == "autocast float16 with float32 gradients and a GradScaler"


def test_steps_with_empty_windows_cannot_verify() -> None:
    # No backward ran (the run took the branch without it): 0 = 0 proves nothing about the loop.
    empty = [StepMeasure(index=i, site=0, k=4, window=(), params=((0.0, 0.0),), g_ref=0.0, ref_ref=0.0, g_sum=0.0,
                         sum_sum=0.0, g_g=0.0, earlier_step=i > 0) for i in range(3)]
    report = build_report(target="train.py", device="cpu", measures=empty, micro_batches=[], passes=[Pass(0, 0, 12)],
                          precision=Precision(), step_lines={0: 24})
    assert (report.verdict, report.exit_code) == ("error", 2)
    assert report.why_not_run.startswith("no backward ran before any optimizer step")


def test_the_last_partial_window_of_a_count_carried_across_passes_is_not_a_mismatch() -> None:
    # Two passes of 5 micro-batches, k = 4, the count carried across them: the second window
    # straddles the passes, and only the run's last 2 micro-batches are left, which RULES.md exempts.
    batches = [MicroBatch(index=i, pass_index=i // 5, position=i % 5, samples=4, backwards=1) for i in range(10)]
    steps = [measure(0, range(0, 4), 1.0), measure(1, range(4, 8), 1.0)]
    report = build_report(target="train.py", device="cpu", measures=steps, micro_batches=batches,
                          passes=[Pass(0, 0, 5), Pass(1, 0, 5)], precision=Precision(), step_lines={0: 24})
    assert (report.verdict, report.run_tail, report.never_stepped) == ("verified", 2, 2)
    assert report.summary().endswith("but the run's last 2, a partial window of a count carried across passes.")
    # Within each pass (nothing straddles), the same leftovers are a pass's dropped tail.
    own = build_report(target="train.py", device="cpu", measures=[measure(0, range(0, 4), 1.0)],
                       micro_batches=batches[:5], passes=[Pass(0, 0, 5)], precision=Precision(), step_lines={0: 24})
    assert (own.verdict, own.never_stepped, own.codes) == ("mismatch", 1, {"GA202"})
