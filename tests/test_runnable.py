"""The runnable fixtures really are bugs, and their fixes really are fixes.

Each fixable GA1xx/GA2xx rule has a tiny training script in
``fixtures/runnable/<name>.py`` and the exact text ``gacclint fix`` writes for
it in ``<name>.fixed.py``. Running both (in this process, see
``tests/gradcheck.py``) shows that every optimizer step of the fixed script
applies the large-batch gradient of its window, and that the buggy one fails
in the specific way the rule describes.

``tests/gradcheck.py`` is kept as an oracle independent of ``gacclint
verify``: it recomputes each window as one float64 large batch on a copy of
the model, while verify instruments the loop and sums the micro-batches' own
gradients. The last tests here check that both see the same steps, windows
and factors, so verify's reference is the true large-batch gradient.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

# Imported after the skip on purpose: the harness needs torch.
from gradcheck import (  # noqa: E402
    Recording,
    Report,
    TrainingSetup,
    check_recording,
    compare_gradients,
    recorded_gradients,
    reference_gradients,
    run_and_record,
)

from gacclint.runtime import verify_script  # noqa: E402

RUNNABLE = Path(__file__).resolve().parent.parent / "fixtures" / "runnable"
EPOCHS = 2  # every fixture runs `for epoch in range(2)`
K = 4  # every fixture's accumulation_steps

# Lines of the fixtures that the fixes touch, with their indentation.
STEP = " " * 12 + "optimizer.step()\n"
CLEAR_IN_BLOCK = " " * 12 + "optimizer.zero_grad()\n"
CLEAR_PER_MICRO_BATCH = " " * 8 + "optimizer.zero_grad()\n"
BACKWARD = " " * 8 + "loss.backward()\n"
BOUNDARY = " " * 8 + "if (i + 1) % accumulation_steps == 0:\n"
OFF_BY_ONE_BOUNDARY = " " * 8 + "if i % accumulation_steps == 0:\n"
BOUNDARY_WITH_TAIL = (
    " " * 8 + "if (i + 1) % accumulation_steps == 0 or (i + 1) == len(loader):\n"
)
DIVIDE_BY_K = " " * 8 + "loss = loss / accumulation_steps  # average over the window\n"
DIVIDE_BY_WINDOW = (
    " " * 8
    + "window = min(\n"
    + " " * 12
    + "accumulation_steps,\n"
    + " " * 12
    + "len(loader) - (i // accumulation_steps) * accumulation_steps,\n"
    + " " * 8
    + ")\n"
    + " " * 8
    + "loss = loss / window  # average over the window\n"
)


def explain(script: Path, report: Report) -> str:
    """Assertion message: the per-step table says which step went wrong and how."""
    return f"{script.name}:\n{report.table()}"


# --------------------------------------------------------------------------
# What each buggy script must show
# --------------------------------------------------------------------------


def expect_ga101(recording: Recording, report: Report) -> None:
    # Nothing clears: the first step is right, every later one also carries
    # the gradients of all earlier windows.
    first, *later = report.steps
    assert first.ok, explain(recording.script_path, report)
    assert later and not any(step.ok for step in later), explain(
        recording.script_path, report
    )


def expect_ga102(recording: Recording, report: Report) -> None:
    # The clear at the top of every micro-batch leaves only the last
    # micro-batch's gradient (divided by k) for the step.
    setup = TrainingSetup.from_globals(recording.script_globals)
    for step, snapshot in zip(report.steps, recording.steps, strict=True):
        assert not step.ok, explain(recording.script_path, report)
        last_micro_batch = step.rows[-step.micro_batch_sizes[-1] :]
        reference = reference_gradients(setup, snapshot, last_micro_batch)
        expected = {name: grad / K for name, grad in reference.items()}
        _, scale, matches = compare_gradients(
            recorded_gradients(setup.model, snapshot), expected
        )
        assert matches, (
            f"step {step.step} should see only its last micro-batch / {K} "
            f"(scale {scale:.4f})\n" + explain(recording.script_path, report)
        )


def expect_ga103(recording: Recording, report: Report) -> None:
    # Cleared right before the step: no step applies any gradient.
    assert all(step.scale == 0.0 for step in report.steps), explain(
        recording.script_path, report
    )


def expect_ga104(recording: Recording, report: Report) -> None:
    # `i % k == 0` steps after the very first micro-batch, then every k; the
    # last k - 1 micro-batches of the final epoch are never stepped.
    first = report.steps[0]
    message = explain(recording.script_path, report)
    assert first.micro_batches == 1, message
    assert first.scale == pytest.approx(1 / K), message
    assert report.never_stepped == K - 1, message


def expect_ga201(recording: Recording, report: Report) -> None:
    # The undivided loss sums k micro-batch means: k times the large-batch gradient.
    assert all(step.scale == pytest.approx(K) for step in report.steps), explain(
        recording.script_path, report
    )


def expect_ga202(recording: Recording, report: Report) -> None:
    # 10 micro-batches per epoch, k = 4: the 2 left over at the end of epoch 0
    # leak into the first window of epoch 1 (6 micro-batches, scaled 6/4), and
    # those of epoch 1 are never stepped.
    message = explain(recording.script_path, report)
    assert report.never_stepped == 2, message
    leaking = [step for step in report.steps if step.epochs == (0, 1)]
    assert len(leaking) == 1, message
    assert leaking[0].micro_batches == 6, message
    assert leaking[0].scale == pytest.approx(6 / K), message
    assert not leaking[0].ok, message


def expect_ga203(recording: Recording, report: Report) -> None:
    # The final window of each epoch has 2 micro-batches but divides by k: half weight.
    message = explain(recording.script_path, report)
    assert [step.micro_batches for step in report.steps] == [4, 4, 2] * EPOCHS, message
    for step in report.steps:
        if step.micro_batches == K:
            assert step.ok, message
        else:
            assert not step.ok and step.scale == pytest.approx(2 / K), message


# --------------------------------------------------------------------------
# The pairs
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """A buggy fixture, its fixed twin, the fixer's edit and the bug's symptom."""

    name: str
    edits: tuple[tuple[str, str], ...]
    """The fix as text replacements ``(old, new)``, applied in order; each
    ``old`` occurs exactly once in the text it applies to."""
    expect_bug: Callable[[Recording, Report], None]

    @property
    def buggy(self) -> Path:
        return RUNNABLE / f"{self.name}.py"

    @property
    def fixed(self) -> Path:
        return RUNNABLE / f"{self.name}.fixed.py"


PAIRS = [
    Pair("ga101_no_clear", ((STEP, STEP + CLEAR_IN_BLOCK),), expect_ga101),
    Pair(
        "ga102_clear_every_batch",
        ((CLEAR_PER_MICRO_BATCH, ""), (STEP, STEP + CLEAR_IN_BLOCK)),
        expect_ga102,
    ),
    Pair(
        "ga103_clear_before_step",
        ((CLEAR_IN_BLOCK + STEP, STEP + CLEAR_IN_BLOCK),),
        expect_ga103,
    ),
    Pair("ga104_off_by_one", ((OFF_BY_ONE_BOUNDARY, BOUNDARY),), expect_ga104),
    Pair(
        "ga201_unscaled",
        ((BACKWARD, " " * 8 + "(loss / accumulation_steps).backward()\n"),),
        expect_ga201,
    ),
    # GA202's fix reaches a fixpoint: the clause, then GA203's fix of the divisor.
    Pair(
        "ga202_dropped_tail",
        ((BOUNDARY, BOUNDARY_WITH_TAIL), (DIVIDE_BY_K, DIVIDE_BY_WINDOW)),
        expect_ga202,
    ),
    Pair("ga203_misscaled_tail", ((DIVIDE_BY_K, DIVIDE_BY_WINDOW),), expect_ga203),
]
PAIR_PARAMS = [pytest.param(pair, id=pair.name) for pair in PAIRS]


def record_and_check(script: Path) -> tuple[Recording, Report]:
    recording = run_and_record(script)
    return recording, check_recording(recording)


@pytest.mark.parametrize("pair", PAIR_PARAMS)
def test_fixed_script_steps_the_large_batch_gradient(pair: Pair) -> None:
    recording, report = record_and_check(pair.fixed)
    assert report.ok, explain(pair.fixed, report)
    # Guards against a vacuous pass: every sample of every epoch reached a step.
    dataset_size = len(recording.script_globals["dataset"])
    stepped = sum(step.samples for step in report.steps)
    assert stepped == EPOCHS * dataset_size, explain(pair.fixed, report)


@pytest.mark.parametrize("pair", PAIR_PARAMS)
def test_buggy_script_shows_the_bug(pair: Pair) -> None:
    recording, report = record_and_check(pair.buggy)
    assert not report.ok, explain(pair.buggy, report)
    pair.expect_bug(recording, report)


@pytest.mark.parametrize("pair", PAIR_PARAMS)
def test_fixed_script_is_the_buggy_one_plus_the_fix(pair: Pair) -> None:
    # The fixed file is the fixer's expected output byte for byte, so it may
    # differ from the buggy one only by the rule's edit: comments, blank lines
    # and indentation elsewhere are kept.
    text = pair.buggy.read_text(encoding="utf-8")
    for old, new in pair.edits:
        assert text.count(old) == 1, f"{pair.buggy.name}: expected one {old!r}"
        text = text.replace(old, new)
    assert text == pair.fixed.read_text(encoding="utf-8")


def test_every_runnable_fixture_belongs_to_a_pair() -> None:
    expected = {path.name for pair in PAIRS for path in (pair.buggy, pair.fixed)}
    assert {path.name for path in RUNNABLE.glob("*.py")} == expected


# --------------------------------------------------------------------------
# The harness itself
# --------------------------------------------------------------------------


def test_nested_modules_count_as_one_forward(tmp_path: Path) -> None:
    # Submodules run inside the model's forward: only the top-level call is
    # a micro-batch.
    source = (RUNNABLE / "ga101_no_clear.fixed.py").read_text(encoding="utf-8")
    deep = source.replace(
        "model = nn.Linear(3, 1)",
        "model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))",
    )
    assert deep != source
    script = tmp_path / "deep.py"
    script.write_text(deep, encoding="utf-8")
    _, report = record_and_check(script)
    assert report.ok, explain(script, report)
    assert [step.micro_batches for step in report.steps] == [K] * 6, explain(
        script, report
    )


def test_hooks_are_removed_when_the_script_raises(tmp_path: Path) -> None:
    # The hooks are global: one left behind would record every later test's
    # forwards and steps. torch has no public way to list them, so this reads
    # its private registries (torch is pinned).
    module_hooks = importlib.import_module("torch.nn.modules.module")
    optimizer_hooks = importlib.import_module("torch.optim.optimizer")
    registries = [
        module_hooks._global_forward_pre_hooks,
        module_hooks._global_forward_hooks,
        optimizer_hooks._global_optimizer_pre_hooks,
    ]
    before = [len(registry) for registry in registries]
    script = tmp_path / "crash.py"
    script.write_text("raise RuntimeError('training crashed')\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="training crashed"):
        run_and_record(script)
    assert [len(registry) for registry in registries] == before


# --------------------------------------------------------------------------
# gacclint verify against the oracle
# --------------------------------------------------------------------------

SCRIPTS = [pytest.param(path, id=path.name) for pair in PAIRS for path in (pair.buggy, pair.fixed)]


@pytest.mark.parametrize("script", SCRIPTS)
def test_verify_agrees_with_the_large_batch_oracle(script: Path) -> None:
    _, oracle = record_and_check(script)
    report = verify_script(script, device="cpu")
    message = f"oracle:\n{oracle.table()}\nverify:\n{report.table()}"
    assert [s.micro_batches for s in report.steps] == [s.micro_batches for s in oracle.steps], message
    assert [s.samples for s in report.steps] == [s.samples for s in oracle.steps], message
    assert [s.ok for s in report.steps] == [s.ok for s in oracle.steps], message
    for mine, theirs in zip(report.steps, oracle.steps):
        assert mine.scale == pytest.approx(theirs.scale, rel=1e-5, abs=1e-7), message
    assert report.never_stepped == oracle.never_stepped, message


@pytest.mark.parametrize("pair", PAIR_PARAMS)
def test_verify_names_the_rule_of_each_buggy_script(pair: Pair) -> None:
    code = pair.name.split("_", 1)[0].upper()
    buggy = verify_script(pair.buggy, device="cpu")
    assert (buggy.verdict, buggy.codes) == ("mismatch", {code}), buggy.text()
    fixed = verify_script(pair.fixed, device="cpu")
    assert (fixed.verdict, fixed.exit_code) == ("verified", 0), fixed.text()
