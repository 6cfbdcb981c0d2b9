"""The runtime gradient checker behind `gacclint verify`, also usable in tests.

`gacclint check` reads code; this package *runs* it. It executes a training
loop with the loop rewritten in memory (see :mod:`gacclint.runtime.instrument`)
and confirms, for every optimizer step, that the gradient the optimizer sees
is the large-batch gradient of that step's window: the sample-weighted mean
of the gradients of exactly the micro-batches since the previous step.

Library use, e.g. in a project's own tests::

    from gacclint.runtime import assert_gradients_match

    def test_accumulation_is_exact():
        model, loader, optimizer = make_small_setup()
        assert_gradients_match(train_one_epoch, model, loader, optimizer, steps=3)

Importing the package does not import PyTorch (`gacclint check` never loads
it); the functions load it when they run.
"""

from __future__ import annotations

from gacclint.runtime.errors import CannotVerify, GradientMismatch
from gacclint.runtime.report import Diagnosis, StepResult, Tolerance, VerifyReport
from gacclint.runtime.run import DEVICE_ENV, assert_gradients_match, verify_function, verify_script

__all__ = [
    "DEVICE_ENV",
    "CannotVerify",
    "Diagnosis",
    "GradientMismatch",
    "StepResult",
    "Tolerance",
    "VerifyReport",
    "assert_gradients_match",
    "verify_function",
    "verify_script",
]
