from __future__ import annotations

from typing import Iterator

from gacclint.fixes.edits import InsertAfter
from gacclint.loops.model import Event, EventKind, GuardKind, LoopVariant, TrainingLoop
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import within



def _handed_unseen(loop: TrainingLoop, optimizer: str | None) -> bool:
    """The optimizer, or the `self` holding it, goes to a call whose body is not visible: it may
    clear the gradients there (RULES.md GA101, silent on a clear inside a helper)."""
    return optimizer is not None and (optimizer in loop.handed_unseen or (
        optimizer.startswith("self.") and "self" in loop.handed_unseen))

class MissingZeroGrad(Rule):
    """
    ## What it does
    Checks for training loops that step an optimizer but never clear the
    gradients between two steps. It is judged per optimizer: in a loop with
    several optimizers (a GAN), one whose parameters no clear of the loop
    reaches is reported, read from the parameters each optimizer was built
    with; when that cannot be read, the rule stays silent. It also reports a
    step that runs on every micro-batch while the only clears run on an
    accumulation boundary (the two granularities swapped), without a fix.

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
for x in loader:
    for opt in (opt_g, opt_d):
        opt.zero_grad()
    D(G(x)).mean().backward()
    opt_g.step()
    opt_d.step()
""", "a loop over the optimizers clears them: which ones it reaches is not read, so no finding"),
        Valid("""
def train_step(models, optimizers, xs, ys):
    for optimizer in optimizers:
        optimizer.zero_grad()
    for model, opt, x, y in zip(models, optimizers, xs, ys):
        loss_fn(model(x), y).backward()
        opt.step()
""", "each iteration steps another optimizer, each cleared before the loop"),
        Valid("""
def train(model, loader):
    core = model.module if hasattr(model, "module") else model
    optimizer = torch.optim.AdamW(core.encoder.parameters(), lr=1e-5)
    head_optimizer = torch.optim.AdamW(core.head.parameters(), lr=1e-3)
    for batch in loader:
        model(batch).backward()
        optimizer.step()
        head_optimizer.step()
        model.zero_grad()
""", "the optimizers own parts of `core`, the wrapped module the loop clears as `model`"),
        Valid("""
from attacks import trades_loss

for x, y in loader:
    loss = trades_loss(model, x, y, optimizer, beta=6.0)
    loss.backward()
    optimizer.step()
""", "the optimizer is handed to a helper the module cannot see: it may clear the gradients there"),
        Valid("""
g_optimizer = torch.optim.Adam(generator.module.synthesis.parameters())
d_optimizer = torch.optim.Adam(discriminator.parameters())
for x in loader:
    discriminator.zero_grad()
    discriminator(x).mean().backward()
    d_optimizer.step()
    generator.zero_grad()
    (-discriminator(generator(x)).mean()).backward()
    g_optimizer.step()
""", "clearing a module clears its submodules: `generator.zero_grad()` reaches what `g_optimizer` owns"),
        Valid("""
opt_d = torch.optim.Adam(D.parameters())
opt_g = torch.optim.Adam(G.parameters())
for real in loader:
    fake = G(noise())
    D.zero_grad()
    (crit(D(real), ones) + crit(D(fake.detach()), zeros)).backward()
    opt_d.step()
    G.zero_grad()
    crit(D(fake), ones).backward()
    opt_g.step()
""", "each optimizer's parameters are cleared through their model"),
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
        Valid("""
params = [W]
opt = torch.optim.Adam(params, lr=1e-3)


def reset_grad():
    for p in params:
        if p.grad is not None:
            data = p.grad.data
            p.grad = Variable(data.new().resize_as_(data).zero_())


for it in range(1000):
    loss = (x @ W).pow(2).mean()
    loss.backward()
    opt.step()
    reset_grad()
""", "a fresh tensor of zeros put into `p.grad` clears it, as `p.grad = None` does"),
        Valid("""
def check_each_config(configs, x):
    for cfg in configs:
        model = torch.nn.Linear(cfg, 1)
        loss = model(x[:, :cfg]).sum()
        loss.backward()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        opt.step()
""", "the model and its optimizer are made anew each iteration: no gradient carries over"),
        Valid("""
from mxnet import autograd, gluon

optimizer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
for X, y in train_iter:
    with autograd.record():
        l = loss(net(X), y)
    l.backward()
    optimizer.step(batch_size)
""", "MXNet, not PyTorch: gluon's backward writes the gradients anew, and its Trainer has no zero_grad"),
        Valid("""
def train(net, train_iter, loss, num_epochs, batch_size, params=None, lr=None, optimizer=None):
    for epoch in range(num_epochs):
        for X, y in train_iter:
            l = loss(net(X), y).sum()
            if optimizer is not None:
                optimizer.zero_grad()
            elif params is not None and params[0].grad is not None:
                for param in params:
                    param.grad.data.zero_()
            l.backward()
            if optimizer is None:
                sgd(params, lr, batch_size)
            else:
                optimizer.step()
""", "`optimizer is None` and `optimizer is not None` are one switch read two ways: where the optimizer steps, it is cleared"),
        Valid("""
from .trades import trades_loss


class Trainer:
    def trades(self, x, y):
        return trades_loss(self.model, x, y, self.optimizer, beta=self.beta)

    def standard(self, x, y):
        self.optimizer.zero_grad()
        return self.criterion(self.model(x), y)

    def train(self, loader, adversarial):
        for x, y in loader:
            loss = self.trades(x, y) if adversarial else self.standard(x, y)
            loss.backward()
            self.optimizer.step()
""", "the method hands `self.optimizer` to a function of the project the module cannot see: whether it clears is unknown"),
        Valid("""
shared_pol_opt = torch.optim.Adam(shared_pol.parameters(), lr=1e-3)
shared_val_opt = torch.optim.Adam(shared_val.parameters(), lr=1e-3)
for it in range(steps):
    worker_pol.load_state_dict(shared_pol.state_dict())
    worker_val.load_state_dict(shared_val.state_dict())
    loss = actor_critic_loss(worker_pol, worker_val)
    worker_pol.zero_grad()
    worker_val.zero_grad()
    loss.backward()
    for w, p in zip(worker_pol.parameters(), shared_pol.parameters()):
        p.grad = w.grad.clone()
    shared_pol_opt.step()
    for w, p in zip(worker_val.parameters(), shared_val.parameters()):
        p.grad = w.grad.clone()
    shared_val_opt.step()
""", "each shared parameter's gradient is replaced by the worker's before its step (`p.grad = w.grad.clone()`): "
            "nothing of the last step is left to sum"),
    ]
    INVALID = [
        Invalid("""
one = torch.FloatTensor([1])
if use_cuda:
    one = one.cuda()
d_opt = torch.optim.Adam(D.parameters())
for x in loader:
    err_real = D(x)
    err_real.backward(one)
    d_opt.step()
""", fixed="""
one = torch.FloatTensor([1])
if use_cuda:
    one = one.cuda()
d_opt = torch.optim.Adam(D.parameters())
for x in loader:
    err_real = D(x)
    err_real.backward(one)
    d_opt.step()
    d_opt.zero_grad()
""", why="a trained module's output handed its gradient (moved to the GPU) is the tensor's own backward, not "
            "a framework's"),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss_fn(model(x), y).backward()
    optimizer.step()
    if (i + 1) % k == 0:
        optimizer.zero_grad()
""", fixed=None, applicability=None,
            why="the step runs on every micro-batch but the clear only on the boundary: each step applies the "
                "gradients summed since the last clear (no fix: which of the two should move is a guess)"),
        Invalid("""
opt_g = torch.optim.Adam(G.parameters())
opt_d = torch.optim.Adam(D.parameters())
one = torch.tensor(1.0)
mone = one * -1
for real in loader:
    opt_d.zero_grad()
    d_cost = D(G(noise()).detach()).mean() - D(real).mean()
    d_cost.backward(one)
    opt_d.step()
    g_cost = D(G(noise())).mean()
    g_cost.backward(mone)
    opt_g.step()
""", fixed="""
opt_g = torch.optim.Adam(G.parameters())
opt_d = torch.optim.Adam(D.parameters())
one = torch.tensor(1.0)
mone = one * -1
for real in loader:
    opt_d.zero_grad()
    d_cost = D(G(noise()).detach()).mean() - D(real).mean()
    d_cost.backward(one)
    opt_d.step()
    g_cost = D(G(noise())).mean()
    g_cost.backward(mone)
    opt_g.step()
    opt_g.zero_grad()
""", why="`g_cost.backward(mone)` is the tensor's own backward, handed its gradient: not another object's", also=("GA301",)),
        Invalid("""
g_opt = torch.optim.Adam(G.parameters())
d_opt = torch.optim.Adam(D.parameters())


def reset_grad():
    d_opt.zero_grad()


for x in loader:
    fake = G(torch.randn(x.size(0), 16))
    d_loss = D(fake.detach()).mean() - D(x).mean()
    reset_grad()
    d_loss.backward()
    d_opt.step()
    g_loss = -D(fake).mean()
    g_loss.backward()
    g_opt.step()
""", fixed="""
g_opt = torch.optim.Adam(G.parameters())
d_opt = torch.optim.Adam(D.parameters())


def reset_grad():
    d_opt.zero_grad()


for x in loader:
    fake = G(torch.randn(x.size(0), 16))
    d_loss = D(fake.detach()).mean() - D(x).mean()
    reset_grad()
    d_loss.backward()
    d_opt.step()
    g_loss = -D(fake).mean()
    g_loss.backward()
    g_opt.step()
    g_opt.zero_grad()
""", why="the helper clears one module-level optimizer, by name: the other is never cleared", also=("GA301",)),
        Invalid("""
for i in range(steps):
    x = torch.randn(2, 4)
    loss_1 = model_1(x).sum()
    loss_2 = model_2(x).sum()
    loss_1.backward()
    loss_2.backward()
    optimizer_1.step()
    optimizer_2.step()
""", fixed="""
for i in range(steps):
    x = torch.randn(2, 4)
    loss_1 = model_1(x).sum()
    loss_2 = model_2(x).sum()
    loss_1.backward()
    loss_2.backward()
    optimizer_1.step()
    optimizer_1.zero_grad()
    optimizer_2.step()
    optimizer_2.zero_grad()
""", why="two optimizers, neither cleared: each is reported, and each fix clears its own"),
        Invalid("""
opt_d = torch.optim.Adam(D.parameters())
opt_g = torch.optim.Adam(G.parameters())
for real in loader:
    fake = G(noise())
    opt_d.zero_grad()
    d_loss = crit(D(real), ones) + crit(D(fake.detach()), zeros)
    d_loss.backward()
    opt_d.step()
    g_loss = crit(D(fake), ones)
    g_loss.backward()
    opt_g.step()
""", fixed="""
opt_d = torch.optim.Adam(D.parameters())
opt_g = torch.optim.Adam(G.parameters())
for real in loader:
    fake = G(noise())
    opt_d.zero_grad()
    d_loss = crit(D(real), ones) + crit(D(fake.detach()), zeros)
    d_loss.backward()
    opt_d.step()
    g_loss = crit(D(fake), ones)
    g_loss.backward()
    opt_g.step()
    opt_g.zero_grad()
""", why="per optimizer: only the discriminator's optimizer is ever cleared", also=("GA301",)),
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
        Invalid("""
it = 0
for x, y in loader:
    if it > args.num_train_iter:
        break
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    it += 1
""", fixed="""
it = 0
for x, y in loader:
    if it > args.num_train_iter:
        break
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    it += 1
""", why="an iteration cap ahead of everything (`if it > args.num_train_iter: break`) only ends the pass: every iteration that runs steps without a clear"),
        Invalid("""
for x, y in loader:
    with torch.autocast("cuda", enabled=use_amp):
        loss = loss_fn(model(x), y)
    if use_amp:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
""", fixed="""
for x, y in loader:
    with torch.autocast("cuda", enabled=use_amp):
        loss = loss_fn(model(x), y)
    if use_amp:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        optimizer.zero_grad()
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
""", why="the optimizer steps in both configurations and neither clears: the fix clears after both steps"),
        Invalid("""
for x, y in loader:
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    for p in model.parameters():
        p.grad = p.grad + noise_scale * torch.randn_like(p.grad)
    optimizer.step()
""", fixed="""
for x, y in loader:
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    for p in model.parameters():
        p.grad = p.grad + noise_scale * torch.randn_like(p.grad)
    optimizer.step()
    optimizer.zero_grad()
""", why="noise is added to the gradient, which still builds on what was there: nothing clears it"),
        Invalid("""
class Fitter:
    def __init__(self, loader):
        self.net = nn.Linear(8, 8)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.loader = loader

    def run_epoch(self):
        for x in self.loader:
            loss = ((self.net(x) - x) ** 2).mean()
            loss.backward()
            self.optimizer.step()
""", fixed="""
class Fitter:
    def __init__(self, loader):
        self.net = nn.Linear(8, 8)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.loader = loader

    def run_epoch(self):
        for x in self.loader:
            loss = ((self.net(x) - x) ** 2).mean()
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
""", why="`self.net(x)` calls a module the class binds, not a method inherited from elsewhere that could clear: "
            "nothing clears `self.optimizer`"),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        clears = [event for event in loop.events if event.kind is EventKind.CLEAR]
        reported: set[int] = set()
        if clears:
            for finding in (*self._cleared_less_often(loop), *self._uncleared_optimizer(loop, clears, model.facts)):
                reported.add(id(finding.node))
                yield finding
        # The configurations in which nothing clears (RULES.md: a finding holds in its variant), such
        # as the `else: optimizer.step()` branch of `if cfg.accum > 1:`. Each optimizer once, at its
        # first step (RULES.md, *ownership*), with one fix that clears after every step of it in
        # those configurations (`if amp: scaler.step(opt) else: opt.step()`: both), and one fix for
        # all optimizers (once one is cleared, the other's ownership may not be readable).
        stepped: dict[str | None, list[Event]] = {}
        where: dict[str | None, LoopVariant] = {}
        for variant in loop.variants:
            # accelerate's accumulate() skips zero_grad but never calls it for you.
            if variant.frameworks - {"accelerate-accumulate", "accelerate-gas"} or variant.clears:
                continue
            steps = [s for s in variant.steps if s.event.framework is None and not s.event.in_inner_loop
                     and s.guard.kind in {GuardKind.NONE, GuardKind.BOUNDARY}
                     and s.event.receiver not in loop.fresh_optimizers and not _handed_unseen(loop, s.event.receiver)
                     and not s.event.iterated]  # `optimizers[i].step()`: another optimizer each iteration
            if not steps or not variant.backwards:
                continue
            for step in steps:
                events = stepped.setdefault(step.event.receiver, [])
                if not any(event is step.event for event in events):
                    events.append(step.event)
                where.setdefault(step.event.receiver, variant)
        stepped = {receiver: events for receiver, events in stepped.items()
                   if not any(id(event.node) in reported for event in events)}
        if not stepped:
            return
        fixes = [_clear_after(event, receiver) if receiver else None
                 for receiver, events in stepped.items() for event in events]
        fix = None
        if None not in fixes:
            message = "Insert " + " and ".join(f"`{r}.zero_grad()`" for r in stepped) + " after their steps" \
                if len(stepped) > 1 else f"Insert `{next(iter(stepped))}.zero_grad()` after the step" \
                + ("s" if len(fixes) > 1 else "")
            fix = Fix(Applicability.SAFE, message, tuple(edit for one in fixes for edit in one.edits))  # type: ignore[union-attr]
        for receiver, events in stepped.items():
            yield self.finding(
                f"`{receiver}` is stepped but gradients are never cleared in this loop"
                + (f" when {_switches_text(where[receiver])}" if clears else "")
                + ": every step applies the sum of all gradients so far",
                events[0].node, fix)

    def _cleared_less_often(self, loop: TrainingLoop) -> Iterator[Finding]:
        """A step on every micro-batch while every clear runs only on a boundary: the steps
        between two clears apply the gradients summed since the last one (step and clear at
        swapped granularities). No fix: which of the two was meant to move is a guess."""
        reported: set[int] = set()
        for variant in loop.variants:
            if variant.frameworks or not variant.clears or not variant.backwards:
                continue
            clears = variant.clears
            if any(c.event.in_inner_loop or c.event.receiver in (None, "params") or c.guard.kind is not GuardKind.BOUNDARY
                   or c.guard.boundary is None for c in clears):
                continue
            if any(b.guard.kind is not GuardKind.NONE for b in variant.backwards):
                continue
            for step in variant.steps:
                if step.event.framework is not None or step.event.in_inner_loop or step.guard.kind is not GuardKind.NONE \
                        or id(step.event.node) in reported:
                    continue
                reported.add(id(step.event.node))
                boundary = clears[0].guard.boundary
                assert boundary is not None
                yield self.finding(
                    f"`{step.event.receiver}` steps on every micro-batch but gradients are cleared only every "
                    f"`{boundary.k_text or 'k'}` micro-batches: each step between two clears applies the gradients "
                    "summed since the last clear", step.event.node, None)

    def _uncleared_optimizer(self, loop: TrainingLoop, clears, facts) -> Iterator[Finding]:
        """RULES.md, *ownership*: in a loop with several optimizers, one whose parameters no
        clear reaches (a GAN's generator optimizer when only the discriminator's is cleared)."""
        cleared: set[str] = set()
        for clear in clears:
            receiver = clear.receiver
            if receiver is None or receiver == "params" or clear.in_inner_loop or clear.iterated:
                return  # a helper, a parameter loop or a loop over optimizers: what it clears is not read here
            cleared.add(receiver)
        steps = [e for e in loop.events if e.kind is EventKind.STEP and e.framework is None and not e.in_inner_loop]
        if len({e.receiver for e in steps}) < 2 or any(v.frameworks for v in loop.variants):
            return
        cleared_models: set[str] = set()
        for receiver in cleared:
            owned = facts.optimizer_models(receiver)
            if owned is not None:
                cleared_models |= owned
            elif receiver in facts.optimizers:
                return  # an optimizer whose parameters we cannot read
            else:
                cleared_models.add(receiver)  # `model.zero_grad()`
        reported: set[str] = set()
        for step in steps:
            receiver = step.receiver
            if not receiver or receiver in cleared or receiver in reported or receiver in loop.fresh_optimizers:
                continue
            owned = facts.optimizer_models(receiver)
            # a clear of a module, or of one of its parts or wholes, reaches some of the optimizer's parameters
            if owned is None or any(within(model, cleared) or within(cleared, model)
                                    for model in owned for cleared in cleared_models):
                continue  # ownership unknown, or some clear reaches its parameters
            reported.add(receiver)
            fix = _clear_after(step, receiver)
            yield self.finding(
                f"`{receiver}` is stepped but nothing clears its parameters' gradients (the loop clears only "
                f"{', '.join(f'`{c}`' for c in sorted(cleared))}): every step of `{receiver}` applies the sum of "
                "all its gradients so far", step.node, fix)


def _switches_text(variant: LoopVariant) -> str:
    """`config.ACCUM > 1` is false: the configuration a variant stands for, in words."""
    return " and ".join(f"`{text}` is {'true' if value else 'false'}" for text, value in variant.switches) \
        or "this configuration holds"


def _clear_after(step: Event, receiver: str) -> Fix | None:
    """`<opt>.zero_grad()` directly after the step, in the same block."""
    if not step.editable:
        return None
    return Fix(Applicability.SAFE, f"Insert `{receiver}.zero_grad()` after the step",
               (InsertAfter(step.statement, f"{receiver}.zero_grad()"),))
