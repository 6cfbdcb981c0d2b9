"""`gacclint verify` on CUDA: the CPU cases of tests/test_verify.py on `cuda`.

The verify fixtures read GACCLINT_DEVICE: on CUDA they train with fp16
autocast and an enabled GradScaler (on CPU, bf16 autocast without one). These
tests are marked `cuda` and skip without a GPU (`pytest -m cuda` runs only them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from gacclint.runtime import verify_script  # noqa: E402
from gacclint.runtime.report import AMP  # noqa: E402
from gacclint.runtime.run import verify_file_function  # noqa: E402

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

VERIFY = Path(__file__).resolve().parent.parent / "fixtures" / "verify"
AMP_CASES = {
    "amp_ga201_unscaled": "GA201",
    "amp_ga102_clear_every_batch": "GA102",
    "amp_ga202_dropped_tail": "GA202",
    "amp_ga203_misscaled_tail": "GA203",
}


@pytest.mark.parametrize("name, code", AMP_CASES.items())
def test_fp16_gradscaler_buggy_is_diagnosed_and_fixed_verifies(name: str, code: str) -> None:
    buggy = verify_script(VERIFY / f"{name}.py", device="cuda")
    assert buggy.verdict == "mismatch" and code in buggy.codes, buggy.text()
    fixed = verify_script(VERIFY / f"{name}.fixed.py", device="cuda")
    assert fixed.ok, fixed.text()
    assert fixed.device == "cuda"
    assert fixed.tolerance.precision == "autocast float16 with float32 gradients and a GradScaler"
    assert (fixed.tolerance.rtol, fixed.tolerance.atol) == (AMP.rtol, AMP.atol)


def test_smaller_last_micro_batch_on_cuda() -> None:
    assert verify_script(VERIFY / "tail_110.py", device="cuda").codes == {"GA203"}
    windowed = verify_script(VERIFY / "tail_110.fixed.py", device="cuda")
    assert windowed.ok and windowed.accepted(), windowed.text()  # the mean of micro-batch means, said and accepted
    assert verify_script(VERIFY / "tail_110_samples.py", device="cuda").ok


@pytest.mark.parametrize("name", ["token_mean_per_micro_batch", "token_num_items_helper", "gan_two_optimizers",
                                  "double_divided", "method_divisor"])
def test_loss_shapes_on_cuda(name: str) -> None:
    # The fixtures build CPU tensors; verify's own bookkeeping follows their device either way.
    expected = "mismatch" if name in ("token_mean_per_micro_batch", "double_divided") else "verified"
    assert verify_script(VERIFY / f"{name}.py", device="cuda").verdict == expected


def test_batchnorm_and_function_fixture_on_cuda() -> None:
    batchnorm = verify_script(VERIFY / "batchnorm.py", device="cuda")
    assert batchnorm.ok and batchnorm.notes, batchnorm.text()
    function = VERIFY / "function"
    report = verify_file_function(function / "train_lib.py", "train_one_epoch", function / "fixture.py",
                                  device="cuda")
    assert report.ok, report.text()
