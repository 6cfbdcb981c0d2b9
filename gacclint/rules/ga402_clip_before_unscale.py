from __future__ import annotations

from typing import Iterator

from gacclint.fixes.edits import InsertBefore, MoveBefore
from gacclint.loops.events import clips_raw_gradients
from gacclint.loops.model import Event, EventKind, GuardKind, LoopVariant, ResolvedEvent, TrainingLoop
from gacclint.loops.vocabulary import code_of
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import alone_on_its_line, bare_call, per_micro_batch, switches_of


class ClipBeforeUnscale(Rule):
    """
    ## What it does
    Checks for gradient clipping (`clip_grad_norm_`, `clip_grad_value_`)
    before `scaler.step(optimizer)` with no `scaler.unscale_(optimizer)`
    before it, while a `GradScaler` is in use.

    ## Why is this bad?
    With a `GradScaler`, `.grad` holds the gradients multiplied by the loss
    scale (65536 at the start) until `scaler.unscale_` or `scaler.step`
    divides them. Clipping scaled gradients compares the threshold with
    numbers thousands of times too large: every step is clipped hard, by a
    factor that changes whenever the scale does. An `unscale_` after the
    clip comes too late.

    A scaler counts as in use unless it is built with the literal
    `enabled=False`: `GradScaler(enabled=args.fp16)` bites the day the flag
    is on. An `unscale_` anywhere earlier in the window counts, also under a
    configuration switch (`if args.fp16: scaler.unscale_(opt)` says the
    scaler is on only then) or in a helper of the module the loop calls.
    accelerate's and Fabric's own clip methods unscale first. The rule
    also reads per-batch step helpers (`def train_step(...)`) that hold the
    backward, the clip and `scaler.step` without a loop.

    ## Example
    ```python
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    ```

    ## Fix safety
    Safe: `scaler.unscale_(optimizer)` is inserted on the line before the
    clip, with the optimizer that `scaler.step` steps next; when an
    `unscale_` already sits between the clip and the step, it is moved
    before the clip instead (a second call would raise). `scaler.step` then
    skips its own unscaling. When the clip runs on every micro-batch of an
    accumulation window (GA403), no fix is offered here: GA403 moves the clip
    into the step's block first, and this fix follows. Unsafe where the step
    sits under a boundary that runs on every micro-batch only because its
    count is the literal 1 (`if (step + 1) % CFG.accum == 0:` with
    `accum = 1`): the inserted `unscale_` runs with the clip, on every
    micro-batch, and would run twice between updates (which raises) once the
    count is raised.
    """

    code = "GA402"
    name = "clip-before-unscale"

    VALID = [
        Valid("""
scaler = GradScaler()
for x, y in loader:
    loss = loss_fn(model(x), y)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
""", "the clip runs before the iteration's backward, after the last step's clear: it sees no scaled gradients "
            "(it clips nothing, another mistake), and an unscale_ there would raise"),
        Valid("""
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""", "unscaled before the clip"),
        Valid("""
scaler = torch.cuda.amp.GradScaler(enabled=False)
for x, y in loader:
    loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""", "the scaler is built with enabled=False: not in use"),
        Valid("""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / k
    scaler.scale(loss).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.unscale_(optimizer)
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""", "unscale_ anywhere earlier in the window"),
        Valid("""
for step, batch in enumerate(loader):
    loss = model(**batch).loss
    if args.fp16:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    if args.fp16:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
    if args.fp16:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad()
""", "the unscale_ sits under the same switch as scaler.step"),
        Valid("""
for x, y in loader:
    with torch.autocast("cuda", enabled=args.fp16):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    if args.fp16:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""", "unscaled under the switch that turns the scaler on"),
        Valid("""
for batch in loader:
    loss = model(**batch).loss
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    optimizer.zero_grad()
""", "accelerate's clip unscales itself"),
        Valid("""
class CFG:
    unscale = True
    accum = 1


def train_fn(loader, model, criterion, optimizer):
    scaler = torch.cuda.amp.GradScaler()
    for step, (x, y) in enumerate(loader):
        with torch.cuda.amp.autocast():
            loss = criterion(model(x), y)
        scaler.scale(loss).backward()
        if CFG.unscale:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if (step + 1) % CFG.accum == 0:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
""", "`CFG.unscale` is the class's literal `True`, set nowhere else: the unscale_ always runs before the clip"),
        Valid("""
scaler = torch.cuda.amp.GradScaler()
for x, y in loader:
    with torch.autocast("cuda"):
        loss = F.mse_loss(model(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer.optimizers[0])
    scaler.unscale_(optimizer.optimizers[1])
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""", "a container optimizer's parts are unscaled before the clip: whether they cover every gradient it clips is "
            "not visible, and a second `unscale_` of the whole would divide them twice"),
        Valid("""
enc_opt = torch.optim.SGD(encoder.parameters(), lr=0.1)
head_opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
scaler = torch.cuda.amp.GradScaler()
for x, y in loader:
    with torch.autocast("cuda"):
        loss = F.cross_entropy(head(encoder(x)), y)
    scaler.scale(loss).backward()
    scaler.unscale_(enc_opt)
    torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
    scaler.step(enc_opt)
    scaler.step(head_opt)
    scaler.update()
    enc_opt.zero_grad()
    head_opt.zero_grad()
""", "the clip reads the encoder's gradients only, and its optimizer is unscaled before it; the head's stay "
            "scaled for `scaler.step`, which unscales them itself"),
        Valid("""
pi, v = nn.Linear(8, 3), nn.Linear(8, 1)
opt_pi = torch.optim.Adam(pi.parameters(), lr=1e-4)
opt_v = torch.optim.Adam(v.parameters(), lr=1e-4)
sc_pi, sc_v = GradScaler(), GradScaler()
for feats, adv, ret in batches:
    opt_pi.zero_grad()
    opt_v.zero_grad()
    with torch.autocast("cuda", dtype=torch.float16):
        pol_loss = -(torch.log_softmax(pi(feats), -1).max(-1).values * adv).mean()
        val_loss = (v(feats).squeeze(-1) - ret).pow(2).mean()
    sc_v.scale(val_loss).backward()
    sc_pi.scale(pol_loss).backward()
    sc_pi.unscale_(opt_pi)
    torch.nn.utils.clip_grad_norm_(pi.parameters(), 100.0)
    sc_v.step(opt_v)
    sc_pi.step(opt_pi)
    sc_v.update()
    sc_pi.update()
""", "the clip reads only the policy's parameters, unscaled just before; the critic's optimizer owns none of them"),
    ]
    INVALID = [
        Invalid("""
scaler = torch.cuda.amp.GradScaler(enabled=cfg.apex)
for x, y in loader:
    scaler.scale(loss_fn(model(x), y)).backward()
    if cfg.unscale:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""", fixed=None, applicability=None,
                why="where `cfg.unscale` is false the scaler may still be on; no fix: where it is true a second unscale_ raises"),
        Invalid("""
scaler = torch.cuda.amp.GradScaler()
for real in loader:
    fake = G(noise())
    opt_d.zero_grad()
    scaler.scale(loss_fn(D(fake.detach()), 0)).backward()
    scaler.unscale_(opt_d)
    torch.nn.utils.clip_grad_norm_(D.parameters(), 1.0)
    scaler.step(opt_d)
    opt_g.zero_grad()
    scaler.scale(loss_fn(D(fake), 1)).backward()
    torch.nn.utils.clip_grad_norm_(G.parameters(), 1.0)
    scaler.step(opt_g)
    scaler.update()
""", fixed="""
scaler = torch.cuda.amp.GradScaler()
for real in loader:
    fake = G(noise())
    opt_d.zero_grad()
    scaler.scale(loss_fn(D(fake.detach()), 0)).backward()
    scaler.unscale_(opt_d)
    torch.nn.utils.clip_grad_norm_(D.parameters(), 1.0)
    scaler.step(opt_d)
    opt_g.zero_grad()
    scaler.scale(loss_fn(D(fake), 1)).backward()
    scaler.unscale_(opt_g)
    torch.nn.utils.clip_grad_norm_(G.parameters(), 1.0)
    scaler.step(opt_g)
    scaler.update()
""", why="the discriminator's unscale_ does not unscale the generator's gradients", also=("GA301",)),
        Invalid("""
amp_scale = torch.cuda.amp.GradScaler()
for x, y in loader:
    loss = loss_fn(model(x), y)
    amp_scale.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    amp_scale.step(optimizer)
    amp_scale.update()
    optimizer.zero_grad()
""", fixed="""
amp_scale = torch.cuda.amp.GradScaler()
for x, y in loader:
    loss = loss_fn(model(x), y)
    amp_scale.scale(loss).backward()
    amp_scale.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    amp_scale.step(optimizer)
    amp_scale.update()
    optimizer.zero_grad()
""", why="a scaler known by the class that built it, whatever its name"),
        Invalid("""
class Model(nn.Module):
    def train_one_step(self, x, y, batch_index):
        loss = F.mse_loss(self.net(x), y) / self.accumulation_steps
        if self.fp16:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.clip_grad_norm)
        if (batch_index + 1) % self.accumulation_steps == 0:
            self.scaler.step(self.optimizer) if self.fp16 else self.optimizer.step()
            self.scaler.update() if self.fp16 else None
            self.optimizer.zero_grad()
""", fixed=None, applicability=None,
                why="no fix: an unscale_ before this clip would run on every micro-batch (twice between updates raises) and where fp16 is off and there is no scaler"),
        Invalid("""
scaler = torch.amp.GradScaler("cuda", enabled=args.amp)
for x, y in loader:
    with torch.autocast("cuda", enabled=args.amp):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""", fixed="""
scaler = torch.amp.GradScaler("cuda", enabled=args.amp)
for x, y in loader:
    with torch.autocast("cuda", enabled=args.amp):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""", why="enabled=args.amp counts as in use"),
        Invalid("""
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    # clip, then unscale: too late
    torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""", fixed="""
for x, y in loader:
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    # clip, then unscale: too late
    torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""", why="clip-then-unscale: the unscale_ is moved before the clip"),
        Invalid("""
class Trainer:
    def train_step(self, batch):
        with torch.autocast("cuda"):
            loss = self.model(batch)
        self.scaler.scale(loss).backward()
        if self.max_norm:
            clip_grad_norm_(self.model.parameters(), self.max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
""", fixed="""
class Trainer:
    def train_step(self, batch):
        with torch.autocast("cuda"):
            loss = self.model(batch)
        self.scaler.scale(loss).backward()
        if self.max_norm:
            self.scaler.unscale_(self.optimizer)
            clip_grad_norm_(self.model.parameters(), self.max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
""", why="a per-batch step helper: no loop needed"),
        Invalid("""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y) / k
    scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""", fixed=None, applicability=None, why="clipped per micro-batch: GA403's fix goes first",
            also=("GA403", "GA203")),
        Invalid("""
import torch


class CFG:
    apex = True
    gradient_accumulation_steps = 1
    max_grad_norm = 1000


def train_fn(train_loader, model, criterion, optimizer):
    scaler = torch.cuda.amp.GradScaler(enabled=CFG.apex)
    for step, (x, y) in enumerate(train_loader):
        with torch.cuda.amp.autocast(enabled=CFG.apex):
            loss = criterion(model(x), y)
        if CFG.gradient_accumulation_steps > 1:
            loss = loss / CFG.gradient_accumulation_steps
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CFG.max_grad_norm)
        if (step + 1) % CFG.gradient_accumulation_steps == 0:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
""", fixed="""
import torch


class CFG:
    apex = True
    gradient_accumulation_steps = 1
    max_grad_norm = 1000


def train_fn(train_loader, model, criterion, optimizer):
    scaler = torch.cuda.amp.GradScaler(enabled=CFG.apex)
    for step, (x, y) in enumerate(train_loader):
        with torch.cuda.amp.autocast(enabled=CFG.apex):
            loss = criterion(model(x), y)
        if CFG.gradient_accumulation_steps > 1:
            loss = loss / CFG.gradient_accumulation_steps
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), CFG.max_grad_norm)
        if (step + 1) % CFG.gradient_accumulation_steps == 0:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
""", applicability=Applicability.UNSAFE, why="the step's boundary with the count the literal 1 runs on every micro-batch, as the clip: one unscale_ per step, while the count stays 1"),
        Invalid("""
muon_params = [p for n, p in model.named_parameters() if p.ndim >= 2]
adamw_params = [p for n, p in model.named_parameters() if p.ndim < 2]
muon = Muon(muon_params, lr=0.02)
adamw = torch.optim.AdamW(adamw_params, lr=1e-3)
scaler = torch.cuda.amp.GradScaler()
for x, y in loader:
    with torch.autocast("cuda"):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(muon)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(muon)
    scaler.step(adamw)
    scaler.update()
    muon.zero_grad()
    adamw.zero_grad()
""", fixed="""
muon_params = [p for n, p in model.named_parameters() if p.ndim >= 2]
adamw_params = [p for n, p in model.named_parameters() if p.ndim < 2]
muon = Muon(muon_params, lr=0.02)
adamw = torch.optim.AdamW(adamw_params, lr=1e-3)
scaler = torch.cuda.amp.GradScaler()
for x, y in loader:
    with torch.autocast("cuda"):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(muon)
    scaler.unscale_(adamw)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(muon)
    scaler.step(adamw)
    scaler.update()
    muon.zero_grad()
    adamw.zero_grad()
""", why="the clip reads every parameter of `model`, the second optimizer's too, whose gradients are still scaled: "
            "they dominate the norm and shrink every gradient"),
    ]

    def check_module(self, model) -> Iterator[Finding]:
        for loop in list(model.loops) + list(model.step_helpers):
            yield from self.check(loop, model)

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        if not loop.scalers_in_use or loop.unscale_in_helper:
            return
        per_micro = {id(clip.event.node) for _, clip, _ in per_micro_batch(loop, EventKind.CLIP)}
        reported: set[int] = set()
        for variant in loop.variants:
            for index, clip in enumerate(variant.events):
                if clip.kind is not EventKind.CLIP or not clips_raw_gradients(clip.event.node, model.facts):
                    continue
                if id(clip.event.node) in reported:
                    continue
                if not any(e.kind is EventKind.BACKWARD for e in variant.events[:index]):
                    continue  # before any backward of the iteration: what it clips is the last step's, not scaled ones
                # Leaving out the steps of optimizers none of whose parameters the clip reads
                # (an actor's clip beside the critic's step: RULES.md, *ownership*).
                steps = [s for s in _scaler_steps_after(loop, variant, index)
                         if not model.facts.clip_misses(clip.event.node, s.event.receiver)]
                if not steps:
                    continue
                # The first scaler step after the clip, or a later one whose optimizer's parameters
                # the clip visibly reads (`clip_grad_norm_(model.parameters())` before the steps of a
                # Muon and an AdamW over `model`'s parameter groups): each must be unscaled first.
                step = next((candidate for position, candidate in enumerate(steps)
                             if not _unscaled(loop, variant, clip, candidate)
                             and (position == 0 or model.facts.clip_covers(clip.event.node, candidate.event.receiver))), None)
                if step is None:
                    continue
                reported.add(id(clip.event.node))
                scaler = step.event.via_scaler
                fix = None if id(clip.event.node) in per_micro else self._fix(loop, variant, clip, step)
                yield self.finding(
                    f"`{_clip_name(clip)}` runs before `{scaler}.step({step.event.receiver})` with no "
                    f"`{scaler}.unscale_({step.event.receiver})` before it: it clips the scaled gradients",
                    clip.event.node, fix)

    def _fix(self, loop: TrainingLoop, variant: LoopVariant, clip: ResolvedEvent, step: ResolvedEvent) -> Fix | None:
        if not alone_on_its_line(clip.event):
            return None
        if any(True for _ in _unscales_before(loop, clip, step)):
            return None  # another configuration unscales before the clip: a second unscale_ there raises
        scaler, optimizer = step.event.via_scaler, step.event.receiver
        between = variant.events[variant.events.index(clip) + 1:variant.events.index(step)]
        unscales = [e for e in between if e.kind is EventKind.UNSCALE]
        if unscales:
            unscale = unscales[0]
            if (len(unscales) == 1 and bare_call(unscale.event) and unscale.guard == clip.guard
                    and switches_of(unscale.event) == switches_of(clip.event)
                    and unscale.event.in_window_loop == clip.event.in_window_loop):
                return Fix(Applicability.SAFE, f"Move `{code_of(unscale.event.node)}` before the clip",
                           (MoveBefore(unscale.event.statement, clip.event.statement),))
            return None
        if not optimizer:
            return None
        # The inserted unscale_ runs where the clip does: only where the scaler's step runs too, so
        # at most once per step (twice between updates raises), and only where the scaler is used
        # (`self.scaler` is None where fp16 is off; `scaler.step(opt) if fp16 else opt.step()`
        # hides that switch in an expression).
        if not bare_call(step.event):
            return None
        spelled_under = {(c.text, c.polarity) for c in step.event.conditions} <= {
            (c.text, c.polarity) for c in clip.event.conditions}
        if not spelled_under and not _runs_with_the_step(loop, clip.event, step.event):
            return None
        edit = InsertBefore(clip.event.statement, f"{scaler}.unscale_({optimizer})")
        message = f"Insert `{scaler}.unscale_({optimizer})` before the clip"
        if not spelled_under:
            # Together only as the counts now are (`k` the literal 1): with a larger count the
            # unscale_ would run twice between updates, which raises.
            return Fix(Applicability.UNSAFE, message + "; unsafe: it runs where the clip does, on every micro-batch, "
                       "which is once per step only while the accumulation count is 1", (edit,))
        return Fix(Applicability.SAFE, message, (edit,))


def _runs_with_the_step(loop: TrainingLoop, clip: Event, step: Event) -> bool:
    """In every configuration, the clip runs on exactly the micro-batches the scaler's step runs
    on, as evaluated (`if (step + 1) % k == 0:` around the step, with `k` the literal 1: every
    micro-batch, as the clip): an unscale_ beside the clip then runs once per step."""
    for variant in loop.variants:
        guards = {id(resolved.event): resolved.guard for resolved in variant.events}
        if id(clip) not in guards:
            continue
        if id(step) not in guards or guards[id(step)] != guards[id(clip)] or \
                guards[id(clip)].kind is GuardKind.OPAQUE:
            return False
    return True


def _scaler_steps_after(loop: TrainingLoop, variant: LoopVariant, index: int) -> list[ResolvedEvent]:
    """The first step through a scaler in use after event `index` of the variant (a backward between
    them, an adversarial one, changes nothing the clip saw), then the others up to the next backward."""
    found: list[ResolvedEvent] = []
    for event in variant.events[index + 1:]:
        if event.kind is EventKind.BACKWARD and found:
            break
        if event.kind is EventKind.STEP and event.event.via_scaler in loop.scalers_in_use:
            found.append(event)
    return found


def _unscaled(loop: TrainingLoop, variant: LoopVariant, clip: ResolvedEvent, step: ResolvedEvent) -> bool:
    """An unscale_ of the stepped optimizer before the clip, in this configuration, or under the
    scaler's own flag (`if args.fp16: scaler.unscale_(opt)` with `GradScaler(enabled=args.fp16)`:
    where it does not run, the scaler scales nothing). With the scaler's construction out of
    sight, the switch an unscale_ sits under is taken to be that flag."""
    running = {id(resolved.event) for resolved in variant.events}
    flags = loop.scaler_flags.get(step.event.via_scaler or "")
    return any(id(event) in running or flags is None or {text for text, polarity in switches_of(event) if polarity} & flags
               for event in _unscales_before(loop, clip, step))


def _unscales_before(loop: TrainingLoop, clip: ResolvedEvent, step: ResolvedEvent) -> Iterator[Event]:
    """The loop's unscale_ calls before the clip, in any configuration, that may unscale the stepped
    optimizer's gradients (an unscale_ of another optimizer does not; one of a part of it does,
    `scaler.unscale_(opt.optimizers[0])` of a container optimizer)."""
    stepped = step.event.receiver
    for event in loop.events:
        if event.kind is EventKind.UNSCALE and event.order < clip.event.order and (
                not event.receiver or not stepped or event.receiver == stepped
                or event.receiver.startswith((f"{stepped}.", f"{stepped}["))):
            yield event


def _clip_name(clip: ResolvedEvent) -> str:
    func = clip.event.node.func  # type: ignore[attr-defined]
    return code_of(func).rsplit(".", 1)[-1]
