"""`gacclint verify`: the runtime gradient checker, on CPU.

Every script runs in this process (a few hundredths of a second each). The
CUDA twins of these cases are in tests/test_verify_cuda.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from gacclint.cli import main
from gacclint.engine import lint_source
from gacclint.runtime.instrument import instrument
from gacclint.runtime.report import AMP, FP32
from gacclint.selection import Selection

torch = pytest.importorskip("torch")

from gacclint.runtime import (  # noqa: E402 - needs torch
    CannotVerify,
    assert_gradients_match,
    verify_function,
    verify_script,
)
from gacclint.runtime.run import verify_file_function  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE = ROOT / "fixtures" / "runnable"
VERIFY = ROOT / "fixtures" / "verify"
FUNCTION = VERIFY / "function"
AMP_CASES = ["amp_ga201_unscaled", "amp_ga102_clear_every_batch", "amp_ga202_dropped_tail", "amp_ga203_misscaled_tail"]


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def static_codes(path: Path) -> set[str]:
    _, findings = lint_source(path.read_bytes(), Selection())
    return {finding.code for finding in findings}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


HEAD = """\
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
features = torch.randn(40, 3)
targets = features @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1
loader = DataLoader(TensorDataset(features, targets), batch_size=4, shuffle=False)
model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
loss_fn = nn.MSELoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
k = 2
"""


# --------------------------------------------------------------------------
# Diagnoses in rule terms; the runtime agrees with the static rules
# --------------------------------------------------------------------------

BUGGY = sorted([*(p for p in RUNNABLE.glob("ga*.py") if not p.name.endswith(".fixed.py")),
                *(VERIFY / f"{name}.py" for name in AMP_CASES), VERIFY / "tail_110.py"])


@pytest.mark.parametrize("script", BUGGY, ids=lambda p: p.name)
def test_runtime_diagnosis_names_the_codes_the_linter_reports(script: Path) -> None:
    report = verify_script(script, device="cpu")
    assert report.verdict == "mismatch" and report.exit_code == 1, report.text()
    assert report.codes == static_codes(script), report.text()


@pytest.mark.parametrize("script", sorted([*RUNNABLE.glob("*.fixed.py"), *VERIFY.glob("amp_*.fixed.py"),
                                           VERIFY / "tail_110_samples.py", VERIFY / "batchnorm.py"]),
                         ids=lambda p: p.name)
def test_fixed_scripts_verify(script: Path) -> None:
    report = verify_script(script, device="cpu")
    assert (report.verdict, report.exit_code, report.never_stepped) == ("verified", 0, 0), report.text()
    assert report.steps and all(step.ok for step in report.steps)


def test_messages_read_in_rule_terms() -> None:
    unscaled = verify_script(RUNNABLE / "ga201_unscaled.py", device="cpu")
    assert [(d.code, d.message) for d in unscaled.diagnoses()] == [
        ("GA201", "steps 1-6: gradient is 4.00x the large-batch mean: the loss was not divided by k")]
    dropped = verify_script(RUNNABLE / "ga202_dropped_tail.py", device="cpu")
    assert [(d.code, d.message) for d in dropped.diagnoses()] == [
        ("GA202", "step 3: window of 6 micro-batches spans passes 1, 2: the last 2 of the previous pass were not "
                  "stepped when it ended"),
        ("GA202", "2 micro-batches never stepped: their gradients were computed after the last optimizer step "
                  "and never applied")]
    cleared = verify_script(RUNNABLE / "ga102_clear_every_batch.py", device="cpu")
    assert cleared.diagnoses()[0].message == (
        "steps 1-6: saw only the last micro-batch of its 4: the gradients were cleared inside the window")
    shifted = verify_script(RUNNABLE / "ga104_off_by_one.py", device="cpu")
    assert shifted.diagnoses()[0].message == "step 1: saw 1 micro-batch where k = 4: the step boundary is off by one"


# --------------------------------------------------------------------------
# Seed 003's numbers: 110 samples, batch 8, k = 4
# --------------------------------------------------------------------------


def test_smaller_last_micro_batch_mean_of_means_is_said_and_accepted() -> None:
    # Per pass: 14 micro-batches, the last of 6 samples; windows 4, 4, 4, 2.
    buggy = verify_script(VERIFY / "tail_110.py", device="cpu")
    assert [s.micro_batches for s in buggy.steps] == [4, 4, 4, 2] * 2
    assert [s.samples for s in buggy.steps] == [32, 32, 32, 14] * 2
    assert buggy.codes == {"GA203"}
    # `gacclint fix` divides by the real window size (2): the mean of the two
    # micro-batch means. One large batch would take the mean over 14 samples;
    # verify says which is which and by how much, and accepts the fixer's output.
    windowed = verify_script(VERIFY / "tail_110.fixed.py", device="cpu")
    assert windowed.ok and windowed.exit_code == 0, windowed.text()
    accepted = windowed.accepted()
    assert len(accepted) == 2 and accepted[0].startswith(
        "step 4: the code computes the mean of the 2 micro-batch means (8, 6 samples, each weighed 1/2); "
        "one large batch computes the mean over its 14 samples"), accepted
    gap = float(accepted[0].split("they differ by ")[1].split("%")[0])
    assert 1 < gap < 50
    assert "note: step 4: the code computes the mean of the 2 micro-batch means" in windowed.text()
    # Each micro-batch weighted by its samples / the window's samples: exact, nothing to say.
    weighted = verify_script(VERIFY / "tail_110_samples.py", device="cpu")
    assert weighted.ok and not weighted.accepted(), weighted.text()


def test_equal_weighting_in_the_middle_of_a_pass_is_a_mismatch(tmp_path: Path) -> None:
    # Micro-batches of 4 and 2 samples alternate: dividing by k weighs them equally
    # although no pass ends there; that is not a final window, so it is reported.
    script = write(tmp_path, "uneven.py", HEAD.replace(
        "loader = DataLoader(TensorDataset(features, targets), batch_size=4, shuffle=False)",
        "loader = [(features[s:s + n], targets[s:s + n]) for s, n in "
        "[(0, 4), (4, 2), (6, 4), (10, 2), (12, 4), (16, 2), (18, 4), (22, 2)]]") + """
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""")
    report = verify_script(script, device="cpu")
    assert report.verdict == "mismatch", report.text()
    assert [step.ok for step in report.steps] == [False, False, False, True], report.text()
    assert any("micro-batches weighted equally, not by their samples (4, 2)" in d.message
               for d in report.diagnoses()), report.text()


# --------------------------------------------------------------------------
# AMP (CPU autocast bf16) and BatchNorm
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", AMP_CASES)
def test_amp_fixtures_use_the_amp_tolerance(name: str) -> None:
    fixed = verify_script(VERIFY / f"{name}.fixed.py", device="cpu")
    assert fixed.ok, fixed.text()
    assert fixed.tolerance.precision == "autocast bfloat16 with float32 gradients"
    assert (fixed.tolerance.rtol, fixed.tolerance.atol) == (AMP.rtol, AMP.atol)
    assert "[autocast bfloat16 with float32 gradients]" in fixed.text()


def test_fp32_tolerance_is_printed() -> None:
    report = verify_script(RUNNABLE / "ga201_unscaled.fixed.py", device="cpu")
    assert report.tolerance == FP32
    assert "tolerance: per parameter max|g - ref| <= 1e-05 * max|ref| + 1e-07" in report.text()


def test_batchnorm_is_reported_not_a_mismatch() -> None:
    report = verify_script(VERIFY / "batchnorm.py", device="cpu")
    assert report.ok, report.text()
    assert any(note.startswith("BatchNorm in training mode (BatchNorm1d)") for note in report.notes)


def test_dropout_draws_the_same_masks(tmp_path: Path) -> None:
    # The reference comes from the loop's own graph, so randomness cannot differ.
    script = write(tmp_path, "dropout.py", HEAD.replace("nn.Tanh()", "nn.Dropout(0.5), nn.Tanh()") + """
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""")
    assert verify_script(script, device="cpu").ok


# --------------------------------------------------------------------------
# Loop shapes and scalings the rewrite must read
# --------------------------------------------------------------------------

SHAPES = {
    "in-place division": """
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)
    loss /= k
    loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""",
    "inline division through a GradScaler": """
scaler = torch.amp.GradScaler("cpu")
for i, (x, y) in enumerate(loader):
    scaler.scale(loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0:
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""",
    "a task average is part of the loss, the reciprocal of k is not": """
for i, (x, y) in enumerate(loader):
    out = model(x)
    loss = (loss_fn(out, y) + (out ** 2).mean()) / 2
    (loss * (1 / k)).backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""",
    "a literal weight on the left whose inverse is a short window's size": """
k = 4
for epoch in range(2):
    for i, (x, y) in enumerate(loader):
        window = min(k, len(loader) - (i // k) * k)
        ((0.5 * loss_fn(model(x), y)) / window).backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""",
    "clipping after unscale_, as a large batch would be clipped": """
scaler = torch.amp.GradScaler("cpu")
for i, (x, y) in enumerate(loader):
    scaler.scale(loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""",
    "while loop pulling with next()": """
batches = iter(loader)
step = 0
while step < 10:
    x, y = next(batches)
    loss = loss_fn(model(x), y) / k
    loss.backward()
    step += 1
    if step % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""",
    "nanoGPT: an inner micro-step loop": """
batches = iter(loader)
for iteration in range(5):
    for micro_step in range(k):
        x, y = next(batches)
        loss = loss_fn(model(x), y)
        loss = loss / k
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
""",
    "inside a function called under __main__": """
def main():
    for epoch in range(2):
        for i, (x, y) in enumerate(loader):
            loss = loss_fn(model(x), y) / k
            loss.backward()
            if (i + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()

if __name__ == "__main__":
    main()
""",
}


@pytest.mark.parametrize("loop", [pytest.param(text, id=name) for name, text in SHAPES.items()])
def test_loop_shapes_verify(tmp_path: Path, loop: str) -> None:
    report = verify_script(write(tmp_path, "train.py", HEAD + loop), device="cpu")
    assert report.ok, report.text()
    assert len(report.steps) >= 5


CLIP_BUGS = {
    "GA402": """
scaler = torch.amp.GradScaler("cpu")
for i, (x, y) in enumerate(loader):
    scaler.scale(loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""",
    "GA403": """
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""",
}


@pytest.mark.parametrize("code", CLIP_BUGS)
def test_clipping_bugs_are_diagnosed_like_the_linter(tmp_path: Path, code: str) -> None:
    script = write(tmp_path, "clip.py", HEAD + CLIP_BUGS[code])
    report = verify_script(script, device="cpu")
    assert report.codes == static_codes(script) == {code}, report.text()


def test_clipped_steps_are_compared_before_the_clip(tmp_path: Path) -> None:
    report = verify_script(write(tmp_path, "clip.py", HEAD + SHAPES[
        "clipping after unscale_, as a large batch would be clipped"]), device="cpu")
    assert report.ok
    assert "5 steps clipped their gradients: they are compared as they reached the last clip" in report.notes[0]


def test_gradscaler_skipped_step_is_not_compared(tmp_path: Path) -> None:
    # A huge initial scale overflows the gradients: the scaler skips that step
    # and backs off; the skipped window must not leak into the next one.
    script = write(tmp_path, "skip.py", HEAD + """
scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, backoff_factor=1e-30)
for i, (x, y) in enumerate(loader):
    scaler.scale(loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0:
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""")
    report = verify_script(script, device="cpu")
    assert report.ok, report.text()
    assert "skipped" in [step.verdict for step in report.steps]
    assert report.tolerance.precision == "float32"


def test_rewrite_keeps_every_line_and_leaves_the_file_alone() -> None:
    path = RUNNABLE / "ga203_misscaled_tail.fixed.py"
    before = path.read_bytes()
    program = instrument(before)
    assert len(program.code.splitlines()) == len(before.decode().splitlines())
    assert {site.kind for site in program.sites} == {"loop", "backward", "step", "scale"}
    assert path.read_bytes() == before
    library = (FUNCTION / "train_lib.py").read_text()
    function = instrument(library, function="train_one_epoch_unscaled").code.splitlines()
    row = library.splitlines().index("def train_one_epoch_unscaled(model, loader, optimizer, loss_fn, accumulation_steps=4):")
    assert function[row] == library.splitlines()[row] and not any(function[:row])


def test_framework_managed_loops_are_instrumented() -> None:
    source = """
accelerator = Accelerator(gradient_accumulation_steps=4)
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(batch).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
"""
    program = instrument(source)
    assert {site.kind for site in program.sites} >= {"loop", "backward", "step"}
    assert not program.skipped


# --------------------------------------------------------------------------
# Running: --steps, argv, crashes, hooks
# --------------------------------------------------------------------------


def test_steps_stop_the_script_even_through_except_exception(tmp_path: Path) -> None:
    script = write(tmp_path, "long.py", HEAD + """
import sys
ARGV = sys.argv[1:]
try:
    for epoch in range(100):
        for i, (x, y) in enumerate(loader):
            (loss_fn(model(x), y) / k).backward()
            if (i + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()
except Exception:
    pass
open(__file__ + ".after", "w").write("the code after training ran")
""")
    report = verify_script(script, argv=["--lr", "3"], steps=3, device="cpu")
    assert report.ok and len(report.steps) == 3 and report.stopped_after == 3, report.text()
    assert report.never_stepped is None
    assert not Path(f"{script}.after").exists()
    assert "stopped after 3 steps" in report.summary()


def test_script_arguments_and_device_reach_the_script(tmp_path: Path) -> None:
    script = write(tmp_path, "args.py", HEAD + """
import os, sys
assert sys.argv[1:] == ["--epochs", "1"], sys.argv
assert os.environ["GACCLINT_DEVICE"] == "cpu"
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""")
    assert verify_script(script, argv=["--epochs", "1"], device="cpu").ok


def test_a_crash_is_could_not_run_with_where(tmp_path: Path) -> None:
    script = write(tmp_path, "crash.py", HEAD + """
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
    if i == 5:
        raise ValueError("bad batch")
""")
    report = verify_script(script, device="cpu")
    assert report.exit_code == 2
    assert report.why_not_run == "the code raised ValueError: bad batch (crash.py:20)"
    assert len(report.steps) == 3  # what ran before the crash is still shown


def test_hooks_are_removed_after_a_run(tmp_path: Path) -> None:
    import importlib

    module_hooks = importlib.import_module("torch.nn.modules.module")
    optimizer_hooks = importlib.import_module("torch.optim.optimizer")
    registries = [module_hooks._global_forward_pre_hooks, optimizer_hooks._global_optimizer_pre_hooks,
                  optimizer_hooks._global_optimizer_post_hooks]
    before = [len(registry) for registry in registries]
    verify_script(write(tmp_path, "crash.py", "raise RuntimeError('boom')\n"), device="cpu")
    verify_script(RUNNABLE / "ga201_unscaled.py", device="cpu", steps=1)
    assert [len(registry) for registry in registries] == before


def test_a_file_without_a_loop_cannot_be_verified(tmp_path: Path) -> None:
    report = verify_script(write(tmp_path, "plain.py", "x = 1\n"), device="cpu")
    assert report.exit_code == 2 and "no training loop" in (report.why_not_run or "")


# --------------------------------------------------------------------------
# Functions: file::function --fixture, and the library API
# --------------------------------------------------------------------------


def test_function_with_a_fixture_file() -> None:
    report = verify_file_function(FUNCTION / "train_lib.py", "train_one_epoch", FUNCTION / "fixture.py",
                                  device="cpu")
    assert report.ok, report.text()
    assert report.target.endswith("train_lib.py::train_one_epoch")
    assert [s.micro_batches for s in report.steps] == [4, 4, 2]
    unscaled = verify_file_function(FUNCTION / "train_lib.py", "train_one_epoch_unscaled", FUNCTION / "fixture.py",
                                    device="cpu")
    assert unscaled.codes == {"GA201"}


def test_fixture_must_bind_every_parameter(tmp_path: Path) -> None:
    fixture = write(tmp_path, "fixture.py", "model = None\n")
    report = verify_file_function(FUNCTION / "train_lib.py", "train_one_epoch", fixture, device="cpu")
    assert report.exit_code == 2
    assert "defines no `loader`, `optimizer`, `loss_fn`" in (report.why_not_run or "")


def _setup() -> tuple[torch.nn.Module, torch.utils.data.DataLoader, torch.optim.Optimizer, torch.nn.Module]:
    torch.manual_seed(1)
    features = torch.randn(40, 3)
    dataset = torch.utils.data.TensorDataset(features, features.sum(1, keepdim=True))
    model = torch.nn.Linear(3, 1)
    return (model, torch.utils.data.DataLoader(dataset, batch_size=4), torch.optim.SGD(model.parameters(), lr=0.1),
            torch.nn.MSELoss())


def test_library_assertion_passes_and_fails_in_rule_terms() -> None:
    sys.path.insert(0, str(FUNCTION))
    try:
        import train_lib
    finally:
        sys.path.remove(str(FUNCTION))
    report = assert_gradients_match(train_lib.train_one_epoch, *_setup())
    assert report.ok and len(report.steps) == 3
    with pytest.raises(AssertionError, match=r"the loss was not divided by k \(GA201\)"):
        assert_gradients_match(train_lib.train_one_epoch_unscaled, *_setup(), steps=2)


class Trainer:
    def __init__(self, k: int) -> None:
        self.k = k

    def fit(self, model, loader, optimizer, loss_fn):  # noqa: ANN001
        for i, (x, y) in enumerate(loader):
            loss = loss_fn(model(x), y) / self.k
            loss.backward()
            if (i + 1) % self.k == 0:
                optimizer.step()
                optimizer.zero_grad()


def test_library_accepts_a_bound_method() -> None:
    report = verify_function(Trainer(2).fit, *_setup())
    assert report.ok and len(report.steps) == 5, report.text()


def test_library_refuses_a_nested_function() -> None:
    k = 2

    def train(model, loader, optimizer, loss_fn):  # noqa: ANN001
        for i, (x, y) in enumerate(loader):
            (loss_fn(model(x), y) / k).backward()
            if (i + 1) % k == 0:
                optimizer.step()

    with pytest.raises(CannotVerify, match="nested function"):
        verify_function(train, *_setup())


# --------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------


def test_cli_text_table_and_exit_codes() -> None:
    code, out, _ = run_cli("verify", str(RUNNABLE / "ga203_misscaled_tail.py"), "--device", "cpu")
    assert code == 1
    assert "raw loss: line 22 `loss.backward()`: the loss before `loss / accumulation_steps` (line 21)" in out
    assert "step  line micro-batches samples passes    scale max rel err  verdict" in out
    assert "   3    24             2       8      1   0.5000    5.00e-01  MISMATCH GA203" in out
    assert ("steps 3, 6: gradient is 0.50x the large-batch mean: the final window of 2 micro-batches was "
            "divided by k = 4 (GA203)") in out
    assert out.rstrip().endswith("Mismatch: 2 of 6 steps differ from the large-batch gradient.")
    assert run_cli("verify", str(RUNNABLE / "ga203_misscaled_tail.fixed.py"), "--device", "cpu")[0] == 0


def test_cli_json() -> None:
    code, out, _ = run_cli("verify", str(RUNNABLE / "ga202_dropped_tail.py"), "--device", "cpu",
                           "--output-format", "json")
    assert code == 1
    data = json.loads(out)
    assert (data["verdict"], data["exit_code"], data["never_stepped"]) == ("mismatch", 1, 2)
    assert data["tolerance"] == {"rtol": 1e-05, "atol": 1e-07, "precision": "float32"}
    third = data["steps"][2]
    assert (third["micro_batches"], third["samples"], third["passes"], third["verdict"], third["code"]) == (
        6, 24, [1, 2], "MISMATCH", "GA202")
    assert third["scale"] == pytest.approx(1.5)
    assert [d["code"] for d in data["diagnoses"]] == ["GA202", "GA202"]


def test_cli_function_target_and_script_output_kept_off_stdout(tmp_path: Path) -> None:
    code, out, _ = run_cli("verify", f"{FUNCTION / 'train_lib.py'}::train_one_epoch", "--fixture",
                           str(FUNCTION / "fixture.py"), "--device", "cpu", "--output-format", "json")
    assert code == 0 and json.loads(out)["verdict"] == "verified"
    noisy = write(tmp_path, "noisy.py", "print('hello from the script')\n" + (RUNNABLE / "ga201_unscaled.py").read_text())
    code, out, err = run_cli("verify", str(noisy), "--device", "cpu", "--steps", "1", "--output-format", "json")
    assert code == 1 and json.loads(out)["stopped_after"] == 1
    assert "hello from the script" in err


@pytest.mark.parametrize("args, message", [
    (["x.py::f"], "needs --fixture"),
    (["x.py", "--fixture", "f.py"], "goes with a FILE.py::FUNCTION"),
    (["x.py", "--steps", "0"], "0 is not in the range"),
])
def test_cli_usage_errors(args: list[str], message: str) -> None:
    code, _, err = run_cli("verify", *args)
    assert code == 2 and message in err


def test_cli_could_not_run(tmp_path: Path) -> None:
    code, out, err = run_cli("verify", str(tmp_path / "missing.py"))
    assert (code, out) == (2, "")
    assert err.strip() == f"gacclint: {tmp_path / 'missing.py'}: could not verify: {tmp_path / 'missing.py'}: no such file"
    code, _, err = run_cli("verify", str(RUNNABLE / "ga201_unscaled.py"), "--device", "cuda")
    if not torch.cuda.is_available():
        assert code == 2 and "CUDA is not available here" in err


def test_verify_without_torch_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    code, _, err = run_cli("verify", str(RUNNABLE / "ga201_unscaled.py"))
    assert code == 2
    assert "gacclint verify needs PyTorch, which is not installed here: `pip install 'gacclint[runtime]'`" in err


def test_verify_help_says_it_runs_the_code() -> None:
    _, out, _ = run_cli("verify", "--help")
    assert "RUN a training script" in out and "EXECUTES the code" in out
    _, out, _ = run_cli("fix", "--help")
    assert "RUN each fixed file" in out


def test_check_and_fix_never_import_torch() -> None:
    program = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from gacclint.cli import main
        import gacclint.runtime, gacclint.runtime.instrument, gacclint.runtime.report
        for args in (["check", {str(ROOT / 'fixtures')!r}], ["fix", "--diff", {str(ROOT / 'fixtures')!r}],
                     ["rule", "--all"]):
            CliRunner().invoke(main, args)
        assert "torch" not in sys.modules, "torch was imported"
    """)
    subprocess.run([sys.executable, "-c", program], check=True, cwd=ROOT)


# --------------------------------------------------------------------------
# fix --verify
# --------------------------------------------------------------------------


def test_fix_then_verify(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_bytes((RUNNABLE / "ga202_dropped_tail.py").read_bytes())
    code, out, _ = run_cli("fix", "--verify", str(script))
    assert code == 0, out
    assert script.read_bytes() == (RUNNABLE / "ga202_dropped_tail.fixed.py").read_bytes()
    assert f"{script}: verified: Verified: all 6 compared steps apply the large-batch gradient" in out


def test_fix_diff_verify_runs_the_fixed_text_unwritten(tmp_path: Path) -> None:
    # The fixer's window divisor is exact only for equal micro-batches: verify says so.
    script = tmp_path / "train.py"
    script.write_bytes((VERIFY / "tail_110.py").read_bytes())
    code, out, _ = run_cli("fix", "--diff", "--verify", "--verify-steps", "4", str(script))
    assert code == 1
    assert script.read_bytes() == (VERIFY / "tail_110.py").read_bytes()
    assert f"{script}: gradients still differ: Mismatch: 1 of 4 steps" in out
    assert "  step 4: micro-batches weighted equally, not by their samples (8, 6)" in out


def test_fix_verify_reports_files_that_cannot_run(tmp_path: Path) -> None:
    # A snippet: fixable, but `loader` and friends are never defined.
    script = write(tmp_path, "snippet.py", """\
        for i, (x, y) in enumerate(loader):
            loss = loss_fn(model(x), y) / k
            loss.backward()
            if (i + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()
        """)
    code, out, err = run_cli("fix", "--verify", str(script))
    assert code == 0 and "Fixed 2 problems in 1 file." in out
    assert f"gacclint: {script}: not verified: the code raised NameError: name 'loader' is not defined" in err
