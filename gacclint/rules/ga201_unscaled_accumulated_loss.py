from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import libcst as cst

from gacclint.fixes.edits import Replace
from gacclint.loops.evaluate import bare
from gacclint.loops.model import Event, EventKind, GuardKind, Scaling, Shape, TrainingLoop
from gacclint.loops.vocabulary import code_of
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import atom, looks_like_accumulation_count


class UnscaledAccumulatedLoss(Rule):
    """
    ## What it does
    Checks for accumulation loops that backpropagate the loss of every
    micro-batch without dividing it by the accumulation count `k`.

    ## Why is this bad?
    Gradients of the `k` micro-batches are summed, so each step applies `k`
    times the mean gradient: as if the learning rate were `k` times larger,
    and different from the large-batch training the loop stands in for.

    Any arithmetic scaling of the loss on the way (`/ k`, `* (1 / k)`,
    `/ num_tokens`, a weighted sum), scaling of the gradients before the step
    (`p.grad /= k`), visibly sum-reduced losses and framework-managed
    scaling (accelerate, DeepSpeed) are left alone.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        (loss / k).backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix safety
    Safe: the loss is divided inside the backward (`(loss / k).backward()`,
    `scaler.scale(loss / k).backward()`, `accelerator.backward(loss / k)`),
    with `k` spelled as in the boundary. The name `loss` is not rebound, so a
    value logged from it after the backward (`print(loss.item())`) is the
    same as before the fix.
    """

    code = "GA201"
    name = "unscaled-accumulated-loss"

    VALID = [
        Valid("""
opt_a = torch.optim.Adam(model.parameters())
opt_b = torch.optim.SGD(model.head.parameters())
for i, x in enumerate(loader):
    model(x).mean().backward()
    opt_b.step()
    if (i + 1) % k == 0:
        opt_a.step()
        model.zero_grad()
""", "two optimizers over shared parameters: which gradients each step applies cannot be told apart"),
        Valid("""
from losses import compute_loss


def train(args, model, loader, optimizer):
    for i, batch in enumerate(loader):
        loss = compute_loss(args, model, batch)
        loss.backward()
        if (i + 1) % args.accum == 0 or i + 1 == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", "the loss comes from a helper the module cannot see that is handed `args`, which holds the count: "
            "it may divide by it"),
        Valid("""
class YoloLoss(nn.Module):
    def forward(self, pred, target):
        return F.mse_loss(pred, target, reduction="sum")


criterion = YoloLoss()
for i, (x, y) in enumerate(loader):
    loss = criterion(model(x), y)
    loss.backward()
    if (i + 1) % k == 0 or i + 1 == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", "the module's own criterion sums: the user owns its normalisation (darknet's lr / batch)"),
        Valid("""
def train(model, loader, optimizer, accum=1):
    for i, (x, y) in enumerate(loader):
        loss_fn(model(x), y).backward()
        if (i + 1) % accum == 0:
            optimizer.step()
            optimizer.zero_grad()


def main():
    train(model, loader, optimizer)
""", "every call site leaves the count at its literal default 1: no accumulation"),
        Valid("""
for i, batch in enumerate(loader):
    out = model(batch)
    out["loss"] = out["loss"] / k
    out["loss"].backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", 'the loss is divided where it is stored'),
        Valid("""
for i, batch in enumerate(loader):
    loss = model(batch)
    loss.sum().mul(scale / total_tokens).backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", 'scaled by a method call'),
        Valid("""
for i, batch in enumerate(loader):
    feats.append(model.encode(batch))
    if (i + 1) % k != 0:
        continue
    optimizer.zero_grad()
    for j in range(k):
        loss = contrastive_loss(model, cached[j], feats, j)
        loss.backward()
    optimizer.step()
    feats = []
""", 'recomputed against features gathered over the window: the loss already spans it'),
        Valid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "divided by k"),
        Valid("""
for i, (x, y) in enumerate(loader):
    loss = F.cross_entropy(model(x), y, reduction="sum")
    loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "a sum-reduced loss: its normalisation is the user's"),
        Valid("""
for i, (x, y) in enumerate(loader):
    loss_fn(model(x), y).backward()
    if (i + 1) % k == 0:
        for p in model.parameters():
            p.grad /= k
        optimizer.step()
        optimizer.zero_grad()
""", "the gradients are averaged instead of the loss"),
        Valid("""
for i, (x, y) in enumerate(loader):
    if cfg.accum > 1:
        loss = loss_fn(model(x), y) / cfg.accum
    else:
        loss = loss_fn(model(x), y)
    loss.backward()
    if (i + 1) % cfg.accum == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "scaled on a path"),
        Valid("""
for step, batch in enumerate(loader):
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
""", "accelerate divides inside backward"),
        Valid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)
    loss.div_(accum)
    loss.backward()
    if (i + 1) % accum == 0 or i + 1 == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", "divided in place: `loss.div_(accum)` scales the loss as `loss = loss / accum` does"),
        Valid("""
class Trainer:
    def forward_propagation(self, batch, model):
        raise NotImplementedError

    def train(self, loader, model, optimizer):
        for i, batch in enumerate(loader):
            loss = self.forward_propagation(batch, model)
            loss.backward()
            if (i + 1) % self.accumulation_steps == 0 or (i + 1) == len(loader):
                optimizer.step()
                model.zero_grad()


class LmTrainer(Trainer):
    def forward_propagation(self, batch, model):
        loss = model(*batch)
        return loss / self.accumulation_steps
""", "every override that computes the loss divides it (the base class's only raises)"),
        Valid("""
def train(model, loader, optimizer, heads):
    for x, y in loader:
        for t in range(len(heads)):
            loss = crit(heads[t](model(x)), y[t])
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
""", "one loss per task on the same batch: summing task losses is a choice, not a window of micro-batches"),
        Valid("""
class GPT(nn.Module):
    def forward(self, inputs, targets):
        logits = self.head(self.blocks(self.embed(inputs)))
        return F.cross_entropy(logits.view(targets.numel(), -1), targets.view(-1), reduction="sum")


model = GPT().cuda()
optimizer = torch.optim.AdamW(model.parameters())
for inputs, targets in loader:
    for i in range(len(inputs) // mbs):
        model(inputs[i * mbs:(i + 1) * mbs], targets[i * mbs:(i + 1) * mbs]).backward()
    optimizer.step()
    model.zero_grad(set_to_none=True)
""", "the model's own forward returns a sum-reduced loss: its normalisation is the user's"),
        Valid("""
class Trainer:
    def __init__(self, config):
        self.config = config
        self.accum = config.accum

    def train(self, rl_model, X):
        opt = torch.optim.AdamW(rl_model.parameters(), lr=1e-3)
        for it in range(1000):
            for micro_step in range(self.accum):
                loss = rl_model.rollout_loss(X, self.config)
                loss.backward()
            opt.step()
            opt.zero_grad()
""", "the call is handed `self.config`, which holds the count `self.accum` was read from: it may divide by it"),
        Valid("""
def meta_update(model, optimizer, task_batches, n_tasks):
    optimizer.zero_grad()
    for t in range(n_tasks):
        x, y = next(task_batches[t])
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    optimizer.step()
""", "each pass draws from its own task's stream (`next(task_batches[t])`): a sum over tasks, on purpose"),
        Valid("""
def fit(model, optimizer, loader, sampler):
    for i, batch in enumerate(loader):
        loss = model(batch).mean()
        loss.backward()
        if i % sampler.draw(i) == 0:
            optimizer.step()
            optimizer.zero_grad()
""", "the count a method returns is handed the loop's counter: it may change between micro-batches, so no "
            "window is evaluated"),
        Valid("""
def fit(net, loader, opt, k):
    crit = torch.nn.BCELoss(reduction="sum").cuda()
    for i, (x, y) in enumerate(loader):
        loss = crit(net(x.cuda()), y.cuda())
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            opt.step()
            opt.zero_grad()
""", "a sum-reduced loss module moved to the GPU is still sum-reduced: its normalisation is the user's"),
        Valid("""
for i, (x, y) in enumerate(loader):
    loss = crit(model(x), y) * 0.25
    loss.backward()
    if (i + 1) % 4 == 0 or (i + 1) == len(loader):
        opt.step()
        opt.zero_grad()
""", "a literal weight may be the count's inverse written out (0.25 for 4)"),
    ]
    INVALID = [
        Invalid("""
class Net(nn.Module):
    def forward(self, x, y):
        return F.mse_loss(self.fc(x), y) / CFG.accumulation


model = Net()
optimizer = torch.optim.AdamW(model.parameters())
for i, (x, y) in enumerate(loader):
    loss = model(x, y)
    loss.backward()
    if (i + 1) % CFG.accumulation == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed=None, applicability=None, also=("GA203",),
            why="a model's forward counts as handed its inputs only (RULES.md), but this module's `forward` "
                "divides what it returns: a second division by the fix could halve it, so no fix"),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if adversarial:
        loss = adversary.attack(x, y)
        loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if adversarial:
        loss = adversary.attack(x, y)
        (loss / k).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", why="bound anew in the backward's own block: the earlier division does not reach it", also=("GA203",)),
        Invalid("""
opt_g = torch.optim.Adam(G.parameters())
opt_d = torch.optim.Adam(D.parameters())
for i, x in enumerate(loader):
    fake = G(torch.randn(8, 4))
    opt_d.zero_grad()
    D(fake.detach()).mean().backward()
    opt_d.step()
    g_loss = -D(fake).mean()
    g_loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        opt_g.step()
        opt_g.zero_grad()
""", fixed="""
opt_g = torch.optim.Adam(G.parameters())
opt_d = torch.optim.Adam(D.parameters())
for i, x in enumerate(loader):
    fake = G(torch.randn(8, 4))
    opt_d.zero_grad()
    D(fake.detach()).mean().backward()
    opt_d.step()
    g_loss = -D(fake).mean()
    (g_loss / k).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        opt_g.step()
        opt_g.zero_grad()
""", why="each optimizer's own window: the discriminator steps every micro-batch, the generator accumulates the "
            "backwards that reach its parameters (the detached one does not)", also=("GA203",)),
        Invalid("""
for step in range(steps):
    for micro_step in range(1, accumulation_steps + 1):
        x, y = next(batches)
        loss = loss_fn(model(x), y)
        loss.backward()
    optimizer.step()
    optimizer.zero_grad()
""", fixed="""
for step in range(steps):
    for micro_step in range(1, accumulation_steps + 1):
        x, y = next(batches)
        loss = loss_fn(model(x), y)
        (loss / accumulation_steps).backward()
    optimizer.step()
    optimizer.zero_grad()
""", why="`range(1, k + 1)` runs k micro-steps, as `range(k)` does"),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = criterion(model(x), y)
    with amp.scale_loss(loss, optimizer) as scaled_loss:
        scaled_loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    loss = criterion(model(x), y)
    with amp.scale_loss(loss / k, optimizer) as scaled_loss:
        scaled_loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", why="apex's `amp.scale_loss` only multiplies by the loss scale: the loss it is handed is the one backpropagated",
            also=("GA202",)),
        Invalid("""
for i, (x, y) in enumerate(loader):
    scaler.scale(loss_fn(model(x), y)).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.step(optimizer=optimizer)
        scaler.update()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    scaler.scale(loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.step(optimizer=optimizer)
        scaler.update()
        optimizer.zero_grad()
""", why="`scaler.step(optimizer=...)` is a step like `scaler.step(optimizer)`", also=("GA203",)),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = model(x, y)
    try:
        loss.backward()
    except RuntimeError:
        loss.mean().backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed=None, applicability=None,
            why="the backward in the `except` handler stands in for the one that failed: the loop still "
                "backpropagates every micro-batch (no fix: the fallback would stay undivided)"),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    loss = adversary.attack(x, y)
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    loss = adversary.attack(x, y)
    (loss / k).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", why="the name is bound anew before the second backward: the division of its earlier value does not reach it",
            also=("GA203",)),
        Invalid("""
def train_step(model, optimizer, batch, k):
    optimizer.zero_grad()
    for micro_step in range(k):
        loss = loss_fn(model(batch[micro_step]))
        loss.backward()
    optimizer.step()
""", fixed="""
def train_step(model, optimizer, batch, k):
    optimizer.zero_grad()
    for micro_step in range(k):
        loss = loss_fn(model(batch[micro_step]))
        (loss / k).backward()
    optimizer.step()
""", why="the micro-step loop of a function that steps once after it: each call is one window"),
        Invalid("""
def compute_loss(batch, model):
    x = batch["x"] / 255.0
    return F.cross_entropy(model(x), batch["y"])


for i, batch in enumerate(loader):
    loss = compute_loss(batch, model)
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
def compute_loss(batch, model):
    x = batch["x"] / 255.0
    return F.cross_entropy(model(x), batch["y"])


for i, batch in enumerate(loader):
    loss = compute_loss(batch, model)
    (loss / k).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", why="the helper divides its input, not the loss it returns"),
        Invalid("""
for epoch in range(epochs):
    num_iter = 0
    for x, y in loader:
        num_iter += 1
        loss = loss_fn(model(x), y)
        loss.backward()
        if num_iter == k:
            num_iter = 0
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
for epoch in range(epochs):
    num_iter = 0
    for x, y in loader:
        num_iter += 1
        loss = loss_fn(model(x), y)
        (loss / k).backward()
        if num_iter == k:
            num_iter = 0
            optimizer.step()
            optimizer.zero_grad()
""", why="a counter reset where it reaches k counts windows of k; the test is read once, before the reset in its block",
            also=("GA202",)),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)
    loss.backward()
    if args.accumulate:
        if (i + 1) % 4 == 0 or i + 1 == len(loader):
            optimizer.step()
            optimizer.zero_grad()
    else:
        optimizer.step()
        optimizer.zero_grad()
""", fixed=None, why="reported where it accumulates; not divided, since the other configuration runs the same backward and steps every micro-batch", applicability=None),
        Invalid("""
def train(model, loader, optimizer, args):
    global_step = 0
    for epoch in range(args.epochs):
        for batch in loader:
            global_step += 1
            loss = model(batch)
            if args.n_gpu > 1:
                loss = loss.mean()
            loss.backward()
            if global_step % args.accum == 0:
                optimizer.step()
                optimizer.zero_grad()
""", fixed="""
def train(model, loader, optimizer, args):
    global_step = 0
    for epoch in range(args.epochs):
        for batch in loader:
            global_step += 1
            loss = model(batch)
            if args.n_gpu > 1:
                loss = loss.mean()
            (loss / args.accum).backward()
            if global_step % args.accum == 0:
                optimizer.step()
                optimizer.zero_grad()
""", why='a counter incremented before the test, the loss reduced over GPUs (not divided)'),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)  # mean over the micro-batch
    loss.backward()
    if (i + 1) % accumulation_steps == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)  # mean over the micro-batch
    (loss / accumulation_steps).backward()
    if (i + 1) % accumulation_steps == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", also=("GA203",)),
        Invalid("""
for i, batch in enumerate(loader):
    with autocast():
        out = model(batch)
    scaler.scale(out.loss).backward()
    if (i + 1) % args.accum_steps == 0 or i + 1 == len(loader):
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""", fixed="""
for i, batch in enumerate(loader):
    with autocast():
        out = model(batch)
    scaler.scale(out.loss / args.accum_steps).backward()
    if (i + 1) % args.accum_steps == 0 or i + 1 == len(loader):
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""", also=("GA203",)),
        Invalid("""
while True:
    for micro_step in range(gradient_accumulation_steps):
        logits, loss = model(X, Y)
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
""", fixed="""
while True:
    for micro_step in range(gradient_accumulation_steps):
        logits, loss = model(X, Y)
        (loss / gradient_accumulation_steps).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
""", why="the nanoGPT shape: the window is the inner loop"),
        Invalid("""
def train_epoch(model, optimizer, loader, cfg):
    for i, batch in enumerate(loader):
        accum = cfg.accum
        loss = model(batch)
        loss.backward()
        if (i + 1) % accum == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
def train_epoch(model, optimizer, loader, cfg):
    for i, batch in enumerate(loader):
        accum = cfg.accum
        loss = model(batch)
        (loss / accum).backward()
        if (i + 1) % accum == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", why="a name bound to the same value on every iteration is the count all the same"),
        Invalid("""
def train_one_epoch(model, train_loader, criterion, optimizer, cfg):
    for idx, data in enumerate(train_loader):
        logits = model(data)
        loss = criterion(logits, data["y"]) if cfg.plain else criterion(logits, data["y"], data["mask"])
        loss.backward()
        if (idx + 1) % cfg.step_per_update == 0 or idx + 1 == len(train_loader):
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
def train_one_epoch(model, train_loader, criterion, optimizer, cfg):
    for idx, data in enumerate(train_loader):
        logits = model(data)
        loss = criterion(logits, data["y"]) if cfg.plain else criterion(logits, data["y"], data["mask"])
        (loss / cfg.step_per_update).backward()
        if (idx + 1) % cfg.step_per_update == 0 or idx + 1 == len(train_loader):
            optimizer.step()
            optimizer.zero_grad()
""", why="neither arm of the conditional expression divides"),
        Invalid("""
def train(args, model, criterion, optimizer, train_loader):
    step = 0
    for epoch in range(3):
        for i, (inputs, targets) in enumerate(train_loader):
            loss = criterion(model(inputs), targets)
            loss.backward()
            if (i + 1) % args.step == 0 or (i + 1) == len(train_loader):
                optimizer.step()
                optimizer.zero_grad()
                step += 1
""", fixed="""
def train(args, model, criterion, optimizer, train_loader):
    step = 0
    for epoch in range(3):
        for i, (inputs, targets) in enumerate(train_loader):
            loss = criterion(model(inputs), targets)
            (loss / args.step).backward()
            if (i + 1) % args.step == 0 or (i + 1) == len(train_loader):
                optimizer.step()
                optimizer.zero_grad()
                step += 1
""", why="the attribute `args.step` is not the local counter `step`: nothing in the loop changes the count"),
        Invalid("""
def train(model, loader, k):
    criterion = torch.nn.BCEWithLogitsLoss(reduction="none")
    optimizer = torch.optim.Adam(model.parameters())
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y)
        loss = torch.mean(loss.float().view(-1), 0)
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
def train(model, loader, k):
    criterion = torch.nn.BCEWithLogitsLoss(reduction="none")
    optimizer = torch.optim.Adam(model.parameters())
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y)
        loss = torch.mean(loss.float().view(-1), 0)
        (loss / k).backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", why="`torch.mean(x)` is the mean of its argument, as `x.mean()` is"),
        Invalid("""
def train_step(model, optimizer, batch, k):
    x, y = batch
    for i in range(k):
        loss = F.mse_loss(model(x[i::k]), y[i::k])
        loss.backward()
    optimizer.step()
    optimizer.zero_grad()
""", fixed="""
def train_step(model, optimizer, batch, k):
    x, y = batch
    for i in range(k):
        loss = F.mse_loss(model(x[i::k]), y[i::k])
        (loss / k).backward()
    optimizer.step()
    optimizer.zero_grad()
""", why="each micro-step takes its slice of one batch (`x[i::k]`): the window is that batch, whatever the loop variable is called"),
        Invalid("""
class Trainer:
    def train(self, rl_model, X):
        opt = torch.optim.AdamW(rl_model.parameters(), lr=1e-3)
        for it in range(1000):
            for micro_step in range(self.accum):
                rewards = rl_model.sample_rewards(X, self.device, self.block_size)
                loss = -rewards.mean()
                loss.backward()
            opt.step()
            opt.zero_grad()
""", fixed="""
class Trainer:
    def train(self, rl_model, X):
        opt = torch.optim.AdamW(rl_model.parameters(), lr=1e-3)
        for it in range(1000):
            for micro_step in range(self.accum):
                rewards = rl_model.sample_rewards(X, self.device, self.block_size)
                loss = -rewards.mean()
                (loss / self.accum).backward()
            opt.step()
            opt.zero_grad()
""", why="the call is handed a device and a size, attributes of `self` that hold no count: it cannot divide by `self.accum`"),
        Invalid("""
def generator_update(generator, discriminator, optimizer, noise, k):
    optimizer.zero_grad()
    for _ in range(k):
        z = next(noise)
        g_loss = F.softplus(-discriminator(generator(z))).mean()
        g_loss.backward()
    optimizer.step()
""", fixed="""
def generator_update(generator, discriminator, optimizer, noise, k):
    optimizer.zero_grad()
    for _ in range(k):
        z = next(noise)
        g_loss = F.softplus(-discriminator(generator(z))).mean()
        (g_loss / k).backward()
    optimizer.step()
""", why="each micro-step draws the next batch of one stream (`next(noise)`): the inner loop is an accumulation "
            "window, whatever its names say, and its losses are summed undivided"),
        Invalid("""
def fit(fabric, state, model, optimizer, loader, k):
    for batch in loader:
        state["iter_num"] += 1
        is_accumulating = state["iter_num"] % k != 0
        with fabric.no_backward_sync(model, enabled=is_accumulating):
            loss = model(batch).mean()
            fabric.backward(loss)
        if not is_accumulating:
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
def fit(fabric, state, model, optimizer, loader, k):
    for batch in loader:
        state["iter_num"] += 1
        is_accumulating = state["iter_num"] % k != 0
        with fabric.no_backward_sync(model, enabled=is_accumulating):
            loss = model(batch).mean()
            fabric.backward(loss / k)
        if not is_accumulating:
            optimizer.step()
            optimizer.zero_grad()
""", why="the count is kept in a dictionary (`state['iter_num'] += 1`) and read as any counter: every k-th "
            "micro-batch steps, and the summed losses are not divided"),
        Invalid("""
def fit(fabric, model, optimizer, loader, train, devices):
    iter_num = 0
    for batch in loader:
        iter_num += 1
        is_accumulating = iter_num % train.gradient_accumulation_iters(devices) != 0
        with fabric.no_backward_sync(model, enabled=is_accumulating):
            loss = model(batch).mean()
            fabric.backward(loss)
        if not is_accumulating:
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
def fit(fabric, model, optimizer, loader, train, devices):
    iter_num = 0
    for batch in loader:
        iter_num += 1
        is_accumulating = iter_num % train.gradient_accumulation_iters(devices) != 0
        with fabric.no_backward_sync(model, enabled=is_accumulating):
            loss = model(batch).mean()
            fabric.backward(loss / train.gradient_accumulation_iters(devices))
        if not is_accumulating:
            optimizer.step()
            optimizer.zero_grad()
""", also=("GA202",), why="the count is what a method of the configuration returns, handed only what the loop does not change: "
            "the same k on every micro-batch"),
        Invalid("""
def train(model, loader, optimizer, k):
    for step, batch in enumerate(loader):
        outs = []
        for view in batch["views"]:
            outs.append(model(view))
        loss = F.cross_entropy(torch.stack(outs).mean(0), batch["labels"])
        loss.backward()
        if (step + 1) % k == 0 or step + 1 == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
def train(model, loader, optimizer, k):
    for step, batch in enumerate(loader):
        outs = []
        for view in batch["views"]:
            outs.append(model(view))
        loss = F.cross_entropy(torch.stack(outs).mean(0), batch["labels"])
        (loss / k).backward()
        if (step + 1) % k == 0 or step + 1 == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", why="the list is made anew on every micro-batch: it gathers one micro-batch's views, not features of the "
            "whole window, and the loss is not divided"),
        Invalid("""
for update in range(num_updates):
    for micro in range(K):
        tries = 0
        while tries < 3:
            try:
                loss = model(next(batches)).pow(2).mean()
                loss.backward()
                break
            except RuntimeError:
                tries += 1
    opt.step()
    opt.zero_grad()
""", fixed="""
for update in range(num_updates):
    for micro in range(K):
        tries = 0
        while tries < 3:
            try:
                loss = model(next(batches)).pow(2).mean()
                (loss / K).backward()
                break
            except RuntimeError:
                tries += 1
    opt.step()
    opt.zero_grad()
""", why="a loop whose body ends in `break` (a retry after an exception) runs once: the micro-step loop around it "
            "is the window"),
        Invalid("""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda", enabled=amp):
        loss = F.mse_loss(model(x), y)
    if amp:
        scaled = scaler.scale(loss)
        scaled.backward()
    else:
        loss.backward()
    if (i + 1) % k == 0:
        if amp:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    with torch.autocast("cuda", enabled=amp):
        loss = F.mse_loss(model(x), y)
    if amp:
        scaled = scaler.scale(loss)
        (scaled / k).backward()
    else:
        (loss / k).backward()
    if (i + 1) % k == 0:
        if amp:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad()
""", why="the loss AMP scales, bound to a name first, is the loss as it was: undivided in that configuration too",
            also=("GA202",)),
        Invalid("""
def fit(net, opt, loader, accum):
    seen = 0
    for x, y in loader:
        seen += 1
        if seen % accum == 0 or seen == len(loader):
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
        else:
            loss = F.cross_entropy(net(x), y)
            loss.backward()
""", fixed="""
def fit(net, opt, loader, accum):
    seen = 0
    for x, y in loader:
        seen += 1
        if seen % accum == 0 or seen == len(loader):
            loss = F.cross_entropy(net(x), y)
            (loss / accum).backward()
            opt.step()
            opt.zero_grad()
        else:
            loss = F.cross_entropy(net(x), y)
            (loss / accum).backward()
""", why="a backward in each arm of the boundary's test runs on every micro-batch; both are divided by one fix",
            also=("GA203",)),
        Invalid("""
def fit(net, loader, opt, k):
    for step, (x, y) in enumerate(loader):
        opt.zero_grad()
        for j in range(k):
            xs = x[j::k]
            ys = y[j::k]
            loss = F.mse_loss(net(xs), ys)
            loss.backward()
        opt.step()
""", fixed="""
def fit(net, loader, opt, k):
    for step, (x, y) in enumerate(loader):
        opt.zero_grad()
        for j in range(k):
            xs = x[j::k]
            ys = y[j::k]
            loss = F.mse_loss(net(xs), ys)
            (loss / k).backward()
        opt.step()
""", why="each micro-step feeds the forward a slice of the batch picked by its index, bound to a name first"),
        Invalid("""
def train(loader, model, opt, crit, k, alpha):
    for i, (x, ya, yb) in enumerate(loader):
        lam = np.random.beta(alpha, alpha)
        out = model(x)
        loss = lam * crit(out, ya) + (1 - lam) * crit(out, yb)
        loss.backward()
        if (i + 1) % k == 0:
            opt.step()
            opt.zero_grad()
""", fixed="""
def train(loader, model, opt, crit, k, alpha):
    for i, (x, ya, yb) in enumerate(loader):
        lam = np.random.beta(alpha, alpha)
        out = model(x)
        loss = lam * crit(out, ya) + (1 - lam) * crit(out, yb)
        (loss / k).backward()
        if (i + 1) % k == 0:
            opt.step()
            opt.zero_grad()
""", why="a mixup weight drawn at random cannot hold the accumulation count: the weighted loss is not divided by it",
            also=("GA202",)),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        self._facts = model.facts  # what `_report` asks who may hold the count
        if any(event.kind is EventKind.GRAD_SCALING for event in loop.events):
            return
        reported: set[int] = set()
        if loop.shape is Shape.INNER_WINDOW:
            window_k = loop.window_k
            if window_k is None or not _accumulation_window(loop) or any(v.managed for v in loop.variants):
                return
            k_text = atom(window_k)
            for event in loop.events:
                if event.kind is EventKind.BACKWARD and event.in_window_loop and not event.in_inner_loop:
                    yield from self._report(event, k_text, reported)
            return
        # backward -> the count of each variant that reports it, in order
        reporting: dict[int, list[str]] = {}
        split: set[int] = set()  # backwards in the two arms of the boundary's test, together every micro-batch
        for variant, boundary in loop.accumulation_variants():
            arms = {b.guard.kind for b in variant.backwards} == {GuardKind.BOUNDARY, GuardKind.NOT_BOUNDARY}
            for backward in variant.backwards:
                if backward.guard.kind is GuardKind.NONE or arms:
                    reporting.setdefault(id(backward.event.node), []).append(atom(boundary.k))
                    if arms:
                        split.add(id(backward.event.node))
        found_here: list[Finding] = []
        for backward in loop.events:
            found = reporting.get(id(backward.node))
            if not found:
                continue
            # A backward that configuration switches share is divided in all of them: fixed only
            # when every variant that runs it accumulates over the same count.
            running = [v for v in loop.variants if any(b.event is backward for b in v.backwards)]
            # A fallback backward in an `except` handler would stay undivided after the fix.
            fixable = len(found) == len(running) and len(set(found)) == 1 and not any(
                e.fallback for e in loop.events)
            found_here.extend(self._report(backward, found[0], reported, fixable))
        # The two arms' backwards are fixed together: one divided alone would no longer pair with
        # the other, and the loop would be left half scaled.
        paired = [f for f in found_here if id(f.node) in split]
        if len(paired) > 1:
            fixes = [f.fix for f in paired]
            together = None if None in fixes else Fix(
                Applicability.SAFE, fixes[0].message.replace("before the backward", "before each backward"),  # type: ignore[union-attr]
                tuple(edit for fix in fixes for edit in fix.edits))  # type: ignore[union-attr]
            found_here = [replace(f, fix=together) if id(f.node) in split else f for f in found_here]
        yield from found_here

    def _report(self, event: Event, k_text: str, reported: set[int], fixable: bool = True) -> Iterator[Finding]:
        flow = event.loss_flow
        if flow is None or flow.scaling is not Scaling.UNSCALED or event.loss is None:
            return
        if id(event.node) in reported:
            return
        if any(self._facts.may_hold(handed, bare(k_text)) for handed in flow.handed):
            return  # RULES.md, *what can scale a loss*: a call handed the object holding k may divide by it
        reported.add(id(event.node))
        if flow.forward_divides:
            fixable = False  # a `forward` of this module may divide it already: a second division would halve it
        loss_text = code_of(event.loss)
        # Divided inside the backward, never by rebinding the name: a value
        # logged from `loss` afterwards stays what the user saw before.
        divided = cst.parse_expression(f"{atom(event.loss)} / {k_text}")
        func = getattr(event.node, "func", None)
        if event.via_scaler is None and event.framework is None and getattr(func, "value", None) is event.loss:
            divided = divided.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        edit = Replace(event.loss, divided)
        fix = Fix(Applicability.SAFE, f"Divide `{loss_text}` by `{k_text}` before the backward", (edit,)) if fixable else None
        yield self.finding(
            f"`{loss_text}` is backpropagated on every micro-batch but never divided by `{k_text}`: "
            f"each step applies `{k_text}` times the mean gradient",
            event.node, fix)


def _accumulation_window(loop: TrainingLoop) -> bool:
    """`for micro_step in range(gradient_accumulation_steps)`: the names say it accumulates, or
    each micro-step takes a micro-batch of its own (`model(x[i::k])`, `z = next(batches)`). A
    loop of task losses (`for t in range(n_tasks)`) sums them on purpose."""
    if loop.micro_steps_take_batches:
        return True
    node = loop.node
    target = code_of(node.target) if isinstance(node, cst.For) else ""
    return looks_like_accumulation_count(target) or looks_like_accumulation_count(code_of(loop.window_k)) if loop.window_k else False
