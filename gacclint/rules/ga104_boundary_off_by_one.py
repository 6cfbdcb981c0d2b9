from __future__ import annotations

from typing import Iterator

import libcst as cst

from gacclint.fixes.edits import Replace
from gacclint.fixes.statements import guarded_body_reads
from gacclint.loops.model import TrainingLoop
from gacclint.loops.vocabulary import code_of, dotted_name
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid


class BoundaryOffByOne(Rule):
    """
    ## What it does
    Checks for an accumulation boundary whose first window is not `k`
    micro-batches, judged by evaluating the guard for sample `k` and pass
    lengths, whatever its spelling: `i % k == 0` with `i` counting from 0 (a
    first window of one), or a counter shifted the other way (`k - 1`), or a
    first multiple skipped by hand (`step % k == 0 and step > 0`: `k + 1`,
    reported without a fix).

    ## Why is this bad?
    The test is true on the very first micro-batch, so the first window holds
    one micro-batch (and, with the loss divided by `k`, gets `1/k` of the
    weight) and every later window is shifted by one. The last micro-batches
    of the data then fall outside any complete window.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / k).backward()
        if i % k == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / k).backward()
        if (i + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix safety
    Safe: the counter in the test becomes `(i + 1)`, spaced like the
    original `%`. Counters that start at 1 (`enumerate(..., start=1)`) or are
    incremented before the test are already right and are not reported. No
    fix where code under the boundary reads the counter (`if i > 3:` in the
    step's block): the shifted phase would change what it sees.
    """

    code = "GA104"
    name = "boundary-off-by-one"

    VALID = [
        Valid("""
optimizers = [adam, muon]
for step in range(steps):
    model(next_batch()).mean().backward()
    if step % 2 == 0:
        optimizers[1].step()
        optimizers[1].zero_grad()
    else:
        for opt in optimizers:
            opt.step()
        model.zero_grad()
""", "one optimizer is stepped through a loop over a list: which optimizers each branch steps, and so their "
            "windows, are not visible"),
        Valid("""
for i, (x, y) in enumerate(loader, start=1):
    (loss_fn(model(x), y) / k).backward()
    if i % k == 0 or i == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", "enumerate(..., start=1)"),
        Valid("""
step = 0
for x, y in loader:
    (loss_fn(model(x), y) / k).backward()
    step += 1
    if step % k == 0 or step == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", "the counter is incremented before the test"),
        Valid("""
for x, y in loader:
    (loss_fn(model(x), y) / k).backward()
    if self.global_step % k == 0:
        optimizer.step()
        optimizer.zero_grad()
    self.global_step += 1
""", "a counter that starts we do not know where"),
    ]
    INVALID = [
        Invalid("""
micro = seen = 0
for x in loader:
    loss_fn(model(x)).div(k).backward()
    if micro % k == 0:
        optimizer.step()
        optimizer.zero_grad()
    micro += 1
""", fixed="""
micro = seen = 0
for x in loader:
    loss_fn(model(x)).div(k).backward()
    if (micro + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
    micro += 1
""", why="a chained assignment sets the counter's start too", also=("GA202",)),
        Invalid("""
for i, (x, y) in enumerate(loader):
    sync = nullcontext() if (i + 1) % k == 0 else model.no_sync()
    with sync:
        (loss_fn(model(x), y) / k).backward()
    if i % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", fixed=None, applicability=None,
            why="the sync switch spells the boundary again, in another phase: shifting the step's test alone would "
                "leave it out of step", also=("GA202",)),
        Invalid("""
global_step = 0
for epoch in range(epochs):
    for batch_idx, batch in enumerate(loader):
        (model(batch) / k).backward()
        if global_step % k == 0:
            optimizer.step()
            optimizer.zero_grad()
        if batch_idx != len(loader) - 1:
            global_step += 1
    global_step += 1
""", fixed="""
global_step = 0
for epoch in range(epochs):
    for batch_idx, batch in enumerate(loader):
        (model(batch) / k).backward()
        if (global_step + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()
        if batch_idx != len(loader) - 1:
            global_step += 1
    global_step += 1
""", applicability=Applicability.UNSAFE,
                why="a counter incremented under a test, its windows read by running it: the shift is offered as unsafe"),
        Invalid("""
train_steps = 0
for epoch in range(epochs):
    for x in loader:
        (loss_fn(model(x)) / k).backward()
        if train_steps % k == 0 and train_steps > 0:
            optimizer.step()
            optimizer.zero_grad()
        train_steps += 1
""", fixed=None, applicability=None,
                why="the first multiple of k is skipped: the first window holds k + 1 (no one-token fix)"),
        Invalid("""
class Trainer:
    def __init__(self, k):
        self.k = k
        self.n_iter = 0

    def train(self, loader):
        for x, y in loader:
            (loss_fn(self.model(x), y) / self.k).backward()
            if self.n_iter % self.k == 0:
                self.optimizer.step()
                self.optimizer.zero_grad()
            self.n_iter += 1
""", fixed="""
class Trainer:
    def __init__(self, k):
        self.k = k
        self.n_iter = 0

    def train(self, loader):
        for x, y in loader:
            (loss_fn(self.model(x), y) / self.k).backward()
            if (self.n_iter + 1) % self.k == 0:
                self.optimizer.step()
                self.optimizer.zero_grad()
            self.n_iter += 1
""", why="a counter set to 0 in `__init__` starts the first run at 0"),
        Invalid("""
def is_update_step(step, k):
    return step % k == 0

for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if is_update_step(i, k) or i == len(loader) - 1:
        optimizer.step()
        optimizer.zero_grad()
""", fixed=None, why='the boundary is computed by a same-module predicate', also=('GA203',)),
        Invalid("""
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if i % k == 0 or i == len(loader) - 1:
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0 or i == len(loader) - 1:
        optimizer.step()
        optimizer.zero_grad()
""", also=("GA203",)),
        Invalid("""
step = 0
for x, y in loader:
    (loss_fn(model(x), y) / args.k).backward()
    if step%args.k == 0 or step == len(loader) - 1:
        optimizer.step()
        optimizer.zero_grad()
    step += 1
""", fixed="""
step = 0
for x, y in loader:
    (loss_fn(model(x), y) / args.k).backward()
    if (step+1)%args.k == 0 or step == len(loader) - 1:
        optimizer.step()
        optimizer.zero_grad()
    step += 1
""", why="incremented after the test: the spacing of `%` is kept", also=("GA203",)),
        Invalid("""
grads = []
for i in range(len(seeds)):
    loss = ((direction - target(seeds[i])) ** 2).mean()
    loss.backward(retain_graph=True)
    if not (i % k):
        opt.step()
        grads.append(direction.grad.clone())
        direction.grad.data.zero_()
        if i > 3:
            tracker[grads[-2] * grads[-1] < 0] += 1
""", why="code under the boundary reads the counter (`if i > 3`): shifting the phase would change what it "
            "sees, so no fix is offered", also=("GA201", "GA202")),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        self._tree = model.facts.tree  # what the fix reads
        reported: set[int] = set()
        for _, boundary in loop.accumulation_variants():
            first = boundary.first_window
            if first not in ("1", "k-1", "k+1"):
                continue
            key = id(boundary.modulo if boundary.modulo is not None else boundary.expression)
            if key in reported or (boundary.modulo is None and boundary.expression is None):
                continue
            reported.add(key)
            evidence = boundary.schedule.evidence if boundary.schedule is not None else ""
            carried = boundary.counter is not None and not boundary.counter.per_pass
            if carried and evidence:
                # the micro-batches after a pass's last step open the next pass's first window
                evidence = f"{boundary.schedule.evidence_windows} in the first pass, and later windows straddle passes"
            size = {"1": "one micro-batch", "k-1": f"`{boundary.k_text} - 1` micro-batches",
                    "k+1": f"`{boundary.k_text} + 1` micro-batches"}[first]
            where = boundary.test or boundary.modulo or boundary.expression
            shown = code_of(boundary.modulo if boundary.modulo is not None else boundary.expression)
            message = (f"`{shown}` is off by one: the first window {'of the run ' if carried else ''}holds {size} "
                       "and every later one is shifted" + (f" ({evidence})" if evidence else ""))
            yield self.finding(message, where, self._fix(loop, boundary, first))

    def _fix(self, loop: TrainingLoop, boundary, first: str) -> Fix | None:
        """The one-token fix where the boundary is spelled `counter % k`."""
        modulo = boundary.modulo
        if modulo is None:
            return None
        read = boundary.counter.text if boundary.counter is not None else dotted_name(modulo.left)
        if loop.sync_spelled_elsewhere(read, boundary.expression):
            return None  # the other spelling of the boundary would stay out of phase
        if read and boundary.expression is not None and guarded_body_reads(
                self._tree, loop.node, boundary.expression, read):
            return None  # code under the boundary reads the counter: the shift changes what it sees
        space = modulo.operator.whitespace_before
        counter = modulo.left
        if first == "1" and boundary.spelled_zero_based and (
                boundary.counter is not None or isinstance(counter, (cst.Name, cst.Attribute))):
            shifted = cst.BinaryOperation(
                left=counter.with_changes(lpar=[], rpar=[]), operator=cst.Add(whitespace_before=space, whitespace_after=space),
                right=cst.Integer("1"), lpar=[cst.LeftParen()], rpar=[cst.RightParen()],
            )
            # A counter the loop does not count plainly (`if not is_last_batch: step += 1`): its
            # windows were read by running the loop's arithmetic, so the shift is not one token's certainty.
            applicability = Applicability.SAFE if boundary.counter is not None else Applicability.UNSAFE
            return Fix(applicability, f"Test `({code_of(counter)} + 1) % {boundary.k_text}`"
                       + ("" if boundary.counter is not None else "; unsafe: the counter is not incremented "
                          "once in the loop's own body"), (Replace(counter, shifted),))
        if boundary.counter is None:
            return None
        if (first == "k-1" and boundary.offset == 1 and isinstance(counter, cst.BinaryOperation)
                and isinstance(counter.operator, cst.Add) and isinstance(counter.right, cst.Integer)):
            plain = counter.left.with_changes(lpar=[], rpar=[])
            return Fix(Applicability.SAFE, f"Test `{code_of(plain)} % {boundary.k_text}`", (Replace(counter, plain),))
        return None
