"""`gacclint verify` judges gradients, not names: loss shapes, optimizers, frameworks.

Every runnable fixture (fixtures/runnable, fixtures/verify) is run under
verify with the verdict one large batch gives it; the shapes that used to
raise false alarms (a divisor from a method, a token budget, per-token sums
flushed with their count, `num_items_in_batch` from a helper, a two-optimizer
GAN, an end-of-data clause with an extra condition) verify, and the bugs that
hide behind correct-looking names (`/ k / k`, per-micro-batch token means)
are reported with their own explanations. Framework loops (accelerate,
Lightning Fabric) run when their package is installed and are skipped
otherwise; a missing package is exit 2 with one line naming it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from gacclint.cli import main
from gacclint.fixes.apply import fix_source
from gacclint.selection import Selection

torch = pytest.importorskip("torch")

from gacclint.runtime import GradientMismatch, assert_gradients_match, verify_script  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE = ROOT / "fixtures" / "runnable"
VERIFY = ROOT / "fixtures" / "verify"
NEEDS = {"accelerate": "accelerate", "fabric": "lightning", "deepspeed": "deepspeed"}

# Every runnable script and the verdict one large batch gives it: `verified`
# or the codes (or message) verify must report.
EXPECTED: dict[str, tuple[str, set[str] | str]] = {
    **{path.name: ("verified", set()) for path in RUNNABLE.glob("*.fixed.py")},
    "ga101_no_clear.py": ("mismatch", {"GA101"}),
    "ga102_clear_every_batch.py": ("mismatch", {"GA102"}),
    "ga103_clear_before_step.py": ("mismatch", {"GA103"}),
    "ga104_off_by_one.py": ("mismatch", {"GA104"}),
    "ga201_unscaled.py": ("mismatch", {"GA201"}),
    "ga202_dropped_tail.py": ("mismatch", {"GA202"}),
    "ga203_misscaled_tail.py": ("mismatch", {"GA203"}),
    **{path.name: ("verified", set()) for path in VERIFY.glob("amp_*.fixed.py")},
    "amp_ga102_clear_every_batch.py": ("mismatch", {"GA102"}),
    "amp_ga201_unscaled.py": ("mismatch", {"GA201"}),
    "amp_ga202_dropped_tail.py": ("mismatch", {"GA202"}),
    "amp_ga203_misscaled_tail.py": ("mismatch", {"GA203"}),
    "batchnorm.py": ("verified", set()),
    "tail_110.py": ("mismatch", {"GA203"}),
    "tail_110.fixed.py": ("verified", set()),
    "tail_110_samples.py": ("verified", set()),
    "method_divisor.py": ("verified", set()),
    "end_of_data_extra_condition.py": ("verified", set()),
    "double_divided.py": ("mismatch", "divided by 25 = 5 x 5: the loss was divided by the accumulation count "
                                      "twice (over-scaled)"),
    "gan_two_optimizers.py": ("verified", set()),
    "gan_accumulated.py": ("verified", set()),
    "token_budget.py": ("verified", set()),
    "token_num_items_helper.py": ("verified", set()),
    "token_sums_flushed.py": ("verified", set()),
    "token_mean_per_micro_batch.py": ("mismatch", "token-level accumulation bug: each micro-batch's loss is a "
                                                  "mean over its own tokens (14, 17, 14, 17)"),
    "token_masked_mean.py": ("mismatch", "token-level accumulation bug"),
    "engine_loop.py": ("verified", set()),
    "sparse_embedding.py": ("verified", set()),
    "checkpoint_stacked_losses.py": ("verified", set()),
    "accelerate_loop.py": ("verified", set()),
    "accelerate_double_scaled.py": ("mismatch", {"GA204"}),
    "fabric_loop.py": ("verified", set()),
    "deepspeed_loop.py": ("verified", set()),
}
SCRIPTS = sorted([*RUNNABLE.glob("*.py"), *(p for p in VERIFY.glob("*.py") if not p.name.startswith("_"))])


def _needs(script: Path) -> str | None:
    for prefix, package in NEEDS.items():
        if script.name.startswith(prefix):
            return package
    return None


def test_every_runnable_fixture_has_an_expected_verdict() -> None:
    assert sorted(p.name for p in SCRIPTS) == sorted(EXPECTED)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_runnable_fixture_gets_its_large_batch_verdict(script: Path) -> None:
    package = _needs(script)
    if package is not None and importlib.util.find_spec(package) is None:
        if package == "deepspeed":  # not installable here: the missing package is the answer
            report = verify_script(script, device="cpu")
            assert report.exit_code == 2
            assert report.why_not_run == ("the code needs the package `deepspeed`, which is not installed here "
                                          "(pip install deepspeed)")
            return
        pytest.skip(f"{package} is not installed")
    verdict, expected = EXPECTED[script.name]
    report = verify_script(script, device="cpu")
    assert report.verdict == verdict, report.text()
    if isinstance(expected, set):
        assert report.codes == expected, report.text()
    else:
        assert any(expected in d.message for d in report.diagnoses()), report.text()
    if verdict == "verified":
        assert report.never_stepped == 0 and all(step.ok for step in report.steps), report.text()


# --------------------------------------------------------------------------
# The token fixtures' verdicts, checked against one large batch run for real
# --------------------------------------------------------------------------

# Each token fixture's loss as one large batch reduces it: the mean over the
# window's real tokens, or (the budget fixture) their sum over a fixed budget.
TOKEN_LOSSES = {
    "token_mean_per_micro_batch.py": "mean",
    "token_masked_mean.py": "mean",
    "token_num_items_helper.py": "mean",
    "token_sums_flushed.py": "mean",
    "token_budget.py": "budget",
}


def _large_batch_agrees(script: Path) -> bool:
    """Run the script plainly; at each step, compare the optimizer's gradients with one
    large batch of the window's 4 micro-batches, recomputed on a copy of the model."""
    import copy
    import runpy

    import torch.nn.functional as F
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    snapshots: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []

    def record(optimizer, args, kwargs):  # noqa: ANN001
        params = [p for group in optimizer.param_groups for p in group["params"]]
        snapshots.append(([p.detach().clone() for p in params], [p.grad.detach().clone() for p in params]))

    handle = register_optimizer_step_pre_hook(record)
    sys.path.insert(0, str(VERIFY))
    try:
        names = runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.path.remove(str(VERIFY))
        handle.remove()
    batches, vocab = names["batches"], names["VOCAB"]
    agree = []
    for step, (weights, grads) in enumerate(snapshots):
        model = copy.deepcopy(names["model"])
        with torch.no_grad():
            for param, weight in zip(model.parameters(), weights):
                param.copy_(weight)
        window = batches[4 * step:4 * step + 4]
        ids = torch.cat([b[0] for b in window])
        targets = torch.cat([b[1] for b in window])
        logits = model(ids).view(-1, vocab)
        if TOKEN_LOSSES[script.name] == "mean":
            loss = F.cross_entropy(logits, targets.view(-1), ignore_index=-100)
        else:
            loss = F.cross_entropy(logits, targets.view(-1), ignore_index=-100, reduction="sum") / names["token_budget"]
        reference = torch.autograd.grad(loss, list(model.parameters()))
        agree.append(all(torch.allclose(g, r, rtol=1e-4, atol=1e-7) for g, r in zip(grads, reference)))
    return all(agree)


@pytest.mark.parametrize("name", sorted(TOKEN_LOSSES))
def test_token_verdicts_agree_with_a_real_large_batch(name: str) -> None:
    report = verify_script(VERIFY / name, device="cpu")
    assert report.ok == _large_batch_agrees(VERIFY / name), report.text()


# --------------------------------------------------------------------------
# What the report says about each shape
# --------------------------------------------------------------------------


def test_a_gan_is_judged_optimizer_by_optimizer() -> None:
    report = verify_script(VERIFY / "gan_two_optimizers.py", device="cpu")
    assert report.ok and "GA102" not in report.codes, report.text()
    # 2 passes x 8 micro-batches x 2 optimizers, each against its own loss.
    assert len(report.steps) == 32 and all(step.micro_batches == 1 for step in report.steps)


def test_token_sums_flushed_with_their_count_say_so() -> None:
    report = verify_script(VERIFY / "token_sums_flushed.py", device="cpu")
    assert report.ok, report.text()
    assert report.accepted() == [
        "steps 1-2: a summed loss whose gradients were divided, after the backward, by the window's token count "
        "(62): the large batch's mean over its tokens"]


def test_the_raw_loss_comes_from_the_graph() -> None:
    method = verify_script(VERIFY / "method_divisor.py", device="cpu")
    assert method.raw_loss == (
        "line 32 `loss.backward()`: the loss before `loss / self._window_len(idx)` (line 31); "
        "reduced as a mean over 4 elements (MseLoss)",)
    tokens = verify_script(VERIFY / "token_num_items_helper.py", device="cpu")
    assert tokens.raw_loss[0].endswith("reduced as a sum (NllLoss of 14 elements)"), tokens.raw_loss


def test_the_fixers_output_passes_with_a_smaller_last_micro_batch() -> None:
    source = (VERIFY / "tail_110.py").read_bytes()
    outcome = fix_source(source, Selection(), unsafe=True)
    assert outcome.changed
    report = verify_script(VERIFY / "tail_110.py", source=outcome.fixed, device="cpu")
    assert report.ok and report.exit_code == 0, report.text()
    assert report.accepted()[0].startswith("step 4: the code computes the mean of the 2 micro-batch means")


def test_a_renamed_divisor_is_still_read(tmp_path: Path) -> None:
    # No accumulation-like name anywhere: the divisor is judged by its value.
    script = tmp_path / "renamed.py"
    script.write_text((RUNNABLE / "ga203_misscaled_tail.fixed.py").read_text().replace(
        "accumulation_steps", "n").replace("window", "w"))
    report = verify_script(script, device="cpu")
    assert report.ok, report.text()
    unscaled = tmp_path / "unscaled.py"
    unscaled.write_text((RUNNABLE / "ga201_unscaled.py").read_text().replace("accumulation_steps", "n"))
    assert verify_script(unscaled, device="cpu").codes == {"GA201"}


def test_a_missing_package_is_one_line_exit_2(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("import gacclint_no_such_package_anywhere\n" + (RUNNABLE / "ga201_unscaled.py").read_text())
    result = CliRunner().invoke(main, ["verify", str(script), "--device", "cpu"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"gacclint: {script}: could not verify: the code needs the package `gacclint_no_such_package_anywhere`, "
        "which is not installed here (pip install gacclint_no_such_package_anywhere)"]


# --------------------------------------------------------------------------
# GradientMismatch: an AssertionError with the facts
# --------------------------------------------------------------------------


def _setup(k: int = 4):
    torch.manual_seed(3)
    features = torch.randn(32, 3)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(features, features.sum(1, keepdim=True)), batch_size=4)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    return model, loader, torch.optim.SGD(model.parameters(), lr=0.1), k


def train_unscaled(model, loader, optimizer, k):  # noqa: ANN001
    loss_fn = torch.nn.MSELoss()
    for i, (x, y) in enumerate(loader):
        loss_fn(model(x), y).backward()
        if (i + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()


def test_gradient_mismatch_carries_step_parameter_norms_and_code() -> None:
    with pytest.raises(GradientMismatch) as raised:
        assert_gradients_match(train_unscaled, *_setup())
    error = raised.value
    assert isinstance(error, AssertionError)
    assert (error.step, error.code) == (1, "GA201")
    assert error.parameter is not None and error.parameter.startswith("Sequential.")
    assert error.actual_norm == pytest.approx(4 * error.expected_norm, rel=1e-4)
    assert str(error).startswith(f"gradient accumulation differs from the large batch: step 1, {error.parameter}")
    assert error.report.codes == {"GA201"}


def test_pytest_shows_a_mismatch_as_a_failure(tmp_path: Path) -> None:
    # A user's own test module, as the README shows it.
    (tmp_path / "train_lib.py").write_text(textwrap.dedent("""
        import torch

        def train(model, loader, optimizer, k):
            loss_fn = torch.nn.MSELoss()
            for i, (x, y) in enumerate(loader):
                loss_fn(model(x), y).backward()
                if (i + 1) % k == 0:
                    optimizer.step()
                    optimizer.zero_grad()
    """))
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        import torch
        from gacclint.runtime import assert_gradients_match
        from train_lib import train

        def test_accumulation():
            features = torch.randn(16, 3)
            loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(features, features[:, :1]),
                                                 batch_size=4)
            model = torch.nn.Linear(3, 1)
            assert_gradients_match(train, model, loader, torch.optim.SGD(model.parameters(), lr=0.1), 4)
    """))
    environment = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
                            capture_output=True, text=True, cwd=tmp_path, env=environment)
    assert result.returncode == 1, result.stdout
    assert result.stdout.splitlines()[-1].startswith("1 failed"), result.stdout
    assert "GradientMismatch: gradient accumulation differs from the large batch: step 1" in result.stdout


def test_the_probe_leaves_torch_as_it_found_it(tmp_path: Path) -> None:
    backward = torch.autograd.backward
    scale = torch.amp.grad_scaler.GradScaler.scale
    verify_script(VERIFY / "gan_two_optimizers.py", device="cpu", steps=3)
    crash = tmp_path / "crash.py"
    crash.write_text((RUNNABLE / "ga201_unscaled.py").read_text() + "\nraise RuntimeError('after')\n")
    assert verify_script(crash, device="cpu").exit_code == 2
    assert torch.autograd.backward is backward
    assert torch.amp.grad_scaler.GradScaler.scale is scale
    model = torch.nn.Linear(2, 1)
    model(torch.ones(1, 2)).sum().backward()
    assert model.weight._backward_hooks is None or not model.weight._backward_hooks
