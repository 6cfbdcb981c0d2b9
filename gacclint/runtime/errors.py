"""Why a verification could not run."""

from __future__ import annotations


class CannotVerify(RuntimeError):
    """The target cannot be verified (no readable loop, no PyTorch, no CUDA, ...).

    The message says why, in one sentence a user can act on; `gacclint verify`
    prints it and exits 2.
    """


TORCH_MISSING = (
    "gacclint verify needs PyTorch, which is not installed here: "
    "`pip install 'gacclint[runtime]'` (or install the torch build for your platform from pytorch.org)"
)


class GradientMismatch(AssertionError):
    """A step's gradients differ from the large batch's (raised by `assert_gradients_match`).

    An `AssertionError`, so pytest reports a failing test, not an error. It
    carries the first differing step (1-based; None when every step matched
    but micro-batches were never stepped), the parameter furthest from its
    reference, the norms of its expected (large-batch) and actual gradient,
    the rule code of the diagnosis (None when no rule names it), and the
    whole report (`.report`, a :class:`~gacclint.runtime.report.VerifyReport`).
    """

    def __init__(self, report: object) -> None:
        self.report = report
        step = getattr(report, "first_mismatch", None)
        self.step: int | None = step.step if step is not None else None
        self.parameter: str | None = step.parameter if step is not None else None
        self.expected_norm: float | None = step.expected_norm if step is not None else None
        self.actual_norm: float | None = step.actual_norm if step is not None else None
        diagnosis = step.diagnosis if step is not None else getattr(report, "never_stepped_diagnosis", None)
        self.code: str | None = diagnosis.code if diagnosis is not None else None
        if step is not None:
            where = (f"step {self.step}, {self.parameter}: |expected| = {self.expected_norm:.6g}, "
                     f"|actual| = {self.actual_norm:.6g}" + (f" ({self.code})" if self.code else ""))
        else:
            where = diagnosis.message if diagnosis is not None else "micro-batches were never stepped"
        text = report.text(limit=None) if hasattr(report, "text") else str(report)
        super().__init__(f"gradient accumulation differs from the large batch: {where}\n{text}")


def missing_package(error: BaseException) -> str | None:
    """`needs the package deepspeed, which is not installed here` for a ModuleNotFoundError."""
    name = getattr(error, "name", None)
    if not isinstance(error, ModuleNotFoundError) or not name:
        return None
    top = name.split(".")[0]
    return f"the code needs the package `{top}`, which is not installed here (pip install {top})"
