from __future__ import annotations

from typing import Iterator

from gacclint.fixes.edits import MoveAfter, Remove
from gacclint.loops.model import EventKind, LoopVariant, ResolvedEvent, TrainingLoop
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import can_move_to, per_micro_batch, same_block_after


class ScalerUpdatePerMicroBatch(Rule):
    """
    ## What it does
    Checks for accumulation loops that call `scaler.update()` on every
    micro-batch while `scaler.step(optimizer)` runs only at the accumulation
    boundary.

    ## Why is this bad?
    `GradScaler.update()` adjusts the loss scale from the inf/NaN checks that
    `scaler.step` (or `scaler.unscale_`) recorded since the last update. On a
    micro-batch where no step ran there is nothing to update from: an enabled
    scaler raises `AssertionError: No inf checks were recorded prior to
    update`, and a scaler enabled by a flag (`enabled=args.fp16`) does so the
    day the flag is turned on. The scale must change once per optimizer step.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        with torch.autocast("cuda"):
            loss = loss_fn(model(x), y) / k
        scaler.scale(loss).backward()
        scaler.update()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            scaler.step(optimizer)
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        with torch.autocast("cuda"):
            loss = loss_fn(model(x), y) / k
        scaler.scale(loss).backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    ```

    ## Fix safety
    Safe: `scaler.update()` is moved (with the comment lines above it) into
    the step's block, directly after `scaler.step(...)`, keeping the order
    `unscale_` -> clip -> `scaler.step` -> `scaler.update` -> clear. If the
    block already updates the scaler, the per-micro-batch call is removed.
    No fix is offered when the call sits under a configuration switch the
    step does not share.
    """

    code = "GA404"
    name = "scaler-update-per-micro-batch"

    VALID = [
        Valid("""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / k
    scaler.scale(loss).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""", "updated in the step's block"),
        Valid("""
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""", "no accumulation: a step on every micro-batch"),
        Valid("""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / k
    scaler.scale(loss).backward()
    if ready_to_step(i):
        scaler.step(optimizer)
        optimizer.zero_grad()
    scaler.update()
""", "an opaque guard is never a basis"),
    ]
    INVALID = [
        Invalid("""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / k
    scaler.scale(loss).backward()
    # adjust the loss scale
    scaler.update()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.step(optimizer)
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / k
    scaler.scale(loss).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.step(optimizer)
        # adjust the loss scale
        scaler.update()
        optimizer.zero_grad()
""", also=("GA203",)),
        Invalid("""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / k
    scaler.scale(loss).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    scaler.update()
""", fixed="""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / k
    scaler.scale(loss).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""", why="the block already updates: the stray call is removed", also=("GA203",)),
        Invalid("""
while True:
    for micro_step in range(gradient_accumulation_steps):
        with ctx:
            loss = model(X, Y) / gradient_accumulation_steps
        scaler.scale(loss).backward()
        scaler.update()
    scaler.step(optimizer)
    optimizer.zero_grad(set_to_none=True)
""", fixed="""
while True:
    for micro_step in range(gradient_accumulation_steps):
        with ctx:
            loss = model(X, Y) / gradient_accumulation_steps
        scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
""", why="the nanoGPT shape"),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        reported: set[int] = set()
        for variant, update, steps in per_micro_batch(loop, EventKind.SCALER_UPDATE):
            scaler = update.event.via_scaler
            scaler_steps = [s for s in steps if s.event.via_scaler == scaler]
            if not scaler_steps or id(update.event.node) in reported:
                continue
            reported.add(id(update.event.node))
            yield self.finding(
                f"`{scaler}.update()` runs on every micro-batch but `{scaler}.step(...)` only once per accumulation "
                "window: the scale is updated on micro-batches where no step recorded inf checks",
                update.event.node, self._fix(variant, update, scaler_steps[0]))

    def _fix(self, variant: LoopVariant, update: ResolvedEvent, step: ResolvedEvent) -> Fix | None:
        if not can_move_to(update.event, step):
            return None
        scaler = update.event.via_scaler
        following = same_block_after(variant, step, {EventKind.SCALER_UPDATE})
        if any(e.event.via_scaler == scaler for e in following):
            return Fix(Applicability.SAFE, f"Remove the per-micro-batch `{scaler}.update()`",
                       (Remove(update.event.statement),))
        return Fix(Applicability.SAFE, f"Move `{scaler}.update()` after `{scaler}.step(...)`",
                   (MoveAfter(update.event.statement, step.event.statement),))
