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
