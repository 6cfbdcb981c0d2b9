from __future__ import annotations

from typing import Iterator

from gacclint.fixes.edits import InsertAfter
from gacclint.loops.model import EventKind, GuardKind, TrainingLoop
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid


class MissingZeroGrad(Rule):
    """
    ## What it does
    Checks for training loops that step an optimizer but never clear the
    gradients between two steps.

    ## Why is this bad?
    PyTorch adds every `backward()` into `.grad`. Without a clear, each step
    applies the sum of all gradients computed so far, so updates grow with
    the number of steps and training diverges or crawls. A clear that only
    sits in the outer (epoch) loop does not help the steps inside it.

    ## Known problems
    A clear done by code this module cannot see (an imported helper, a
    callback) is not seen; name the helper in the same module or suppress.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix safety
    Safe: `<optimizer>.zero_grad()` is inserted directly after the step, in
    the same block, using the optimizer that was stepped (`scaler.step(opt)`
    gives `opt`). Gradients are then cleared exactly once per update.
    """

    code = "GA101"
    name = "missing-zero-grad"

    VALID = [
        Valid("""
for x, y in loader:
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    optimizer.step()
""", "the ordinary loop clears before every backward"),
        Valid("""
def reset(opt):
    opt.zero_grad(set_to_none=True)

for x, y in loader:
    loss_fn(model(x), y).backward()
    optimizer.step()
    reset(optimizer)
""", "a helper of the same module clears"),
        Valid("""
for batch in loader:
    loss = model_engine(batch)
    model_engine.backward(loss)
    model_engine.step()
""", "DeepSpeed's engine clears at its boundaries"),
        Valid("""
for epoch in range(epochs):
    optimizer.zero_grad()
    for i, (x, y) in enumerate(loader):
        loss_fn(model(x), y).backward()
        if i == len(loader) - 1:
            optimizer.step()
""", "an opaque guard on the step: nothing is built on it"),
        Valid("""
for x, y in loader:
    for p in model.parameters():
        p.grad = None
    loss_fn(model(x), y).backward()
    optimizer.step()
""", "clearing each parameter's .grad counts"),
    ]
    INVALID = [
        Invalid("""
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
""", fixed="""
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
"""),
        Invalid("""
for epoch in range(epochs):
    optimizer.zero_grad()
    for x, y in loader:
        with autocast():
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # update
        scaler.update()
""", fixed="""
for epoch in range(epochs):
    optimizer.zero_grad()
    for x, y in loader:
        with autocast():
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # update
        optimizer.zero_grad()
        scaler.update()
""", why="the only clear is in the epoch loop; the fix uses the optimizer of scaler.step"),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        if any(event.kind is EventKind.CLEAR for event in loop.events):
            return
        for variant in loop.variants:
            # accelerate's accumulate() skips zero_grad but never calls it for you.
            if variant.frameworks - {"accelerate-accumulate", "accelerate-gas"}:
                continue
            steps = [s for s in variant.steps if s.event.framework is None and not s.event.in_inner_loop
                     and s.guard.kind in {GuardKind.NONE, GuardKind.BOUNDARY}
                     and s.event.receiver not in loop.fresh_optimizers]
            if not steps or not variant.backwards:
                continue
            step = steps[0]
            receiver = step.event.receiver
            fix = None
            if receiver and step.event.editable:
                fix = Fix(Applicability.SAFE, f"Insert `{receiver}.zero_grad()` after the step",
                          (InsertAfter(step.event.statement, f"{receiver}.zero_grad()"),))
            yield self.finding(
                f"`{receiver}` is stepped but gradients are never cleared in this loop: "
                "every step applies the sum of all gradients so far",
                step.event.node, fix)
            return
