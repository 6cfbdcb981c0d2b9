from __future__ import annotations

from typing import Iterator

import libcst as cst

from gacclint.fixes.edits import MoveAfter, Remove
from gacclint.fixes.schedule import schedule_of
from gacclint.loops.events import advances_schedule
from gacclint.loops.model import EventKind, GuardKind, LoopVariant, ResolvedEvent, Shape, TrainingLoop
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import atom, can_move_to, per_micro_batch, same_block_after


class SchedulerPerMicroBatch(Rule):
    """
    ## What it does
    Checks for accumulation loops that advance a learning-rate scheduler on
    every micro-batch while the optimizer steps only once per window of `k`.

    ## Why is this bad?
    A schedule is written in optimizer steps (warm-up for 1000 steps, cosine
    decay over the run). Stepped per micro-batch, it advances `k` times too
    fast: warm-up ends `k` times early and the learning rate reaches its
    floor after `1 / k` of training.

    A scheduler stepped in the epoch loop or in the step's block is fine, and
    so is a call that passes a position (`sched.step(epoch)`,
    `sched.step(global_step)`): it sets the rate rather than advancing it.
    accelerate's `accumulate()` skips a prepared scheduler between boundaries.
    A schedule whose every length is built in the same file as a product with
    `k` (`num_training_steps=max_steps * k`) was sized in micro-batches by its
    author: stepped on each one, it runs as written.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        scheduler.step()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    ```

    ## Fix safety
    The `.step()` call is moved (with the comment lines above it) into the
    step's block, after the step (after `scaler.update()` and the schedulers
    already stepped there). The schedule then advances once per window, so
    where the scheduler is built in the same file, each of its lengths
    computed from the data's length and not yet divided by `k`
    (`num_training_steps = epochs * len(loader)`, `T_max`, `total_steps`,
    warm-up steps) is divided by `k` there (`num_training_steps // k`), and
    the fix is safe; a schedule written in optimizer steps (a literal, a
    warm-up lambda) is left as it is, also safe. When the scheduler is built
    outside the file, or `k` cannot be read where it is built, the fix is
    unsafe and its message says why. If the block already steps the same
    scheduler, the per-micro-batch call is removed instead (safe). No fix is
    offered when the call is part of a larger statement or sits under a
    configuration switch the step does not share.
    """

    code = "GA401"
    name = "scheduler-per-micro-batch"

    VALID = [
        Valid("""
accelerator = Accelerator(gradient_accumulation_steps=args.accum)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
scheduler = get_linear_schedule_with_warmup(optimizer, 100 * args.accum, 1000 * args.accum)
for batch in loader:
    with accelerator.accumulate(model):
        accelerator.backward(model(**batch).loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
""", "not prepared, but sized in micro-batches (each length a product with accelerate's count): it runs as written"),
        Valid("""
accelerator = Accelerator(gradient_accumulation_steps=4)
scheduler = get_linear_schedule_with_warmup(optimizer, 100, 1000)
model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
for batch in loader:
    with accelerator.accumulate(model):
        accelerator.backward(model(**batch).loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
""", "a prepared scheduler is held back between boundaries by `accumulate()`"),
        Valid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
""", "stepped in the step's block"),
        Valid("""
for epoch in range(epochs):
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
    scheduler.step()
""", "a per-epoch scheduler"),
        Valid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
""", "no accumulation"),
        Valid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    scheduler.step(epoch + i / len(loader))
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", "a position is passed: it sets the rate"),
        Valid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if should_step(i):
        optimizer.step()
        optimizer.zero_grad()
    scheduler.step()
""", "an opaque guard is never a basis"),
        Valid("""
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
""", "accumulate() skips a prepared scheduler between boundaries"),
        Valid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k != 0:
        continue
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
""", "after an early `continue` the scheduler runs once per window"),
        Valid("""
def train(model, loader, optimizer, max_steps, warmup, k):
    total = max_steps * k
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
    for i, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / k).backward()
        scheduler.step()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", "every length of the schedule is sized as a product with k: its author counted micro-batches, and "
            "stepping it on each one runs it as written"),
    ]
    INVALID = [
        Invalid("""
accelerator = Accelerator(gradient_accumulation_steps=4)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
scheduler = get_linear_schedule_with_warmup(optimizer, 100, 1000)
for batch in loader:
    with accelerator.accumulate(model):
        accelerator.backward(model(**batch).loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
""", fixed=None, applicability=None,
            why="a scheduler never handed to `accelerator.prepare` is not held back between boundaries (no fix: "
                "preparing it, or stepping it under `accelerator.sync_gradients`, is the author's choice)"),
        Invalid("""
def train(model, loader, optimizer, max_steps, k):
    scheduler = get_linear_schedule_with_warmup(optimizer, 100, max_steps * k)
    for i, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / k).backward()
        scheduler.step()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
def train(model, loader, optimizer, max_steps, k):
    scheduler = get_linear_schedule_with_warmup(optimizer, 100, (max_steps * k) // k)
    for i, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / k).backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
""", why="the total multiplied by k counts micro-batches (the warm-up is read as optimizer steps): divided by k "
                "where the schedule now advances per step",
            also=("GA203",)),
        Invalid("""
class Trainer:
    def __init__(self):
        self.accumulation = 4
        self.scheduling_step = 1
        self.count = 0

    def train(self, loader):
        for x, y in loader:
            self.count += 1
            (loss_fn(self.model(x), y) / self.accumulation).backward()
            if self.count % self.accumulation == 0:
                self.optimizer.step()
                self.optimizer.zero_grad()
            if self.count % self.scheduling_step == 0:
                self.scheduler.step()
""", fixed="""
class Trainer:
    def __init__(self):
        self.accumulation = 4
        self.scheduling_step = 1
        self.count = 0

    def train(self, loader):
        for x, y in loader:
            self.count += 1
            (loss_fn(self.model(x), y) / self.accumulation).backward()
            if self.count % self.accumulation == 0:
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
            if self.count % self.scheduling_step == 0:
                pass
""", applicability=Applicability.UNSAFE, why="`self.x` set to one literal in `__init__` holds it in every method"),
        Invalid("""
scheduling_step = 1
count = 0
for x, y in loader:
    count += 1
    (loss_fn(model(x), y) / k).backward()
    if count % k == 0:
        optimizer.step()
        optimizer.zero_grad()
    if count % scheduling_step == 0:
        scheduler.step()
""", fixed="""
scheduling_step = 1
count = 0
for x, y in loader:
    count += 1
    (loss_fn(model(x), y) / k).backward()
    if count % k == 0:
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    if count % scheduling_step == 0:
        pass
""", applicability=Applicability.UNSAFE, why="a period of 1 is every micro-batch", also=("GA202",)),
        Invalid("""
k = 4
num_training_steps = epochs * len(loader)
scheduler = get_cosine_schedule_with_warmup(optimizer, 100, num_training_steps)
for epoch in range(epochs):
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        scheduler.step()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
k = 4
num_training_steps = epochs * len(loader)
scheduler = get_cosine_schedule_with_warmup(optimizer, 100, num_training_steps // k)
for epoch in range(epochs):
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
""", why="the length counts micro-batches: divided by k where the scheduler is built", also=("GA203",)),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    # advance the warm-up
    scheduler.step()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        # advance the warm-up
        scheduler.step()
        optimizer.zero_grad()
""", applicability=Applicability.UNSAFE, why="built elsewhere: its length may count micro-batches", also=("GA203",)),
        Invalid("""
for step, batch in enumerate(loader):
    loss = model(**batch).loss
    loss = loss / args.gradient_accumulation_steps
    scaler.scale(loss).backward()
    lr_scheduler.step()
    if (step + 1) % args.gradient_accumulation_steps == 0 or step + 1 == len(loader):
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""", fixed="""
for step, batch in enumerate(loader):
    loss = model(**batch).loss
    loss = loss / args.gradient_accumulation_steps
    scaler.scale(loss).backward()
    if (step + 1) % args.gradient_accumulation_steps == 0 or step + 1 == len(loader):
        scaler.step(optimizer)
        scaler.update()
        lr_scheduler.step()
        optimizer.zero_grad()
""", applicability=Applicability.UNSAFE, why="after scaler.update()", also=("GA203",)),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    scheduler.step()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
""", why="the block already steps it: the stray call is removed", also=("GA203",)),
        Invalid("""
while True:
    for micro_step in range(gradient_accumulation_steps):
        loss = model(X, Y) / gradient_accumulation_steps
        loss.backward()
        scheduler.step()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
""", fixed="""
while True:
    for micro_step in range(gradient_accumulation_steps):
        loss = model(X, Y) / gradient_accumulation_steps
        loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
""", applicability=Applicability.UNSAFE, why="the nanoGPT shape: the window is the inner loop"),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if args.warmup:
        scheduler.step()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed=None, applicability=None, why="under a switch the step does not share: reported, not moved",
            also=("GA203",)),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        self._loop, self._model = loop, model  # what the fix reads
        reported: set[int] = set()
        yield from self._unprepared_in_accumulate(loop, model, reported)
        for variant, scheduler, steps in per_micro_batch(loop, EventKind.SCHEDULER_STEP):
            if not steps or not advances_schedule(scheduler.event.node) or id(scheduler.event.node) in reported:
                continue
            name = scheduler.event.receiver
            k = self._count(variant)
            if name is not None and k is not None and model.facts.schedule_in_micro_batches(name, k):
                continue  # sized in micro-batches: it runs as its author wrote it
            reported.add(id(scheduler.event.node))
            yield self.finding(
                f"`{name}.step()` runs on every micro-batch but `{steps[0].event.receiver}` steps once per "
                "accumulation window: the schedule advances once per micro-batch instead of once per step",
                scheduler.event.node, self._fix(variant, scheduler, steps[0]))

    def _unprepared_in_accumulate(self, loop: TrainingLoop, model, reported: set[int]) -> Iterator[Finding]:
        """Inside `accelerator.accumulate()`, a scheduler built in this module and never handed to
        `accelerator.prepare`: accelerate skips only what it prepared between boundaries, so this
        one advances on every micro-batch."""
        for variant in loop.variants:
            if "accelerate-accumulate" not in variant.frameworks:
                continue
            for scheduler in variant.of(EventKind.SCHEDULER_STEP):
                event = scheduler.event
                name = event.receiver
                if scheduler.guard.kind is not GuardKind.NONE or event.in_inner_loop or id(event.node) in reported \
                        or event.accumulate_context is None:
                    continue
                if not name or name not in model.facts.schedulers or model.facts.prepared(name) \
                        or not advances_schedule(event.node) or not self._built_here(loop, model, name):
                    continue
                if any(model.facts.schedule_in_micro_batches(name, count)
                       for count, framework in model.facts.framework_counts.items() if framework == "accelerate"):
                    continue  # sized in micro-batches: stepped on each one, it runs as written
                reported.add(id(event.node))
                yield self.finding(
                    f"`{name}.step()` runs on every micro-batch inside `accumulate()`, but `{name}` was never "
                    "passed to `accelerator.prepare`: only prepared schedulers are held back between boundaries, "
                    "so the schedule advances once per micro-batch", event.node, None)

    @staticmethod
    def _built_here(loop: TrainingLoop, model, name: str) -> bool:
        """`name` is bound where the loop runs (its function, or the module for a module-level
        loop), not handed in: a scheduler handed in may have been prepared by the caller."""
        return any(b.scope is loop.function for b in model.facts.bindings.get(name, ()))

    def _count(self, variant: LoopVariant) -> cst.BaseExpression | None:
        """The accumulation count of the variant's windows."""
        loop = self._loop
        return loop.window_k if loop.shape is Shape.INNER_WINDOW else next(
            (boundary.k for v, boundary in loop.accumulation_variants() if v is variant), None)

    def _fix(self, variant: LoopVariant, scheduler: ResolvedEvent, step: ResolvedEvent) -> Fix | None:
        if not can_move_to(scheduler.event, step):
            return None
        name = scheduler.event.receiver
        following = same_block_after(variant, step, {EventKind.SCHEDULER_STEP, EventKind.SCALER_UPDATE, EventKind.STEP})
        if any(e.kind is EventKind.SCHEDULER_STEP and e.event.receiver == name for e in following):
            return Fix(Applicability.SAFE, f"Remove the per-micro-batch `{name}.step()`",
                       (Remove(scheduler.event.statement),))
        anchor = step  # after the step, its scaler update and the schedulers already there, in order
        for event in following:
            if event.kind not in (EventKind.SCALER_UPDATE, EventKind.SCHEDULER_STEP) or not event.event.editable:
                break
            anchor = event
        move = MoveAfter(scheduler.event.statement, anchor.event.statement)
        # The schedule now advances once per window: a length counted in micro-batches is divided by k.
        k = self._count(variant)
        if k is None or name is None:
            return Fix(Applicability.UNSAFE, f"Move `{name}.step()` after `{step.event.receiver}` steps "
                       "(its schedule now advances once per window: check its length)", (move,))
        schedule = schedule_of(self._model.facts.tree, self._model.module, name, k, atom(k))
        if schedule.problem is not None:
            return Fix(Applicability.UNSAFE, f"Move `{name}.step()` after `{step.event.receiver}` steps; "
                       f"unsafe: {schedule.problem}", (move,))
        if schedule.adjusted:
            lengths = ", ".join(f"`{length}`" for length in schedule.adjusted)
            return Fix(Applicability.SAFE, f"Move `{name}.step()` after `{step.event.receiver}` steps and divide "
                       f"its {lengths} by `{atom(k)}`", (move, *schedule.edits))
        return Fix(Applicability.SAFE, f"Move `{name}.step()` after `{step.event.receiver}` steps", (move,))
