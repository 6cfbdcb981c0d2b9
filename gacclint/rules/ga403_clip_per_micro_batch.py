from __future__ import annotations

from typing import Iterator

import libcst as cst

from gacclint.fixes.edits import Edit, MoveBefore, Remove, Replace
from gacclint.loops.model import EventKind, GuardKind, LoopVariant, ResolvedEvent, TrainingLoop
from gacclint.loops.vocabulary import code_of
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import alone_on_its_line, can_move_to, per_micro_batch, switches_of


class ClipPerMicroBatch(Rule):
    """
    ## What it does
    Checks for accumulation loops that clip the gradients on every
    micro-batch, while the optimizer steps only once per window of `k`.

    ## Why is this bad?
    Between steps `.grad` holds a partial sum of the window's gradients.
    Clipping it after every micro-batch bounds each partial sum instead of
    the gradient the step applies: early micro-batches are clipped again and
    again, the window's gradient is no longer the large-batch one, and the
    clipping threshold no longer means what it says. Clip once, on the full
    window, just before the step.

    Clipping under the step's boundary (or under accelerate's
    `if accelerator.sync_gradients:`) is fine. Inside accelerate's
    `accumulate()` (with an accumulation count above 1) the prepared
    optimizer's step and clear are skipped between boundaries, but a clip is
    not: an unguarded `accelerator.clip_grad_norm_` clips every partial sum
    (and with fp16 unscales the same gradients again).

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
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
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix safety
    Safe: the clip is moved (with the comment lines above it) into the step's
    block, directly before the step, so the order is `unscale_` -> clip ->
    `scaler.step` -> `scaler.update` -> clear. A per-micro-batch
    `scaler.unscale_(opt)` right before the clip moves with it (or is removed
    when the block already unscales). If the block already clips, the
    per-micro-batch clip is removed. No fix is offered when the clip's value
    is used (`norm = clip_grad_norm_(...)`) or when it sits under a
    configuration switch the step does not share. Inside accelerate's
    `accumulate()` the clip is put under `if accelerator.sync_gradients:`
    (the comment lines above it stay above the `if`).
    """

    code = "GA403"
    name = "clip-per-micro-batch"

    VALID = [
        Valid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        optimizer.zero_grad()
""", "clipped in the step's block"),
        Valid("""
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    optimizer.zero_grad()
""", "no accumulation"),
        Valid("""
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        optimizer.zero_grad()
""", "accelerate: clipped only when gradients sync"),
        Valid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if i % n_critic == 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", "under another guard: not every micro-batch"),
        Valid("""
def train(generator, discriminator, loader, k):
    opt_g = torch.optim.Adam(generator.parameters())
    for i, (x, y) in enumerate(loader):
        loss = generator(x).mean() / k
        loss.backward()
        clip_grad_norm_(discriminator.parameters(), 1.0)
        if (i + 1) % k == 0 or i + 1 == len(loader):
            clip_grad_norm_(generator.parameters(), 1.0)
            opt_g.step()
            opt_g.zero_grad()
""", "the per-micro-batch clip reads the discriminator's parameters, which no optimizer of the window steps"),
        Valid("""
accelerator = Accelerator()
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        optimizer.zero_grad()
""", "no accumulation count is given to accelerate: every micro-batch is a boundary"),
        Valid("""
class TrainingConfig:
    gradient_accumulation_steps = 1


config = TrainingConfig()
accelerator = Accelerator(gradient_accumulation_steps=config.gradient_accumulation_steps)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for batch in loader:
    with accelerator.accumulate(model):
        accelerator.backward(model(**batch).loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
""", "accelerate is given the count 1 through a class constant: every micro-batch is a boundary"),
    ]
    INVALID = [
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    # keep the update bounded
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        # keep the update bounded
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        optimizer.zero_grad()
""", also=("GA203",)),
        Invalid("""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / k
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / k
    scaler.scale(loss).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""", why="the unscale_ before the clip moves with it", also=("GA203",)),
        Invalid("""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / k
    scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / k
    scaler.scale(loss).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""", why="moved after the block's unscale_", also=("GA203", "GA402")),
        Invalid("""
for step, batch in enumerate(loader):
    loss = model(**batch).loss / k
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    log(grad_norm)
    if (step + 1) % k == 0 or step + 1 == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed=None, applicability=None, why="the clip's value is used: reported, not moved", also=("GA203",)),
        Invalid("""
window = []
for epoch in range(epochs):
    for x, y in examples:
        loss = model(x, y) / grad_accum
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        window.append(loss.item())
        if len(window) % grad_accum == 0:
            optimizer.step()
            model.zero_grad()
            window = []
""", fixed="""
window = []
for epoch in range(epochs):
    for x, y in examples:
        loss = model(x, y) / grad_accum
        loss.backward()
        window.append(loss.item())
        if len(window) % grad_accum == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            model.zero_grad()
            window = []
""", why="the count is the length of a list the loop appends to once per micro-batch and empties at the step"),
        Invalid("""
def train(net_a, net_b, loader, k):
    opt_a = torch.optim.Adam(net_a.parameters())
    opt_b = torch.optim.Adam(net_b.parameters())
    for i, (x, y) in enumerate(loader):
        loss_a = net_a(x).mean() / k
        loss_a.backward()
        clip_grad_norm_(net_a.parameters(), 1.0)
        if (i + 1) % k == 0 or i + 1 == len(loader):
            opt_a.step()
            opt_a.zero_grad()
        loss_b = net_b(y).mean() / k
        loss_b.backward()
        clip_grad_norm_(net_b.parameters(), 1.0)
        if (i + 1) % k == 0 or i + 1 == len(loader):
            opt_b.step()
            opt_b.zero_grad()
""", fixed="""
def train(net_a, net_b, loader, k):
    opt_a = torch.optim.Adam(net_a.parameters())
    opt_b = torch.optim.Adam(net_b.parameters())
    for i, (x, y) in enumerate(loader):
        loss_a = net_a(x).mean() / k
        loss_a.backward()
        if (i + 1) % k == 0 or i + 1 == len(loader):
            clip_grad_norm_(net_a.parameters(), 1.0)
            opt_a.step()
            opt_a.zero_grad()
        loss_b = net_b(y).mean() / k
        loss_b.backward()
        if (i + 1) % k == 0 or i + 1 == len(loader):
            clip_grad_norm_(net_b.parameters(), 1.0)
            opt_b.step()
            opt_b.zero_grad()
""", also=("GA203",), why="two windows, each clipped on every micro-batch: each clip moves to the step of the "
            "optimizer whose parameters it clips"),
        Invalid("""
opt = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()))
for i, (x, y) in enumerate(loader):
    loss = F.cross_entropy(head(encoder(x)), y) / k
    loss.backward()
    clip_grad_norm_(encoder.parameters(), 1.0)
    clip_grad_norm_(head.parameters(), 5.0)
    if (i + 1) % k == 0 or i + 1 == len(loader):
        opt.step()
        opt.zero_grad()
""", fixed="""
opt = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()))
for i, (x, y) in enumerate(loader):
    loss = F.cross_entropy(head(encoder(x)), y) / k
    loss.backward()
    if (i + 1) % k == 0 or i + 1 == len(loader):
        clip_grad_norm_(encoder.parameters(), 1.0)
        clip_grad_norm_(head.parameters(), 5.0)
        opt.step()
        opt.zero_grad()
""", also=("GA203",), why="two clips of different parameters before one step: both move, in their order"),
        Invalid("""
for i, x in enumerate(loader):
    loss = model(x) / args.accum
    if args.fp16 and USE_NATIVE:
        scaler.scale(loss).backward()
    elif args.fp16 and USE_APEX:
        loss.backward()
    else:
        loss.backward()
    if args.clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
    if (i + 1) % args.accum == 0 or i + 1 == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed=None, applicability=None, also=("GA203",),
            why="`args.fp16 and USE_NATIVE` and `args.fp16 and USE_APEX` are values of three switches, not switches of "
                "their own: the variants stay few enough to read the clip under `args.clip > 0` (no fix: the clip "
                "sits under a switch the step is not under)"),
        Invalid("""
accelerator = Accelerator(gradient_accumulation_steps=4)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss)
        # keep updates small
        accelerator.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
accelerator = Accelerator(gradient_accumulation_steps=4)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss)
        # keep updates small
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        optimizer.zero_grad()
""", why="accelerate skips the prepared optimizer's step between boundaries, never the clip: it clips every "
            "partial sum"),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        reported: set[int] = set()
        yield from self._accelerate(loop, model, reported)
        for variant, clip, steps in per_micro_batch(loop, EventKind.CLIP):
            if not steps or id(clip.event.node) in reported:
                continue
            reported.add(id(clip.event.node))
            # The step of the optimizer whose parameters the clip reads (two windows, each with its
            # own clip): the first later step the clip visibly covers, else the first step.
            later = [s for s in steps if s.event.order > clip.event.order] or steps
            if all(model.facts.clip_misses(clip.event.node, s.event.receiver) for s in steps):
                continue  # it clips parameters no optimizer of the window steps: nothing it clips is applied
            covered = [s for s in later if model.facts.clip_covers(clip.event.node, s.event.receiver)]
            step = (covered or later)[0]
            # Several later steps, none of them visibly the clip's: which one it belongs with is not known.
            unsure = not covered and len({s.event.receiver for s in later}) > 1
            yield self.finding(
                f"gradients are clipped on every micro-batch but `{step.event.receiver}` steps once per "
                "accumulation window: each partial sum is clipped instead of the window's gradient",
                clip.event.node, None if unsure else self._fix(variant, clip, step))

    def _accelerate(self, loop: TrainingLoop, model, reported: set[int]) -> Iterator[Finding]:
        """Inside accelerate's `accumulate()` with a count above 1, a clip that no
        `if accelerator.sync_gradients:` guards runs on every micro-batch: accelerate skips the
        prepared optimizer's step and clear between boundaries, never a clip."""
        if not {"accelerate-accumulate", "accelerate-gas"} <= loop.frameworks or "deepspeed" in loop.frameworks \
                or not model.facts.accelerate_may_accumulate():
            return
        for variant in loop.variants:
            for clip in variant.of(EventKind.CLIP):
                event = clip.event
                wrapped = event.accumulate_context
                if clip.guard.kind is not GuardKind.NONE or event.in_inner_loop or wrapped is None \
                        or id(event.node) in reported:
                    continue
                if not any(s.event.framework is None and s.event.contexts == event.contexts for s in variant.steps):
                    continue  # no prepared optimizer steps in the same `accumulate()` block
                reported.add(id(event.node))
                accelerator = wrapped[0]
                fix = None
                if alone_on_its_line(event) and event.editable:
                    guarded = cst.If(test=cst.parse_expression(f"{accelerator}.sync_gradients"),
                                     body=cst.IndentedBlock(body=[event.statement.with_changes(leading_lines=())]),
                                     leading_lines=event.statement.leading_lines)
                    fix = Fix(Applicability.SAFE, f"Clip only when `{accelerator}.sync_gradients`",
                              (Replace(event.statement, guarded),))
                yield self.finding(
                    "gradients are clipped on every micro-batch inside `accumulate()`, while accelerate steps once "
                    "per accumulation window: each partial sum is clipped instead of the window's gradient",
                    event.node, fix)

    def _fix(self, variant: LoopVariant, clip: ResolvedEvent, step: ResolvedEvent) -> Fix | None:
        if not can_move_to(clip.event, step):
            return None
        in_block = [e for e in variant.events if e.guard == step.guard and e.event.order < step.event.order
                    and e.event.in_window_loop == step.event.in_window_loop
                    and switches_of(e.event) == switches_of(step.event)]
        if any(e.kind is EventKind.CLIP and code_of(e.event.node) == code_of(clip.event.node) for e in in_block):
            # the same clip runs at the boundary already: the per-micro-batch one only adds partial clips
            return Fix(Applicability.SAFE, "Remove the per-micro-batch clip", (Remove(clip.event.statement),))
        edits: list[Edit] = []
        # `scaler.unscale_(opt)` on every micro-batch right before the clip goes along.
        index = variant.events.index(clip)
        previous = variant.events[index - 1] if index > 0 else None
        if (previous is not None and previous.kind is EventKind.UNSCALE and previous.guard.kind is GuardKind.NONE
                and previous.event.in_window_loop == clip.event.in_window_loop):
            if any(e.kind is EventKind.UNSCALE for e in in_block):
                edits.append(Remove(previous.event.statement))
            elif can_move_to(previous.event, step):
                edits.append(MoveBefore(previous.event.statement, step.event.statement))
            else:
                return None
        edits.append(MoveBefore(clip.event.statement, step.event.statement))
        return Fix(Applicability.SAFE, f"Move the clip before `{step.event.receiver}` steps", tuple(edits))
