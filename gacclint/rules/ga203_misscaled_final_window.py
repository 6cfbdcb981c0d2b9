from __future__ import annotations

import re
from typing import Iterator

import libcst as cst

from gacclint.fixes.edits import InsertBefore, Replace
from gacclint.fixes.statements import bound_before
from gacclint.loops.model import Boundary, Division, HelperDivision, LoopVariant, TrainingLoop
from gacclint.loops.tree import Tree
from gacclint.loops.vocabulary import code_of
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import atom, boundary_steps, divides_evenly, fresh_name, read_after_the_backward



def _divides_by_count(division: Division, boundary: Boundary, loop: TrainingLoop, facts) -> bool:
    """The division is by the boundary's count: the same text, or, where the count was read from
    literals (`k = 4` with `(i + 1) % k != 0 and ...: continue`), the same value."""
    if division.divisor_text == boundary.k_text:
        return True
    return boundary.k_literal is not None and facts.evaluate_int(
        division.divisor, division.statement, loop.function) == boundary.k_literal

class MisscaledFinalWindow(Rule):
    """
    ## What it does
    Checks for accumulation loops that step the final partial window (an
    end-of-data clause, or a flush after the loop) while still dividing its
    micro-batch losses by `k`.

    ## Why is this bad?
    The last window holds `r < k` micro-batches, so dividing by `k` gives its
    update `r / k` of the weight of the large-batch mean. With 110 samples,
    batch 8 and `k = 4`, the last window has 2 micro-batches and counts half.

    ## Known problems
    A smaller last *micro-batch* still makes the mean of means differ from
    the sample mean; that is the runtime checker's job (`gacclint verify`).

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        loss = loss / k
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        window = min(k, len(loader) - (i // k) * k)
        loss = loss / window
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix safety
    Safe: one line computes the real size of the current window, without an
    extra pass over the data, and the divisor becomes that name (a window
    size the loop already computes before the division, for another loss
    of the same loop, is reused: one name, declared once). The line is
    wrapped to the line length. Offered when the loop counts micro-batches
    from 0 or 1 per pass and the iterable has a length to write. Not offered
    where the division is inside a function of the module that makes the
    loss (its other callers would change too), nor where the clause steps the
    tail only in a pass shorter than `k` (`or (len(dl) <= k and ...)`): in a
    longer pass that tail is never stepped, and dividing it by its own size
    would add it to the next window at full weight.
    """

    code = "GA203"
    name = "misscaled-final-window"

    VALID = [
        Valid("""
for i, (x, y) in enumerate(loader):
    window = min(k, len(loader) - (i // k) * k)
    (loss_fn(model(x), y) / window).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", "the divisor counts the real window"),
        Valid("""
features = torch.randn(1000, 2)
dataset = TensorDataset(features, features.sum(1))
loader = DataLoader(dataset, batch_size=10)
accum_iter = 4
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / accum_iter).backward()
    if (i + 1) % accum_iter == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", "100 micro-batches, k = 4: no partial window, provable from literals"),
        Valid("""
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "the final window is never stepped: that is GA202"),
        Valid("""
def train(model, optimizer, loader, k, warmup_loader):
    for step, batch in enumerate(warmup_loader):
        (model(batch) / k).backward()
        if (step + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()
    for batch in loader:
        model(batch).backward()
        optimizer.step()
        optimizer.zero_grad()
""", "the next loop's step is that loop's own, not a flush of this one: the tail is dropped (GA202), not mis-weighted"),
        Valid("""
iters_num = len(loader) // k
for step, (x, y) in enumerate(loader):
    if step // k >= iters_num:
        break  # only whole windows
    loss = F.mse_loss(model(x), y) / k
    loss.backward()
    if (step + 1) % k == 0:
        opt.step()
        opt.zero_grad()
""", "no final partial window ever runs, so dividing by `k` is right for every window"),
    ]
    INVALID = [
        Invalid("""
for idx, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)
    if cfg.accum > 1:
        loss = loss / cfg.accum
        loss.backward()
        if (idx + 1) % cfg.accum == 0 or (idx + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
    else:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
""", fixed="""
for idx, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)
    if cfg.accum > 1:
        window = min(cfg.accum, len(loader) - (idx // cfg.accum) * cfg.accum)
        loss = loss / window
        loss.backward()
        if (idx + 1) % cfg.accum == 0 or (idx + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
    else:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
""", why="the division runs in one configuration only: the other, which steps every micro-batch, does not share it"),
        Invalid("""
for step, batch in enumerate(loader):
    loss = model(batch) / k
    if args.fp16:
        with amp.scale_loss(loss, optimizer) as scaled_loss:
            scaled_loss.backward()
    else:
        loss.backward()
    if (step + 1) % k == 0 or step + 1 == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for step, batch in enumerate(loader):
    window = min(k, len(loader) - (step // k) * k)
    loss = model(batch) / window
    if args.fp16:
        with amp.scale_loss(loss, optimizer) as scaled_loss:
            scaled_loss.backward()
    else:
        loss.backward()
    if (step + 1) % k == 0 or step + 1 == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", why="the division is shared by both configurations, and both step the same windows: rewritten for both"),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    if args.amp:
        scaled_step(loss, optimizer, update=(i + 1) % k == 0)
    else:
        loss.backward()
        if (i + 1) % k == 0 or i + 1 == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", fixed=None, why="the division runs in both configurations, and the other one steps out of sight: not rewritten", applicability=None),
        Invalid("""
n = 0
for x, y in loader:
    n += 1
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if n % k != 0 and n != len(loader):
        continue
    optimizer.step()
    optimizer.zero_grad()
""", fixed="""
n = 0
for x, y in loader:
    n += 1
    window = min(k, len(loader) - ((n - 1) // k) * k)
    loss = loss_fn(model(x), y) / window
    loss.backward()
    if n % k != 0 and n != len(loader):
        continue
    optimizer.step()
    optimizer.zero_grad()
""", why="the counter is counted before the division: it reads from 1 there"),
        Invalid("""
def train(model, loader, opt, k, epochs):
    step = 0
    for epoch in range(epochs):
        for batch in loader:
            loss = model(batch) / k
            loss.backward()
            step += 1
            if step % k == 0:
                opt.step()
                opt.zero_grad()
    if step % k:
        opt.step()
        opt.zero_grad()
""", fixed=None, why="a flush after the epoch loops steps the run's last partial window, still divided by k"),
        Invalid("""
for i, (real, _) in enumerate(loader):
    d_loss = d_loss_fn(D, G, real) / k
    d_loss.backward()
    g_loss = g_loss_fn(D, G) / k
    g_loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optD.step()
        optD.zero_grad()
        optG.step()
        optG.zero_grad()
""", fixed="""
for i, (real, _) in enumerate(loader):
    window = min(k, len(loader) - (i // k) * k)
    d_loss = d_loss_fn(D, G, real) / window
    d_loss.backward()
    g_loss = g_loss_fn(D, G) / window
    g_loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optD.step()
        optD.zero_grad()
        optG.step()
        optG.zero_grad()
""", why="a GAN's two losses share one window size, declared once"),
        Invalid("""
for batch_idx, (inputs, labels) in enumerate(data_loader):
    preds = model(inputs)
    loss = criterion(preds, labels)
    loss = loss / accum_iter  # mean of the window
    loss.backward()
    if ((batch_idx + 1) % accum_iter == 0) or (batch_idx + 1 == len(data_loader)):
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for batch_idx, (inputs, labels) in enumerate(data_loader):
    preds = model(inputs)
    loss = criterion(preds, labels)
    window = min(accum_iter, len(data_loader) - (batch_idx // accum_iter) * accum_iter)
    loss = loss / window  # mean of the window
    loss.backward()
    if ((batch_idx + 1) % accum_iter == 0) or (batch_idx + 1 == len(data_loader)):
        optimizer.step()
        optimizer.zero_grad()
"""),
        Invalid("""
for i, (x, y) in enumerate(loader, 1):
    scaler.scale(loss_fn(model(x), y) / k).backward()
    if i % k == 0 or i == len(loader):
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader, 1):
    window = min(k, len(loader) - ((i - 1) // k) * k)
    scaler.scale(loss_fn(model(x), y) / window).backward()
    if i % k == 0 or i == len(loader):
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
""", why="a counter from 1 and an inline division"),
        Invalid("""
for epoch in range(epochs):
    step = 0
    for x, y in loader:
        loss = loss_fn(model(x), y) / k
        loss.backward()
        step += 1
        if step % k == 0 or step == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
for epoch in range(epochs):
    step = 0
    for x, y in loader:
        window = min(k, len(loader) - (step // k) * k)
        loss = loss_fn(model(x), y) / window
        loss.backward()
        step += 1
        if step % k == 0 or step == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", why="the counter is incremented between the division and the test: at the division it still counts the "
                "micro-batches before this one, which is where its window starts"),
        Invalid("""
k = 4
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k != 0 and (i + 1) != len(loader):
        continue
    optimizer.step()
    optimizer.zero_grad()
""", fixed="""
k = 4
for i, (x, y) in enumerate(loader):
    window = min(k, len(loader) - (i // k) * k)
    (loss_fn(model(x), y) / window).backward()
    if (i + 1) % k != 0 and (i + 1) != len(loader):
        continue
    optimizer.step()
    optimizer.zero_grad()
""", why="the end-of-data clause of a negated early continue; the count is read from `k = 4`"),
        Invalid("""
K = 4
for epoch in range(epochs):
    for step, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / K
        loss.backward()
        if (step + 1) % K == 0 or (len(loader) <= K and (step + 1) == len(loader)):
            optimizer.step()
            model.zero_grad()
""", why="the clause steps the tail only in a pass shorter than K: in a longer one it is never stepped, and "
            "dividing it by its own size would add it to the next window at full weight"),
        Invalid("""
def forward_pass(model, batch, args):
    loss = model(**batch).loss
    return loss / args.gradient_accumulation_steps


def train(model, loader, optimizer, args):
    for step, batch in enumerate(loader):
        loss = forward_pass(model, batch, args)
        loss.backward()
        if (step + 1) % args.gradient_accumulation_steps == 0 or (step + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", why="the function that makes the loss divides it by the count it is handed; rewritten there, its "
            "other callers would change too"),
        Invalid("""
K = 4
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)
    loss = torch.div(loss, K)
    loss.backward()
    if (i + 1) % K == 0 or (i + 1) == len(loader):
        opt.step()
        opt.zero_grad()
""", fixed="""
K = 4
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)
    window = min(K, len(loader) - (i // K) * K)
    loss = torch.div(loss, window)
    loss.backward()
    if (i + 1) % K == 0 or (i + 1) == len(loader):
        opt.step()
        opt.zero_grad()
""", why="a division spelled as a call is a division"),
        Invalid("""
for idx, (samples, targets) in enumerate(data_loader):
    outputs = model(samples)
    if config.ACCUMULATION_STEPS > 1:
        loss = criterion(outputs, targets)
        loss = loss / config.ACCUMULATION_STEPS
        if config.AMP:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        if (idx + 1) % config.ACCUMULATION_STEPS == 0 or (idx + 1) == len(data_loader):
            optimizer.step()
            optimizer.zero_grad()
    else:
        loss = criterion(outputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
""", fixed="""
for idx, (samples, targets) in enumerate(data_loader):
    outputs = model(samples)
    if config.ACCUMULATION_STEPS > 1:
        loss = criterion(outputs, targets)
        window = min(
            config.ACCUMULATION_STEPS,
            len(data_loader)
            - (idx // config.ACCUMULATION_STEPS) * config.ACCUMULATION_STEPS,
        )
        loss = loss / window
        if config.AMP:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        if (idx + 1) % config.ACCUMULATION_STEPS == 0 or (idx + 1) == len(data_loader):
            optimizer.step()
            optimizer.zero_grad()
    else:
        loss = criterion(outputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
""", why="the division runs only where the count is above 1, with the backwards nested in its block under another switch"),
        Invalid("""
def train_one_epoch(model, criterion, optimizer, train_loader, config):
    for idx, (x, y) in enumerate(train_loader):
        loss = criterion(model(x), y)
        loss = loss / config.ACCUM
        if config.ACCUM == 1:
            optimizer.zero_grad()
        loss.backward()
        if config.ACCUM > 1:
            if (idx + 1) % config.ACCUM == 0 or (idx + 1) == len(train_loader):
                optimizer.step()
                optimizer.zero_grad()
        else:
            optimizer.step()
""", fixed="""
def train_one_epoch(model, criterion, optimizer, train_loader, config):
    for idx, (x, y) in enumerate(train_loader):
        loss = criterion(model(x), y)
        window = min(
            config.ACCUM, len(train_loader) - (idx // config.ACCUM) * config.ACCUM
        )
        loss = loss / window
        if config.ACCUM == 1:
            optimizer.zero_grad()
        loss.backward()
        if config.ACCUM > 1:
            if (idx + 1) % config.ACCUM == 0 or (idx + 1) == len(train_loader):
                optimizer.step()
                optimizer.zero_grad()
        else:
            optimizer.step()
""", why="where `config.ACCUM > 1` is false the count is 1: the window written for the other configuration is 1 there too"),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = F.cross_entropy(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0 or i + 1 == len(loader):
        optimizer.step()
        optimizer.zero_grad()
    total += loss.item() * k
""", fixed="""
for i, (x, y) in enumerate(loader):
    window = min(k, len(loader) - (i // k) * k)
    loss = F.cross_entropy(model(x), y) / window
    loss.backward()
    if (i + 1) % k == 0 or i + 1 == len(loader):
        optimizer.step()
        optimizer.zero_grad()
    total += loss.item() * k
""", applicability=Applicability.UNSAFE,
            why="the final window is divided by k; the fix is unsafe: the loop undoes the division to log the loss "
                "(`loss.item() * k`), which then logs k / r times the final window's loss"),
        Invalid("""
def main(args, loader):
    acc = Accelerator()
    model, optimizer, loader = acc.prepare(Net(), torch.optim.AdamW(params), loader)
    for step, (x, y) in enumerate(loader):
        loss = F.cross_entropy(model(x), y) / args.accum
        acc.backward(loss)
        if step % args.accum == 0 or step == len(loader) - 1:
            optimizer.step()
            optimizer.zero_grad()
""", fixed=None, applicability=None, also=("GA104",),
            why="`acc` is built by `Accelerator()`, whatever it is called: its backward is accelerate's, with no "
                "accumulation count of its own, so the loop's own boundary is judged"),
        Invalid("""
class Runner:
    def train(self, epochs):
        try:
            n_batches = len(self.loader)
        except TypeError:
            n_batches = float("inf")
        for epoch in range(epochs):
            for i, (x, y) in enumerate(self.loader):
                loss = ((self.net(x) - y) ** 2).mean()
                loss = loss / self.k
                loss.backward()
                if (i + 1) % self.k == 0 or (i + 1) == n_batches:
                    self.opt.step()
                    self.opt.zero_grad()
""", fixed="""
class Runner:
    def train(self, epochs):
        try:
            n_batches = len(self.loader)
        except TypeError:
            n_batches = float("inf")
        for epoch in range(epochs):
            for i, (x, y) in enumerate(self.loader):
                loss = ((self.net(x) - y) ** 2).mean()
                window = min(self.k, n_batches - (i // self.k) * self.k)
                loss = loss / window
                loss.backward()
                if (i + 1) % self.k == 0 or (i + 1) == n_batches:
                    self.opt.step()
                    self.opt.zero_grad()
""", why="the window is measured as the end-of-data clause measures the pass (`n_batches`, which the code guards), "
            "not by a new `len()` of the loader"),
        Invalid("""
def fit(net, opt, loader, accum):
    for i, (x, y) in enumerate(loader):
        loss = F.cross_entropy(net(x), y)
        is_acc = (i + 1) % accum != 0 and (i + 1) != len(loader)
        if is_acc:
            (loss / accum).backward()
        else:
            (loss / accum).backward()
            opt.step()
            opt.zero_grad()
""", fixed="""
def fit(net, opt, loader, accum):
    for i, (x, y) in enumerate(loader):
        loss = F.cross_entropy(net(x), y)
        is_acc = (i + 1) % accum != 0 and (i + 1) != len(loader)
        if is_acc:
            window = min(accum, len(loader) - (i // accum) * accum)
            (loss / window).backward()
        else:
            window = min(accum, len(loader) - (i // accum) * accum)
            (loss / window).backward()
            opt.step()
            opt.zero_grad()
""", why="the division in each arm of the boundary's test is rewritten by one fix: one alone would leave the "
            "final window weighted two ways"),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        tree = model.facts.tree
        boundaries = {id(variant): boundary for variant, boundary in loop.accumulation_variants()}
        reported: set[int] = set()
        pending: list[tuple[Division, Fix | None, str]] = []
        for division in self._misscaled(loop, model):
            if isinstance(division, HelperDivision):
                if id(division.call) not in reported:
                    reported.add(id(division.call))
                    # The division is the function's: rewriting it there would change every other caller.
                    yield self.finding(
                        f"the final partial window is stepped but its losses are still divided by "
                        f"`{division.divisor_text}` (in `{division.function}`): that window counts "
                        f"`r / {division.divisor_text}` of the mean", division.call, None)
                continue
            if id(division.operation) in reported:
                continue
            reported.add(id(division.operation))
            # A division the configuration switches share is rewritten for all of them: only when
            # every variant steps its last window on a boundary that gives the same window there
            # (an apex branch's `amp.scale_loss(loss, ...)` hides the division, not the windows),
            # with every step of it (a GAN's second optimizer may still drop its tail: GA202 first).
            # A variant whose switches hold the count to 1 (`if cfg.accum > 1: ... else: step`) divides
            # by 1 there, and the window written for the others is 1 there too.
            windows = {self._window(loop, variant, boundaries[id(variant)], division, tree)
                       if variant is not None and self._steps_every_tail(loop, variant) else None
                       for variant in (_window_holding(loop, whole, division, boundaries)
                                       for whole in loop.variants if _runs(loop, whole, division, tree)
                                       and (id(whole) in boundaries or division.divisor_text not in whole.ones))}
            value = windows.pop() if len(windows) == 1 else None
            short = any(_short_passes_only(loop, boundary) for boundary in boundaries.values())
            pending.append((division, None if value is None else _fix(loop, division, value),
                            f"the final partial window is stepped but its losses are still divided by "
                            f"`{division.divisor_text}`: that window counts `r / {division.divisor_text}` of the mean"
                            + (" (the clause steps it only in a pass shorter than the count: in a longer one the "
                               "last micro-batches are never stepped)" if short else "")))
        # Several divisions (a backward in each arm of the boundary's test): one fix rewrites them all,
        # as a fix of one alone would leave the others dividing the same window by the count.
        fixes = [fix for _, fix, _ in pending]
        if len(pending) > 1:
            together = None
            if None not in fixes:
                edits = _merged(loop, [edit for fix in fixes for edit in fix.edits])  # type: ignore[union-attr]
                unsafe = next((fix for fix in fixes if fix.applicability is Applicability.UNSAFE), None)  # type: ignore[union-attr]
                together = Fix(Applicability.UNSAFE if unsafe else Applicability.SAFE,
                               (unsafe or fixes[0]).message, edits)  # type: ignore[union-attr]
            fixes = [together] * len(pending)
        for (division, _, message), fix in zip(pending, fixes):
            yield self.finding(message, division.operation, fix)

    def _steps_every_tail(self, loop: TrainingLoop, variant: LoopVariant) -> bool:
        """Every step of the variant steps the final partial window, in every pass: dividing the
        tail by its size where a longer pass leaves it unstepped (`or (len(dl) <= k and ...)`)
        would add it to the next window at full weight."""
        return all(step.guard.boundary is not None and self._tail_stepped(loop, step.guard.boundary)
                   and not _short_passes_only(loop, step.guard.boundary) for step in variant.steps)

    @staticmethod
    def _tail_stepped(loop: TrainingLoop, boundary: Boundary) -> bool:
        """The final partial window is stepped: by the boundary's end-of-data clause, or by a flush
        after the loop (after the epoch loops, where windows straddle passes)."""
        return boundary.steps_tail is True or loop.flush_after_loop or (
            loop.flush_after_run and boundary.counter is not None and not boundary.counter.per_pass)

    def _misscaled(self, loop: TrainingLoop, model) -> Iterator[Division | HelperDivision]:
        """Each division by the count that misscales a stepped final window (once per variant it does so in)."""
        for variant, boundary in loop.accumulation_variants():
            if not self._tail_stepped(loop, boundary):
                continue
            if divides_evenly(loop, boundary, model.facts):
                continue
            reported: set[int] = set()  # once per variant
            for backward in variant.backwards:
                flow = backward.event.loss_flow
                if flow is None:
                    continue
                for division in flow.divisions:
                    if not _divides_by_count(division, boundary, loop, model.facts) or id(division.operation) in reported:
                        continue
                    reported.add(id(division.operation))
                    yield division
                for helper in flow.helper_divisions:
                    if helper.divisor_text == boundary.k_text and id(helper.call) not in reported:
                        reported.add(id(helper.call))
                        yield helper

    def _window(self, loop: TrainingLoop, variant: LoopVariant, boundary: Boundary, division: Division,
                tree: Tree) -> str | None:
        """The real window size at the division, as an expression; None where none can be written."""
        counter = boundary.counter
        length = loop.iterable.len_text
        if counter is not None:
            length = _clause_length(boundary, counter.text) or length
        if counter is None or not counter.per_pass or counter.resets_in_pass or counter.pass_reset_switched \
                or counter.first_value not in (0, 1) \
                or length is None:
            return None
        if not isinstance(division.statement, cst.SimpleStatementLine) or not tree.contains(
                division.statement, division.operation):
            return None  # the division sits elsewhere (`with amp.scale_loss(loss / k, opt) as scaled:`)
        if boundary.first_window in ("1", "k-1", "k+1"):
            return None  # off by one (GA104): windows computed for this boundary would be out of phase
        first = counter.first_value  # at the test, on a pass's first micro-batch
        if counter.increment is not None:
            # The window is computed at the division from the counter's value there: with
            # `counter += 1` between the division and the test, one less than at the test.
            increment = tree.span(counter.increment)
            at_division = tree.span(division.statement)
            steps = [tree.span(step.event.statement) for step in boundary_steps(variant)]
            if increment is None or at_division is None or None in steps:
                return None
            if at_division[0] < increment[0] and all(increment[0] < step[0] for step in steps):
                first -= 1
            elif at_division[0] < increment[0] and any(increment[0] < step[0] for step in steps):
                return None  # steps on both sides of the increment: no one value to read
        if first not in (0, 1):
            return None
        k = atom(division.divisor)  # the count as the division spells it
        position = counter.text if first == 0 else f"({counter.text} - 1)"
        return f"min({k}, {length} - ({position} // {k}) * {k})"


def _merged(loop: TrainingLoop, edits: list) -> tuple:
    """The edits of several fixes as one: a window size bound twice in one block (`window = ...`
    before each division) is bound once, before the first."""
    where = {id(record.statement): (id(record.block), record.position) for record in loop.body}
    first: dict[tuple[int, str], int] = {}
    for edit in edits:
        if isinstance(edit, InsertBefore) and isinstance(edit.code, str) and id(edit.anchor) in where:
            block, position = where[id(edit.anchor)]
            key = (block, edit.code)
            first[key] = min(first.get(key, position), position)
    kept, bound = [], set()
    for edit in edits:
        if isinstance(edit, InsertBefore) and isinstance(edit.code, str) and id(edit.anchor) in where:
            block, position = where[id(edit.anchor)]
            key = (block, edit.code)
            if first[key] != position or key in bound:
                continue
            bound.add(key)
        kept.append(edit)
    return tuple(kept)


def _clause_length(boundary: Boundary, counter: str) -> str | None:
    """The pass length as the end-of-data clause spells it (`n_batches` of `(i + 1) == n_batches`,
    a length the code may have guarded): the fix measures the pass as the clause does."""
    clause = boundary.end_of_data
    if not (isinstance(clause, cst.Comparison) and len(clause.comparisons) == 1
            and isinstance(clause.comparisons[0].operator, cst.Equal)):
        return None
    compact = "".join
    for near, far in ((clause.left, clause.comparisons[0].comparator), (clause.comparisons[0].comparator, clause.left)):
        if compact(code_of(near).split()).strip("()") == f"{counter}+1" \
                and not re.search(rf"(?<![\w.]){re.escape(counter)}(?!\w)", code_of(far)):
            return atom(far) if isinstance(far, cst.BinaryOperation) else code_of(far)
    return None


def _short_passes_only(loop: TrainingLoop, boundary: Boundary) -> bool:
    """The boundary steps the final partial window only in passes shorter than the count, and
    nothing after the loop steps it in longer ones."""
    return boundary.steps_tail_of_short_passes_only and not loop.flush_after_loop


def _window_holding(loop: TrainingLoop, whole: LoopVariant, division: Division,
                    boundaries: dict[int, Boundary]) -> LoopVariant | None:
    """The accumulating variant of `whole` whose backwards carry the division: `whole` itself,
    or the window of the one optimizer whose parameters that backward reaches (a GAN's)."""
    if id(whole) in boundaries:
        return whole
    holding = [window for window in loop.optimizer_windows.get(id(whole), ()) if id(window) in boundaries and any(
        b.event.loss_flow is not None and division in b.event.loss_flow.divisions for b in window.backwards)]
    return holding[0] if len(holding) == 1 else None


def _runs(loop: TrainingLoop, variant: LoopVariant, division: Division, tree: Tree) -> bool:
    """The variant may run the division (`if config.ACCUM > 1:` runs it in one variant only): it
    keeps an event of the division's block (nested deeper in it too: `if amp: ... backward()`),
    or the block holds no event to tell."""
    block_of = {id(record.statement): record.block for record in loop.body}
    block = block_of.get(id(division.statement))
    if block is None or block is getattr((loop.window_loop or loop.node).body, "body", None):
        return True  # on the loop's own block: every iteration runs it
    in_block = [event for event in loop.events if block_of.get(id(event.statement)) is block
                or any(tree.contains(statement, event.statement) for statement in block)]
    running = {id(resolved.event) for resolved in variant.events}
    return not in_block or any(id(event) in running for event in in_block)


def _fix(loop: TrainingLoop, division: Division, value: str) -> Fix:
    # A window size the loop already binds before the division (a fix of
    # another loss of the same loop, a GAN's second loss) is reused.
    bound = bound_before(loop, division.statement, value)
    name = bound or fresh_name(loop, "window")
    edits = (Replace(division.divisor, cst.Name(name)),) if bound is not None else (
        InsertBefore(division.statement, f"{name} = {value}"), Replace(division.divisor, cst.Name(name)))
    read = read_after_the_backward(loop, division)
    if read is not None:
        return Fix(Applicability.UNSAFE, f"Divide by the real window size `{name}`; unsafe: `{read}` is read "
                   "elsewhere in the loop too, and in the final window what it holds there changes", edits)
    return Fix(Applicability.SAFE, f"Divide by the real window size `{name}`", edits)
