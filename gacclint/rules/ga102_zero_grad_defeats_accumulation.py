from __future__ import annotations

from typing import Iterator

from gacclint.fixes.edits import MoveAfter, Remove
from gacclint.fixes.statements import whole_statement
from gacclint.loops.model import EventKind, GuardKind, LoopVariant, ResolvedEvent, Shape, TrainingLoop
from gacclint.loops.vocabulary import looks_like_optimizer
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import alone_on_its_line, boundary_steps, clear_text, clears_after, step_for, switches_of


class ZeroGradDefeatsAccumulation(Rule):
    """
    ## What it does
    Checks for accumulation loops that clear the gradients on every
    micro-batch, while the optimizer steps only every `k`-th.

    ## Why is this bad?
    Each clear throws away the gradients accumulated so far, so the step sees
    only the last micro-batch (divided by `k`): accumulation silently does
    nothing and the effective batch is `k` times smaller than intended.

    Inside accelerate's `accumulate()`, a prepared optimizer's `zero_grad()`
    is skipped between boundaries and is fine; `model.zero_grad()` is not
    skipped and is reported.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0:
            optimizer.step()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix safety
    Safe: the clear is moved into the step's block, directly after the step
    (with the comment lines above it). If that block already clears the same
    object, the stray clear is removed instead.
    """

    code = "GA102"
    name = "zero-grad-defeats-accumulation"

    VALID = [
        Valid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "the clear is under the same boundary as the step"),
        Valid("""
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
""", "accumulate() skips a prepared optimizer's zero_grad between boundaries"),
        Valid("""
for i, (x, y) in enumerate(loader):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
""", "no accumulation: the step runs every micro-batch"),
        Valid("""
for i, (x, y) in enumerate(loader):
    if i % n_critic == 0:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
""", "backward and step under the same guard: a periodic update"),
        Valid("""
cleared_once = False
for i, (x, y) in enumerate(loader):
    if not cleared_once:
        optimizer.zero_grad()
        cleared_once = True
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", "a flag the loop sets under its own test is not a configuration switch: the clear runs once, before any window"),
        Valid("""
PROFILE = False
for i, (x, y) in enumerate(loader):
    if PROFILE:
        optimizer.zero_grad()
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", "a switch on a name only ever bound to `False`: that branch never runs"),
        Valid("""
GENERATOR_ITERS = 1
for it in range(iterations):
    for i in range(GENERATOR_ITERS):
        optimizer.zero_grad()
        loss_fn(model(noise())).backward()
    optimizer.step()
""", "a micro-step loop of one step accumulates nothing"),
        Valid("""
for x, y in loader:
    out = model(x)
    losses = [((out[:, t] - y[:, t]) ** 2).mean() for t in range(2)]
    grads = []
    for loss in losses:
        optimizer.zero_grad()
        loss.backward(retain_graph=True)
        grads.append([p.grad.clone() for p in model.parameters()])
    for p, *gs in zip(model.parameters(), *grads):
        p.grad = sum(gs) / len(gs)
    optimizer.step()
""", "per-task gradient surgery: each task's gradient is read before the next clear, and the step "
            "applies what the loop writes back, not a window's sum"),
        Valid("""
def train_one_epoch(model, optimizer, loader, criterion, config):
    optimizer.zero_grad()
    for idx, (x, y) in enumerate(loader):
        loss = criterion(model(x), y) / config.ACCUM
        if config.ACCUM == 1:
            optimizer.zero_grad()
        loss.backward()
        if config.ACCUM > 1:
            if (idx + 1) % config.ACCUM == 0 or idx + 1 == len(loader):
                optimizer.step()
                optimizer.zero_grad()
        else:
            optimizer.step()
""", "`config.ACCUM == 1` and `config.ACCUM > 1` never hold together: the clear runs only where "
            "every micro-batch steps"),
        Valid("""
class Net(torch.nn.Module):
    def _attack(self):
        for p in self.parameters():
            if p.grad is not None:
                p.data.add_(0.01 * p.grad / (torch.norm(p.grad) + 1e-6))

    def train_epoch(self, loader, opt, crit):
        for x, y in loader:
            loss = crit(self(x), y)
            loss.backward()
            for _ in range(self.adv_step):
                self._attack()
                adv_loss = crit(self(x), y)
                opt.zero_grad()
                adv_loss.backward()
            opt.step()
            opt.zero_grad()
""", "the inner loop is an attack on the weights: a method of the class reads the parameters' `.grad` each pass, and the clear before each adversarial backward is the algorithm"),
        Valid("""
def search(model, loader, val_iter, micro):
    opt_w = torch.optim.SGD(model.weights(), lr=0.1)
    searcher = ArchSearcher(model)
    for x, y in loader:
        opt_w.zero_grad()
        for start in range(0, x.size(0), micro):
            searcher.update(next(val_iter))
            searcher.optimizer.zero_grad()
            loss = F.cross_entropy(model(x[start:start + micro]), y[start:start + micro]) * micro / x.size(0)
            loss.backward()
        opt_w.step()
""", "the clear is another optimizer's, built by a class the module cannot see: whose parameters it clears "
            "is unknown"),
    ]
    INVALID = [
        Invalid("""
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        if cfg.use_amp:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    optimizer.zero_grad()
""", fixed=None, applicability=None, also=("GA203",),
            why="each configuration steps in its own branch: moved after one step, the clear would be lost in the "
                "other configuration, so no fix"),
        Invalid("""
for i, (x, y) in enumerate(loader):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y) / k
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    else:
        with model.no_sync():
            loss.backward()
""", fixed="""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    else:
        with model.no_sync():
            loss.backward()
""", why="the backward split between the boundary and its `else` (sync off) runs on every micro-batch", also=("GA203",)),
        Invalid("""
for it in range(iterations):
    for micro_step in range(k):
        optimizer.zero_grad()
        loss = loss_fn(model(next(batches))) / k
        loss.backward()
    optimizer.step()
""", fixed="""
for it in range(iterations):
    for micro_step in range(k):
        loss = loss_fn(model(next(batches))) / k
        loss.backward()
    optimizer.step()
    optimizer.zero_grad()
""", why="a clear inside the micro-step loop keeps only its last micro-step"),
        Invalid("""
class Model(LightningModule):
    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        for i, chunk in enumerate(batch.split(2)):
            opt.zero_grad()
            loss = self.net(chunk).mean() / 4
            self.manual_backward(loss)
            if (i + 1) % 4 == 0:
                opt.step()
""", fixed="""
class Model(LightningModule):
    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        for i, chunk in enumerate(batch.split(2)):
            loss = self.net(chunk).mean() / 4
            self.manual_backward(loss)
            if (i + 1) % 4 == 0:
                opt.step()
                opt.zero_grad()
""", why="Lightning's manual optimization clears, divides and steps nothing for the user", also=("GA202",)),
        Invalid("""
class Trainer:
    def clear(self, opt):
        opt.zero_grad(set_to_none=True)

    def train(self, loader):
        for i, (x, y) in enumerate(loader):
            self.clear(self.optimizer)
            loss = self.loss_fn(self.model(x), y) / 4
            loss.backward()
            if (i + 1) % 4 == 0:
                self.optimizer.step()
""", fixed="""
class Trainer:
    def clear(self, opt):
        opt.zero_grad(set_to_none=True)

    def train(self, loader):
        for i, (x, y) in enumerate(loader):
            loss = self.loss_fn(self.model(x), y) / 4
            loss.backward()
            if (i + 1) % 4 == 0:
                self.optimizer.step()
                self.clear(self.optimizer)
""", why="a method of the class that clears the optimizer it is handed", also=("GA202",)),
        Invalid("""
for i, (x, y) in enumerate(loader):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
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
for batch in loader:
    with accelerator.accumulate(model):
        model.zero_grad()
        loss = model(**batch).loss
        accelerator.backward(loss)
        optimizer.step()
""", fixed=None, applicability=None, why="model.zero_grad() is not disarmed by accumulate()"),
        Invalid("""
for epoch in range(num_epochs):
    for step, (x, y) in enumerate(train_loader):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y) / k
        loss.backward()
        global_step = epoch * len(train_loader) + step
        if (global_step + 1) % k == 0:
            optimizer.step()
""", fixed="""
for epoch in range(num_epochs):
    for step, (x, y) in enumerate(train_loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        global_step = epoch * len(train_loader) + step
        if (global_step + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()
""", why="a global step spelt through the epoch (`epoch * len(train_loader) + step`) is a boundary like any other"),
        Invalid("""
from nas_helpers import ArchSearcher


def search(model, loader, val_iter, micro):
    opt_w = torch.optim.SGD(model.parameters(), lr=0.1)
    searcher = ArchSearcher(model.arch_parameters())
    for x, y in loader:
        for start in range(0, x.size(0), micro):
            searcher.update(model, next(val_iter), opt_w)
            opt_w.zero_grad()
            loss = F.cross_entropy(model(x[start:start + micro]), y[start:start + micro]) * micro / x.size(0)
            loss.backward()
        opt_w.step()
""", fixed="""
from nas_helpers import ArchSearcher


def search(model, loader, val_iter, micro):
    opt_w = torch.optim.SGD(model.parameters(), lr=0.1)
    searcher = ArchSearcher(model.arch_parameters())
    for x, y in loader:
        for start in range(0, x.size(0), micro):
            searcher.update(model, next(val_iter), opt_w)
            loss = F.cross_entropy(model(x[start:start + micro]), y[start:start + micro]) * micro / x.size(0)
            loss.backward()
        opt_w.step()
        opt_w.zero_grad()
""", applicability=Applicability.UNSAFE,
            why="each micro-batch wipes the last; the fix is unsafe: a method of a project class is handed the model "
                "and the optimizer before the clear, may backpropagate its own loss, and the clear may be there to "
                "wipe that"),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        self._loop, self._model = loop, model  # what the fix reads
        if "accelerate-accumulate" in loop.frameworks:
            yield from self._accelerate(loop)
            return
        reported: set[int] = set()
        if loop.shape is Shape.INNER_WINDOW:
            for variant in loop.variants:
                if variant.managed:
                    continue
                for clear in variant.clears:
                    if clear.event.in_window_loop and clear.guard.kind is GuardKind.NONE and clear.event.receiver:
                        yield from self._report(variant, clear, reported)
            return
        for variant, _ in loop.accumulation_variants():
            for clear in variant.clears:
                if clear.guard.kind is not GuardKind.NONE or not clear.event.receiver:
                    continue
                if variant.step_wiped_by(clear) is not None:
                    continue  # GA103 owns a clear between backward and step
                yield from self._report(variant, clear, reported)

    def _report(self, variant: LoopVariant, clear: ResolvedEvent, reported: set[int]) -> Iterator[Finding]:
        if id(clear.event.node) in reported:
            return
        reported.add(id(clear.event.node))
        receiver = clear.event.receiver
        if looks_like_optimizer(receiver or "") and not any(
                s.event.receiver == receiver for s in boundary_steps(variant)) \
                and self._model.facts.optimizer_models(receiver) is None:
            return  # another optimizer's clear, whose parameters are not visible (RULES.md, *ownership*)
        step = step_for(variant, receiver if looks_like_optimizer(receiver or "") else None)
        fix = None
        # The whole statement moves: `for p in model.parameters(): p.grad = None` as one.
        whole = whole_statement(self._model.facts.tree, self._loop.node, clear.event.statement, self._loop.window_loop)
        # A step under a configuration switch the clear is not under (`if cfg.amp: scaler.step(opt)
        # else: opt.step()`): moved there, the clear would be lost in the other variants.
        if step is not None and switches_of(step.event) - switches_of(clear.event):
            step = None
        if step is not None and whole is not None and step.event.editable and (
                whole is not clear.event.statement or alone_on_its_line(clear.event)):
            if clears_after(variant, step, receiver):
                fix = Fix(Applicability.SAFE, f"Remove the per-micro-batch `{clear_text(clear.event)}`",
                          (Remove(whole),))
            else:
                fix = Fix(Applicability.SAFE, f"Move `{clear_text(clear.event)}` after `{step.event.receiver}` steps",
                          (MoveAfter(whole, step.event.statement),))
        if fix is not None and self._wipes_what_is_handed(receiver):
            # `searcher.update(model, batch, opt)` then `opt.zero_grad()`: a call the module cannot see
            # is handed the optimizer (or its model) and may backpropagate; the clear may be there to
            # wipe that, and moved after the step it would not
            fix = Fix(Applicability.UNSAFE, fix.message + f"; unsafe: a call the module cannot see is handed "
                      f"`{receiver}` or its model before the clear, and its gradients would then reach the step",
                      fix.edits)
        yield self.finding(
            f"`{clear_text(clear.event)}` runs on every micro-batch but the optimizer steps only at the "
            "accumulation boundary: each step sees only the last micro-batch",
            clear.event.node, fix)

    def _wipes_what_is_handed(self, receiver: str | None) -> bool:
        handed = self._loop.handed_unseen | self._loop.handed_to_project_objects
        if not receiver or not handed:
            return False
        models = self._model.facts.optimizer_models(receiver) if looks_like_optimizer(receiver) else {receiver}
        return receiver in handed or any(model in handed for model in models or ())

    def _accelerate(self, loop: TrainingLoop) -> Iterator[Finding]:
        for event in loop.events:
            if event.kind is not EventKind.CLEAR or not event.receiver:
                continue
            wrapped = event.accumulate_context
            if wrapped is None or looks_like_optimizer(event.receiver):
                continue
            argument = wrapped[1]
            if event.receiver in {part.strip() for part in argument.split(",")} or event.receiver == "model":
                yield self.finding(
                    f"`{event.receiver}.zero_grad()` inside `accumulate()` is not skipped between boundaries: "
                    "it wipes the accumulated gradients on every micro-batch; clear the prepared optimizer instead",
                    event.node)
