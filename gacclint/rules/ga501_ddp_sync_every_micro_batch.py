from __future__ import annotations

from typing import Iterator

import libcst as cst

from gacclint.fixes.edits import Edit, Replace, WrapInWith
from gacclint.fixes.imports import add_import
from gacclint.loops.model import (
    Boundary,
    CounterSource,
    DdpWrap,
    EventKind,
    GuardKind,
    ResolvedEvent,
    Shape,
    TrainingLoop,
)
from gacclint.loops.vocabulary import code_of, dotted_name
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import atom


class DdpSyncEveryMicroBatch(Rule):
    """
    ## What it does
    Checks for accumulation loops over a `DistributedDataParallel` model
    (wrapped visibly in the same module) whose micro-batches between
    boundaries run forward and backward without turning gradient sync off.

    ## Why is this bad?
    DDP all-reduces the gradients across processes during every backward.
    Between boundaries nobody reads them: the window's gradients are
    all-reduced `k` times per optimizer step instead of once, so the loop
    spends `k` times the communication for the same result (accumulation
    exists to save exactly that).

    Any way of turning sync off counts: `model.no_sync()` (directly, through
    a `contextlib.nullcontext` switch or a helper), assigning
    `model.require_backward_grad_sync`, Fabric's `no_backward_sync`, apex's
    `disable_allreduce()`. FSDP, DeepSpeed and accelerate manage sync
    themselves; a loop that does not accumulate has nothing to skip.

    ## Example
    ```python
    model = DistributedDataParallel(model, device_ids=[rank])
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    model = DistributedDataParallel(model, device_ids=[rank])
    for i, (x, y) in enumerate(loader):
        should_step = (i + 1) % k == 0 or (i + 1) == len(loader)
        with (model.no_sync() if not should_step else contextlib.nullcontext()):
            loss = loss_fn(model(x), y) / k
            loss.backward()
        if should_step:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix safety
    Safe: the statements from the model's forward call to the backward are
    wrapped in `with (model.no_sync() if not <boundary> else
    contextlib.nullcontext()):` (`micro_step < k - 1` in the nanoGPT shape);
    `import contextlib` is added when the module lacks it, where isort puts
    it (sorted among the standard-library imports). The boundary is
    bound once to a name (`should_step = <the step's test>`, or the name the
    loop already binds) that both the `with` and the step's `if` read, so a
    later fix of the boundary (GA104, GA202) keeps them in step. Gradients
    are unchanged: the boundary micro-batch all-reduces the whole window.
    When the wrap is conditional (`if args.local_rank != -1:`),
    `and hasattr(model, "no_sync")` keeps the single-process configuration
    working. No fix is offered when the wrapper is not visibly torch's
    (apex's DDP has no `no_sync()`), when forward and backward do not share a
    block, or when the boundary reads a counter that changes between the
    forward and the step.
    """

    code = "GA501"
    name = "ddp-sync-every-micro-batch"

    VALID = [
        Valid("""
teacher = DistributedDataParallel(teacher)
optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
for step, x in enumerate(loader):
    target = teacher(x).detach()
    loss = mse(student(x), target) / k
    loss.backward()
    if (step + 1) % k == 0 or step + 1 == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", "the DDP teacher's output is detached: no backward reaches it, so it syncs nothing"),
        Valid("""
model = DistributedDataParallel(model)
for batch in loader:
    model(batch).backward()
    attack.backup_grad()
    for t in range(K):
        attack.perturb(first=(t == 0))
        if t != K - 1:
            model.zero_grad()
        else:
            attack.restore_grad()
        model(batch).backward()
    attack.restore()
    optimizer.step()
    model.zero_grad()
""", "an adversarial attack loop (a backward before it, clears inside it): no window accumulates gradients"),
        Valid("""
def train(model, loader, optimizer, k):
    for step, (x, y) in enumerate(loader, start=1):
        raw = model.module if isinstance(model, DistributedDataParallel) else model
        loss = loss_fn(raw(x), y) / k
        loss.backward()
        if step % k == 0:
            optimizer.step()
            optimizer.zero_grad()


def main(loader, k):
    model = DistributedDataParallel(Net())
    optimizer = torch.optim.AdamW(model.parameters())
    train(model, loader, optimizer, k)
""", "the forward goes through the wrapped module (`model.module` under DDP): asking `isinstance` of the model "
            "runs nothing of it"),
        Valid("""
model = torch.nn.parallel.DistributedDataParallel(model)
for i, batch in enumerate(loader):
    with maybe_no_sync(model, (i + 1) % k != 0):
        (model(batch) / k).backward()
    if (i + 1) % k == 0 or i + 1 == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", 'a context manager handed the DDP model and a flag controls sync'),
        Valid("""
model = torch.nn.parallel.DistributedDataParallel(model)
for i, batch in enumerate(loader):
    (model.module(batch) / k).backward()
    if (i + 1) % k == 0 or i + 1 == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", 'the forward goes through model.module: nothing is all-reduced'),
        Valid("""
model = torch.nn.parallel.DistributedDataParallel(model)
for i, (x, y) in enumerate(loader):
    with model.no_sync() if (i + 1) % k != 0 else contextlib.nullcontext():
        loss = loss_fn(model(x), y) / k
        loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "no_sync between boundaries"),
        Valid("""
model = DDP(model)
while True:
    for micro_step in range(gradient_accumulation_steps):
        if ddp:
            model.require_backward_grad_sync = (micro_step == gradient_accumulation_steps - 1)
        loss = model(X, Y) / gradient_accumulation_steps
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
""", "nanoGPT turns sync off by attribute"),
        Valid("""
model = DDP(model)
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
""", "no accumulation"),
        Valid("""
model = FSDP(model)
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "not DistributedDataParallel"),
        Valid("""
def train(model, loader):
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()
""", "no DDP wrap visible"),
        Valid("""
def train_epoch(loader, engine, k):
    for step, (x, y) in enumerate(loader, start=1):
        net = model.module if isinstance(model, DistributedDataParallel) else model
        loss = F.mse_loss(net(x), y) / k
        loss.backward()
        if step % k == 0 or step == len(loader):
            optimizer.step()
            optimizer.zero_grad()
        if step % 100 == 0: engine.push_weights(model)


model = DistributedDataParallel(Net())
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
""", "the forward goes through the wrapped module, and what a one-line `if` after the backward hands the model "
            "to runs after the window's backwards"),
        Valid("""
def distill(student, teacher, loader, k, rank):
    teacher = DDP(teacher.to(rank), device_ids=[rank])
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    for step, x in enumerate(loader):
        s_feats = student(x)
        t_feats = teacher(x).detach()
        loss = 0.0
        for s, t in zip(s_feats, t_feats):
            loss += F.mse_loss(s, t)
        (loss / k).backward()
        if (step + 1) % k == 0 or (step + 1) == len(loader):
            opt.step()
            opt.zero_grad()
""", "the only DDP model is a teacher whose outputs reach the loss detached, through the items a `zip` pairs: "
            "the backward all-reduces nothing"),
    ]
    INVALID = [
        Invalid("""
def prepare(model, lr):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model = DistributedDataParallel(model)
    return optimizer, model


def train(model, loader, optimizer, k):
    for step, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        if (step + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()


def main(model, loader, k):
    optimizer, model = prepare(model, 1e-4)
    train(model, loader, optimizer, k)
""", fixed=None, applicability=None,
            why="the model a function of the module wraps and returns is the DDP model the loop is handed "
                "(no fix: which DistributedDataParallel it is, and so whether it has no_sync, is not visible)",
            also=("GA202",)),
        Invalid("""
class Trainer:
    def train(self, optimizer, loader, k):
        self.model = DistributedDataParallel(self.model)
        for step, batch in enumerate(loader):
            loss = self.train_on_batch(batch) / k
            loss.backward()
            if (step + 1) % k == 0 or (step + 1) == len(loader):
                optimizer.step()
                optimizer.zero_grad()

    def train_on_batch(self, batch):
        return self.model(batch).mean()
""", fixed=None, applicability=None,
                why="the forward runs in a method of the class (no fix: which DDP class it is is not imported here)",
                also=("GA203",)),
        Invalid("""
import torch

model = torch.nn.parallel.DistributedDataParallel(model)
for i, (x, y) in enumerate(loader):
    # forward
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
import contextlib

import torch

model = torch.nn.parallel.DistributedDataParallel(model)
for i, (x, y) in enumerate(loader):
    should_step = (i + 1) % k == 0 or (i + 1) == len(loader)
    with (model.no_sync() if not should_step else contextlib.nullcontext()):
        # forward
        loss = loss_fn(model(x), y) / k
        loss.backward()
    if should_step:
        optimizer.step()
        optimizer.zero_grad()
""", also=("GA203",)),
        Invalid("""
import contextlib
from torch.nn.parallel import DistributedDataParallel as DDP

class Trainer:
    def __init__(self, model):
        self.model = DDP(model)

    def train(self, loader):
        for step, batch in enumerate(loader):
            batch = batch.to(self.device)
            outputs = self.model(**batch)
            loss = outputs.loss / self.accum
            loss.backward()
            if (step + 1) % self.accum == 0 or step + 1 == len(loader):
                self.optimizer.step()
                self.optimizer.zero_grad()
""", fixed="""
import contextlib
from torch.nn.parallel import DistributedDataParallel as DDP

class Trainer:
    def __init__(self, model):
        self.model = DDP(model)

    def train(self, loader):
        for step, batch in enumerate(loader):
            batch = batch.to(self.device)
            should_step = (step + 1) % self.accum == 0 or step + 1 == len(loader)
            with (
                self.model.no_sync() if not should_step else contextlib.nullcontext()
            ):
                outputs = self.model(**batch)
                loss = outputs.loss / self.accum
                loss.backward()
            if should_step:
                self.optimizer.step()
                self.optimizer.zero_grad()
""", why="`self.model = DDP(...)`", also=("GA203",)),
        Invalid("""
from contextlib import nullcontext

def train(args, model, loader):
    if args.local_rank != -1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    for step, batch in enumerate(loader):
        outputs = model(**batch)
        loss = outputs[0] / args.gradient_accumulation_steps
        if args.fp16:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        if (step + 1) % args.gradient_accumulation_steps == 0 or step + 1 == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
from contextlib import nullcontext

def train(args, model, loader):
    if args.local_rank != -1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    for step, batch in enumerate(loader):
        should_step = (
            (step + 1) % args.gradient_accumulation_steps == 0
            or step + 1 == len(loader)
        )
        with (
            model.no_sync()
            if not should_step and hasattr(model, "no_sync")
            else nullcontext()
        ):
            outputs = model(**batch)
            loss = outputs[0] / args.gradient_accumulation_steps
            if args.fp16:
                scaler.scale(loss).backward()
            else:
                loss.backward()
        if should_step:
            optimizer.step()
            optimizer.zero_grad()
""", why="a conditional wrap: the plain model has no no_sync()", also=("GA203",)),
        Invalid("""
import contextlib
import torch.nn.parallel

model = torch.nn.parallel.DistributedDataParallel(model)
for i, (x, y) in enumerate(loader):
    x = x.to(device)
    sync = (i + 1) % k == 0 or i + 1 == len(loader)

    logits = model(x)
    (loss_fn(logits, y) / k).backward()
    if sync:
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
import contextlib
import torch.nn.parallel

model = torch.nn.parallel.DistributedDataParallel(model)
for i, (x, y) in enumerate(loader):
    x = x.to(device)
    sync = (i + 1) % k == 0 or i + 1 == len(loader)

    with (model.no_sync() if not sync else contextlib.nullcontext()):
        logits = model(x)
        (loss_fn(logits, y) / k).backward()
    if sync:
        optimizer.step()
        optimizer.zero_grad()
""", why="the loop already names its boundary", also=("GA203",)),
        Invalid("""
import contextlib
model = DDP(model)
while True:
    for micro_step in range(gradient_accumulation_steps):
        logits, loss = model(X, Y)
        loss = loss / gradient_accumulation_steps
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
""", fixed=None, applicability=None, why="`DDP` is not visibly torch's (apex's has no no_sync())"),
        Invalid("""
import contextlib
from torch.nn.parallel import DistributedDataParallel as DDP
model = DDP(model)
while True:
    for micro_step in range(gradient_accumulation_steps):
        logits, loss = model(X, Y)
        loss = loss / gradient_accumulation_steps
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
""", fixed="""
import contextlib
from torch.nn.parallel import DistributedDataParallel as DDP
model = DDP(model)
while True:
    for micro_step in range(gradient_accumulation_steps):
        with (
            model.no_sync()
            if micro_step < gradient_accumulation_steps - 1
            else contextlib.nullcontext()
        ):
            logits, loss = model(X, Y)
            loss = loss / gradient_accumulation_steps
            loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
""", why="the nanoGPT shape: the window is the inner loop"),
        Invalid("""
def main(args, model, train_dataloader, optimizer):
    if args.local_rank != -1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[args.local_rank])
    for step, batch in enumerate(train_dataloader):
        loss = model(batch) / args.gradient_accumulation_steps
        if args.fp16:
            optimizer.backward(loss)
        else:
            loss.backward()
        if (step + 1) % args.gradient_accumulation_steps == 0:
            optimizer.step()
            model.zero_grad()
""", why="the plain backward's configuration syncs on every micro-batch; the fp16 wrapper's, in the other, "
            "is not visible, and a fix of one branch would leave it", also=("GA202",)),
        Invalid("""
from torch.nn.parallel import DistributedDataParallel as DDP


class Trainer:
    def set_up_dist(self, rank):
        model = DDP(self.model.to(rank), device_ids=[rank])
        return model

    def train(self, rank, loader):
        model = self.set_up_dist(rank)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
        for j, (x, y) in enumerate(loader):
            loss = loss_fn(model(x), y) / self.accum_steps
            loss.backward()
            if (j + 1) % self.accum_steps == 0:
                optimizer.step()
                model.zero_grad()
""", fixed="""
import contextlib

from torch.nn.parallel import DistributedDataParallel as DDP


class Trainer:
    def set_up_dist(self, rank):
        model = DDP(self.model.to(rank), device_ids=[rank])
        return model

    def train(self, rank, loader):
        model = self.set_up_dist(rank)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
        for j, (x, y) in enumerate(loader):
            should_step = (j + 1) % self.accum_steps == 0
            with (model.no_sync() if not should_step else contextlib.nullcontext()):
                loss = loss_fn(model(x), y) / self.accum_steps
                loss.backward()
            if should_step:
                optimizer.step()
                model.zero_grad()
""", why="the DDP model is what a method of the same class returns (facts along calls)", also=("GA202",)),
        Invalid("""
from torch.nn.parallel import DistributedDataParallel


def train(generator, critic, optimizer, loader, k):
    generator, critic = DistributedDataParallel(generator), DistributedDataParallel(critic)
    for step, (x, y) in enumerate(loader):
        loss = loss_fn(generator(x), y) / k
        loss.backward()
        if (step + 1) % k == 0 or (step + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
import contextlib

from torch.nn.parallel import DistributedDataParallel


def train(generator, critic, optimizer, loader, k):
    generator, critic = DistributedDataParallel(generator), DistributedDataParallel(critic)
    for step, (x, y) in enumerate(loader):
        should_step = (step + 1) % k == 0 or (step + 1) == len(loader)
        with (generator.no_sync() if not should_step else contextlib.nullcontext()):
            loss = loss_fn(generator(x), y) / k
            loss.backward()
        if should_step:
            optimizer.step()
            optimizer.zero_grad()
""", why="names assigned a tuple of values one by one (`generator, critic = DDP(generator), DDP(critic)`) are each bound to their own value",
            also=("GA203",)),
        Invalid("""
model = torch.nn.parallel.DistributedDataParallel(model)
for epoch in range(3):
    for step, (x, y) in enumerate(train_loader):
        loss = F.cross_entropy(model(x), y) / accumulation_steps
        loss.backward()
        iterations = epoch * len(train_loader) + step + 1
        if iterations % accumulation_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
""", fixed=None, applicability=None,
            why="a global step spelt through the epoch is a boundary (no fix: the test reads `iterations`, bound only after the backward)"),
        Invalid("""
import contextlib
from torch.nn.parallel import DistributedDataParallel as DDP


def train(G, D, loader, k, crit):
    G = DDP(G)
    D = DDP(D)
    optG = torch.optim.Adam(G.parameters())
    optD = torch.optim.Adam(D.parameters())
    for i, (x, z) in enumerate(loader):
        boundary = (i + 1) % k == 0 or (i + 1) == len(loader)
        with (G.no_sync() if not boundary else contextlib.nullcontext()):
            fake = G(z)
            d_loss = crit(D(fake.detach()), 0) / k
            d_loss.backward()
            g_loss = crit(D(fake), 1) / k
            g_loss.backward()
        if boundary:
            optD.step(); optD.zero_grad()
            optG.step(); optG.zero_grad()
""", fixed=None, applicability=None, why="only `G`'s sync is turned off: `D`'s backward still all-reduces on every micro-batch (no fix beside the other model's own `no_sync`)", also=("GA203",)),
        Invalid("""
from torch.nn.parallel import DistributedDataParallel


def train_epoch(loader, k):
    last = 0
    for step, (x, y) in enumerate(loader, start=1):
        last = step
        loss = F.mse_loss(model(x), y) / k
        loss.backward()
        if step % k == 0:
            optimizer.step()
            optimizer.zero_grad()
    if last % k != 0:
        optimizer.step()
        optimizer.zero_grad()


model = DistributedDataParallel(Net())
optimizer = torch.optim.AdamW(model.parameters())
""", fixed=None, applicability=None, also=("GA203",),
            why="every micro-batch syncs; no fix: the step after the loop applies the final partial window, which "
                "`no_sync()` between in-loop boundaries would leave un-reduced on every rank"),
        Invalid("""
import contextlib


class Runner:
    def __init__(self, net, loader, accum, distributed=False):
        self.net = net
        self.loader = loader
        self.accum = accum
        if distributed:
            self._wrap()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3)

    def _wrap(self):
        self.net = torch.nn.parallel.DistributedDataParallel(self.net)

    def epoch(self):
        for i, (x, y) in enumerate(self.loader):
            loss = F.mse_loss(self.net(x), y) / self.accum
            loss.backward()
            if (i + 1) % self.accum == 0 or (i + 1) == len(self.loader):
                self.opt.step()
                self.opt.zero_grad()
""", fixed="""
import contextlib


class Runner:
    def __init__(self, net, loader, accum, distributed=False):
        self.net = net
        self.loader = loader
        self.accum = accum
        if distributed:
            self._wrap()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3)

    def _wrap(self):
        self.net = torch.nn.parallel.DistributedDataParallel(self.net)

    def epoch(self):
        for i, (x, y) in enumerate(self.loader):
            should_step = (i + 1) % self.accum == 0 or (i + 1) == len(self.loader)
            with (
                self.net.no_sync()
                if not should_step and hasattr(self.net, "no_sync")
                else contextlib.nullcontext()
            ):
                loss = F.mse_loss(self.net(x), y) / self.accum
                loss.backward()
            if should_step:
                self.opt.step()
                self.opt.zero_grad()
""", why="the model is wrapped in another method than `__init__`, which may not run: the plain module has no "
            "`no_sync()`", also=("GA203",)),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        if not loop.ddp or (loop.sync_control and loop.sync_controlled is None):
            return
        found = self._window(loop)
        if found is None:
            return
        backwards, boundary = found
        feeding = self._feeding(loop, backwards) or [self._forwarded(loop) or loop.ddp[0]]
        if loop.sync_control:
            # The models whose sync is turned off somewhere (whether on the right micro-batches is
            # not judged here) are not reported; one the loop leaves syncing is.
            feeding = [wrap for wrap in feeding if wrap.name not in (loop.sync_controlled or ())]
            if not feeding:
                return
        wrap = feeding[0]
        first = backwards[0]
        # A backward of a wrapper (an fp16 optimizer's `optimizer.backward(loss)`) in another
        # configuration: whether it syncs is not visible, and a fix of this one alone would leave it.
        elsewhere = any(e.framework is not None for e in loop.events if e.kind is EventKind.BACKWARD)
        # Another model's sync is turned off already: a fix of this one would nest with that code.
        yield self.finding(
            f"`{wrap.name}` is DistributedDataParallel and `{code_of(first.event.node)}` runs on every micro-batch "
            + (f"without `{wrap.name}.no_sync()`" if wrap.torch else "with gradient sync on (the wrapper is not visibly "
               "torch's, which has `no_sync()`)")
            + ": gradients are all-reduced on every micro-batch instead of once per step",
            first.event.node,
            None if elsewhere or loop.sync_control else self._fix(loop, model, wrap, backwards, boundary))

    def _window(self, loop: TrainingLoop) -> tuple[list[ResolvedEvent], Boundary | None] | None:
        """The backwards of the accumulating micro-batches, and the step's boundary (None: nanoGPT shape)."""
        if loop.shape is Shape.INNER_WINDOW:
            for variant in loop.variants:
                if variant.managed:
                    continue
                backwards = [b for b in variant.backwards if b.event.in_window_loop and not b.event.in_inner_loop
                             and b.guard.kind is GuardKind.NONE]
                # A clear inside the micro-step loop, or a backward outside it (an adversarial
                # attack loop: backward, then K perturbed ones): no window accumulates there.
                if any(c.event.in_window_loop for c in variant.clears) or any(
                        not b.event.in_window_loop and not b.event.in_inner_loop for b in variant.backwards):
                    continue
                if backwards and any(not s.event.in_window_loop for s in variant.steps):
                    return backwards, None
            return None
        backwards: list[ResolvedEvent] = []
        boundary: Boundary | None = None
        for variant, found in loop.accumulation_variants():
            if any(b.event.framework is not None for b in variant.backwards):
                continue  # a wrapper's backward: whether it syncs is not visible
            boundary = boundary or found
            backwards += [b for b in variant.backwards if b not in backwards]
        if not backwards:
            return None
        return sorted(backwards, key=lambda b: b.event.order), boundary

    def _feeding(self, loop: TrainingLoop, backwards: list[ResolvedEvent]) -> list[DdpWrap]:
        """The DDP models whose forwards the accumulating backwards propagate through, where the
        loop runs several (`disc(torch.cat([gen(x).detach(), y]))`: `disc`, not `gen`)."""
        graph = loop.graph
        if graph is None or len(loop.ddp) < 2:
            return []
        owners = {found[0] for b in backwards if b.event.loss is not None
                  for key in graph.forwards(b.event.loss, b.event.position)
                  if (found := graph.forward_owner(key)) is not None}
        return [wrap for wrap in loop.ddp if wrap.name in owners]

    def _forwarded(self, loop: TrainingLoop) -> DdpWrap | None:
        """The DDP model the loop calls (`ddp_forwards` are its calls)."""
        return loop.ddp[0] if loop.ddp_forwards else None

    # -- the fix -------------------------------------------------------------------

    def _fix(self, loop: TrainingLoop, model, wrap: DdpWrap, backwards: list[ResolvedEvent],
             boundary: Boundary | None) -> Fix | None:
        if not wrap.torch or not loop.ddp_forwards or self._forwarded(loop) is not wrap:
            return None
        if (loop.flush_after_loop or loop.flush_after_run) and (boundary is None or boundary.steps_tail is not True):
            # the step after the loop would apply the final partial window's gradients, which the
            # `no_sync()` between boundaries leaves un-reduced: every rank would step its own
            return None
        statements = self._span(loop, model, loop.ddp_forwards[0], backwards)
        if statements is None:
            return None
        edits: list[Edit] = []
        prelude = None
        if boundary is None:  # nanoGPT: the inner `for micro_step in range(k)`
            node = loop.node
            if not (isinstance(node, cst.For) and isinstance(node.target, cst.Name) and loop.window_k is not None):
                return None
            condition = f"{node.target.value} < {atom(loop.window_k)} - 1"
        else:
            named = self._boundary_name(loop, model, boundary, statements[0])
            if named is None:
                return None
            name, prelude, replace = named
            condition = name if boundary.negated else f"not {name}"
            if replace is not None:
                edits.append(replace)
        context_name, import_edit = _nullcontext(model.module)
        if wrap.conditional:
            condition = f'{condition} and hasattr({wrap.name}, "no_sync")'
        items = f"({wrap.name}.no_sync() if {condition} else {context_name}())"
        edits.insert(0, WrapInWith(tuple(statements), items, prelude))
        if import_edit is not None:
            edits.extend(import_edit)
        return Fix(Applicability.SAFE, f"Run the micro-batches between boundaries under `{wrap.name}.no_sync()`",
                   tuple(edits))

    def _boundary_name(self, loop: TrainingLoop, model, boundary: Boundary, first: cst.CSTNode):
        """A name holding the step's boundary, read by the `with` and by the step's `if`.

        One name for both keeps them in step when a later fix edits the
        boundary (GA104's `(i + 1) % k`, GA202's end-of-data clause).
        Returns (name, a statement binding it before the `with` or None,
        the edit making the step's `if` read it or None).
        """
        expression = boundary.expression
        counter = boundary.counter
        if expression is None or counter is None:
            return None
        frames = model.frames.get(id(first))
        if not frames:
            return None
        block, start = frames[-1].block, frames[-1].index
        for statement in block[:start]:  # `should_step = ...` already bound before the forward
            if isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1:
                small = statement.body[0]
                if (isinstance(small, cst.Assign) and small.value is expression and len(small.targets) == 1
                        and isinstance(small.targets[0].target, cst.Name)):
                    return small.targets[0].target.value, None, None
        # Inline in the step's `if`: bind it before the forward, where it must read the same.
        if counter.source is CounterSource.MANUAL:
            return None
        for node in _names(expression):
            text = dotted_name(node)
            if text is None or text == counter.text:
                continue
            if text in loop.varying or any(text.startswith(f"{name}.") for name in loop.varying):
                return None
        steps = [e for e in loop.events if e.kind is EventKind.STEP]
        owners = [frame.owner for step in steps for frame in model.frames.get(id(step.statement), [])]
        if not any(isinstance(owner, cst.If) and _contains(owner.test, expression) for owner in owners):
            return None
        name = "accumulating" if boundary.negated else "should_step"
        candidate, index = name, 2
        while candidate in loop.bound_names:
            candidate, index = f"{name}_{index}", index + 1
        text = code_of(expression.with_changes(lpar=[], rpar=[]) if getattr(expression, "lpar", ()) else expression)
        return candidate, f"{candidate} = {text}", Replace(expression, cst.Name(candidate))

    def _span(self, loop: TrainingLoop, model, forward, backwards: list[ResolvedEvent]):
        """The statements of one block from the forward's to the last backward's, inside the loop."""
        frames = model.frames
        forward_frames = frames.get(id(forward))
        if forward_frames is None:
            return None
        start = end = None
        level = None
        for backward in backwards:
            backward_frames = frames.get(id(backward.event.statement))
            if backward_frames is None:
                return None
            common = None
            for index, (f, b) in enumerate(zip(forward_frames, backward_frames)):
                if f.block is not b.block:
                    break
                common = index
                if f.index != b.index:
                    break
            if common is None or (level is not None and common != level):
                return None
            level = common
            start = forward_frames[common].index
            end = max(end or 0, backward_frames[common].index)
        if level is None or start is None or end is None or start > end:
            return None
        block = forward_frames[level].block
        owners = [frame.owner for frame in forward_frames[: level + 1]]
        if not any(owner is loop.node for owner in owners):
            return None
        statements = list(block[start:end + 1])
        if not all(isinstance(s, cst.BaseStatement) for s in statements):
            return None
        owner = forward_frames[level].owner
        suites = [getattr(owner, "body", None), getattr(getattr(owner, "orelse", None), "body", None)]
        if not any(isinstance(suite, cst.IndentedBlock) and any(s is statements[0] for s in suite.body)
                   for suite in suites):
            return None
        # A step inside the span would run under no_sync too: leave such loops alone.
        for event in loop.events:
            if event.kind is EventKind.STEP and any(_contains(s, event.node) for s in statements):
                return None
        return statements


def _names(expression: cst.BaseExpression) -> Iterator[cst.BaseExpression]:
    """The maximal names and dotted names an expression reads (not call targets' attributes)."""
    stack: list[cst.CSTNode] = [expression]
    while stack:
        node = stack.pop()
        if isinstance(node, (cst.Name, cst.Attribute)) and dotted_name(node) is not None:
            yield node
            continue
        stack.extend(node.children)


def _contains(root: cst.CSTNode, target: cst.CSTNode) -> bool:
    stack = [root]
    while stack:
        node = stack.pop()
        if node is target:
            return True
        stack.extend(node.children)
    return False


def _nullcontext(module: cst.Module) -> tuple[str, tuple[Edit, ...] | None]:
    """How this module spells `contextlib.nullcontext`, and the import to add if it cannot."""
    for statement in module.body:
        small = statement.body[0] if isinstance(statement, cst.SimpleStatementLine) else None
        if isinstance(small, cst.Import):
            for alias in small.names:
                if dotted_name(alias.name) == "contextlib":
                    return f"{dotted_name(alias.asname.name) if alias.asname else 'contextlib'}.nullcontext", None
        elif isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
            if small.module is not None and dotted_name(small.module) == "contextlib":
                for alias in small.names:
                    if dotted_name(alias.name) == "nullcontext":
                        return dotted_name(alias.asname.name) if alias.asname else "nullcontext", None
    return "contextlib.nullcontext", add_import(module, "contextlib")  # where isort puts it
