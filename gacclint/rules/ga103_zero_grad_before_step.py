from __future__ import annotations

from typing import Iterator

import libcst as cst

from gacclint.fixes.edits import InsertAfter, MoveAfter, Remove
from gacclint.fixes.statements import guarding_if, whole_statement
from gacclint.loops.model import ConditionKind, Event, ResolvedEvent, TrainingLoop
from gacclint.loops.vocabulary import looks_like_optimizer
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import alone_on_its_line, clear_text, within


class ZeroGradBeforeStep(Rule):
    """
    ## What it does
    Checks for a gradient clear that runs after the backward and before the
    optimizer step that should use those gradients.

    ## Why is this bad?
    The step then applies zero (or partial) gradients: the parameters do not
    move, or move with only part of the batch, while the loss is still
    computed and logged as if training were happening.

    ## Known problems
    Only a clear of the stepped optimizer (or of the model, when the loop
    steps a single optimizer) is reported; a clear of an unrelated optimizer
    in a GAN loop is left alone.

    ## Example
    ```python
    for x, y in loader:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.zero_grad()
        optimizer.step()
    ```

    ## Use instead
    ```python
    for x, y in loader:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    ```

    ## Fix safety
    Safe: the clear is moved to directly after the step, keeping the comment
    lines above it; the next backward then starts from cleared gradients.
    """

    code = "GA103"
    name = "zero-grad-before-step"

    VALID = [
        Valid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)
    (loss / k).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        if loss.item() > limit:
            optimizer.zero_grad()
        else:
            optimizer.step()
            optimizer.zero_grad()
""", "the clear that drops a spiking window and the step sit in opposite branches of one `if`: never both run"),
        Valid("""
for epoch in range(epochs):
    for x in loader:
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        if epoch < freeze_last_layer:
            for p in model.last_layer.parameters():
                p.grad = None
        optimizer.step()
""", "clearing some parameters' gradients before the step freezes them (DINO, SwAV): which ones is not read"),
        Valid("""
def maybe_reset(opt, now):
    if now:
        opt.zero_grad()


for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    maybe_reset(optimizer, debug)
    optimizer.step()
""", "the helper clears only when a flag the module cannot see is set: an opaque guard"),
        Valid("""
for x, y in loader:
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    optimizer.step()
""", "clear before the backward"),
        Valid("""
for real, _ in loader:
    optD.zero_grad()
    d_loss(D, G, real).backward()
    optD.step()
    optG.zero_grad()
    g_loss(D, G).backward()
    optG.step()
""", "GAN: each clear is followed by its own backward before its step"),
        Valid("""
for x, y in loader:
    loss_fn(model(x), y).backward()
    if should_clip(x):
        optimizer.zero_grad()
    optimizer.step()
""", "an opaque guard on the clear"),
        Valid("""
for i, batch in enumerate(loader):
    loss = model(batch) / k
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        skip_step = False
        if loss.item() > ema * threshold:
            skip_step = True
            optimizer.zero_grad(set_to_none=True)
        if not skip_step:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
""", "the clear discards a spiking window and sets the flag that skips the step: never both"),
        Valid("""
for i, x in enumerate(loader, 1):
    loss = model(x) / k
    loss.backward()
    if i % k == 0 or i == len(loader):
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if math.isnan(norm):
            optimizer.zero_grad()
        optimizer.step()
        optimizer.zero_grad()
""", "the clear before the step runs only on a window whose norm is NaN, a test that cannot be read: a bad "
            "window thrown away on purpose"),
    ]
    INVALID = [
        Invalid("""
class Solver:
    def reset_grad(self):
        self.optimizer.zero_grad()

    def train(self):
        for x, y in self.loader:
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            self.reset_grad()
            self.optimizer.step()
""", fixed="""
class Solver:
    def reset_grad(self):
        self.optimizer.zero_grad()

    def train(self):
        for x, y in self.loader:
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            self.reset_grad()
""", why="a method of the class that always clears `self.optimizer`"),
        Invalid("""
def reset(opt):
    opt.zero_grad()


for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    reset(optimizer)
    optimizer.step()
""", fixed="""
def reset(opt):
    opt.zero_grad()


for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    reset(optimizer)
""", why="a helper of the module whose every run clears the optimizer it is handed"),
        Invalid("""
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    # start clean
    optimizer.zero_grad()
    optimizer.step()
""", fixed="""
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    # start clean
    optimizer.zero_grad()
"""),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.zero_grad()
        optimizer.step()
""", fixed="""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", also=("GA203",)),
        Invalid("""
def train(model, loader, optimizer, loss_fn, cfg):
    for j, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / cfg.accum
        if (j + 1) % cfg.accum == 0:
            optimizer.zero_grad()
        loss.backward()
        if (j + 1) % cfg.accum == 0 or (j + 1) == len(loader):
            optimizer.step()
""", fixed="""
def train(model, loader, optimizer, loss_fn, cfg):
    for j, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / cfg.accum
        loss.backward()
        if (j + 1) % cfg.accum == 0 or (j + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", why="cleared on the boundary before that micro-batch's backward: the window's earlier micro-batches are "
            "gone when the step comes", also=("GA203",)),
        Invalid("""
heads = {}
for name in ["a", "b"]:
    heads[name] = {}
    heads[name]["net"] = nn.Linear(8, 2)
    heads[name]["opt"] = torch.optim.Adam(heads[name]["net"].parameters(), lr=1e-3)
for x in loader:
    feat = backbone(x)
    loss = sum(heads[name]["net"](feat).pow(2).mean() for name in heads)
    loss.backward()
    for name in heads:
        heads[name]["opt"].zero_grad()
        heads[name]["opt"].step()
""", fixed=None, applicability=None,
            why="an optimizer kept under a string key of a dictionary is read as one (its `step()` is a step); no "
                "fix: the clear and the step sit in an inner loop over the heads"),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        reported: set[int] = set()
        for variant in loop.variants:
            if variant.managed:
                continue
            step_receivers = {s.event.receiver for s in variant.steps}
            for clear in variant.clears:
                receiver = clear.event.receiver
                if receiver is None or id(clear.event.node) in reported:
                    continue
                step = variant.step_wiped_by(clear)
                if step is None or step.event.framework is not None:
                    continue
                if _flagged_off(loop, clear.event, step.event):
                    continue  # `skip = True; opt.zero_grad()`, then `if not skip: opt.step()`: never both
                step_tests = {c.text for c in step.event.conditions}
                if any(c.kind is ConditionKind.OPAQUE and c.text not in step_tests for c in clear.event.conditions):
                    # `if math.isnan(norm): opt.zero_grad()` before the step: only on some windows, which
                    # cannot be read (a bad window thrown away on purpose); no finding rests on that
                    continue
                if receiver == "params" and not _clears_all_of(clear.event, step.event, model.facts):
                    # `for p in model[1].parameters(): p.grad = None` between backward and step is how
                    # DINO and SwAV freeze a part of the model
                    continue
                same_object = receiver == step.event.receiver
                only_model = not looks_like_optimizer(receiver) and len(step_receivers) == 1
                if not (same_object or only_model):
                    continue
                reported.add(id(clear.event.node))
                fix = None
                # Moving a clear out of a deeper block than the step's would change when it runs.
                shallower = len(clear.event.conditions) <= len(step.event.conditions)
                # The whole statement moves: `for p in model.parameters(): p.grad = None` as one.
                whole = whole_statement(model.facts.tree, loop.node, clear.event.statement, loop.window_loop)
                if whole is not None and (whole is not clear.event.statement or alone_on_its_line(clear.event)) \
                        and step.event.editable and shallower:
                    fix = Fix(Applicability.SAFE, f"Move `{clear_text(clear.event)}` after the step",
                              (MoveAfter(whole, step.event.statement),))
                yield self.finding(
                    f"`{clear_text(clear.event)}` runs after the backward and before `{step.event.receiver}` steps: "
                    "the step applies cleared gradients",
                    clear.event.node, fix)
        for variant, _ in loop.accumulation_variants():
            for clear in variant.clears:
                receiver = clear.event.receiver
                if receiver is None or id(clear.event.node) in reported:
                    continue
                step = variant.window_wiped_by(clear)
                if step is None or step.event.framework is not None or not (
                        receiver == step.event.receiver or not looks_like_optimizer(receiver)):
                    continue
                reported.add(id(clear.event.node))
                yield self.finding(
                    f"`{clear_text(clear.event)}` runs on the boundary before the backward: it wipes the window's "
                    f"earlier micro-batches, and each time `{step.event.receiver}` steps it applies only the last one",
                    clear.event.node, self._move_into_step(loop, model, clear, step))

    @staticmethod
    def _move_into_step(loop: TrainingLoop, model, clear: ResolvedEvent, step: ResolvedEvent) -> Fix | None:
        """The clear moves right after the step, in the step's block; the `if` that held only it goes."""
        if not (alone_on_its_line(clear.event) and step.event.editable and clear.event.editable):
            return None
        statement = clear.event.statement
        holder = guarding_if(model.facts.tree, loop.node, statement)
        if holder is None:
            return None
        return Fix(Applicability.SAFE, f"Move `{clear_text(clear.event)}` after the step",
                   (Remove(holder), InsertAfter(step.event.statement, statement)))


def _flagged_off(loop: TrainingLoop, clear: Event, step: Event) -> bool:
    """The clear's block sets a flag that the step's test rules out."""
    flags = loop.flags_set_beside(clear)
    return any(isinstance(c.expression, cst.Name) and flags.get(c.expression.value, c.polarity) != c.polarity
               for c in step.conditions)


def _clears_all_of(clear: Event, step: Event, facts) -> bool:
    """A parameter loop's clear reaches every parameter the stepped optimizer owns."""
    owned = facts.optimizer_models(step.receiver) if step.receiver else None
    module = clear.cleared_module
    return bool(owned) and module is not None and all(within(o, module) for o in owned)
