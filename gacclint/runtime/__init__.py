"""The runtime gradient checker behind `gacclint verify`, also usable in tests.

`gacclint check` reads code; this package *runs* it. It executes a training
loop with the loop rewritten in memory (see :mod:`gacclint.runtime.instrument`)
and confirms, for every optimizer step, that the gradient the optimizer sees
is the one the same loss, reduced as the code reduces it (a mean over samples
or tokens, or a sum), gives on the step's window taken as one large batch.
Which loss and which scaling come from the autograd graph at run time (see
:mod:`gacclint.runtime.probe`), never from names. A mismatch raised by
:func:`assert_gradients_match` is a :class:`GradientMismatch`, an
`AssertionError` carrying the step, the parameter, the norms and the rule code.

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
