from __future__ import annotations

from typing import Iterator

import libcst as cst

from gacclint.fixes.edits import Replace
from gacclint.loops.graphs import PUTTING_METHODS, GraphFlow, addend
from gacclint.loops.model import EventKind, LoopStatement, TrainingLoop
from gacclint.loops.vocabulary import assignment_targets, call_name, code_of, dotted_name, keyword_argument
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import atom, backpropagated_names



class GraphKeptAcrossIterations(Rule):
    """
    ## What it does
    Checks for a tensor that carries an autograd graph (a loss, a model
    output) being accumulated into something that outlives the iteration and
    grows with it: `total += loss`, `total = total + loss`,
    `losses.append(loss)`, `history[step] = out`.

    ## Why is this bad?
    The stored tensor keeps its whole graph reachable, so every iteration's
    graph stays in memory until the accumulator is dropped: memory grows
    through the epoch and ends in an out-of-memory error, or slows training
    as the allocator thrashes. A logged value needs the number, not the graph.

    Overwriting the same key (`log["d_loss"] = d_loss`) keeps only the latest
    graph and is left alone, as are `.item()`, `.detach()`, `float(...)` and
    anything under `torch.no_grad()` / `torch.inference_mode()`.

    ## Example
    ```python
    total_loss = 0.0
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss
    ```

    ## Use instead
    ```python
    total_loss = 0.0
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
    ```

    ## Fix safety
    Safe: the stored value becomes `value.detach()` (no device sync), or
    `value.item()` when it is added into a Python number that starts at `0` or
    `0.0` and that, with every value computed from it, is only read as a
    number could be (arithmetic, comparisons, f-strings, `print`, `float`,
    `round`); any other read (`total.item()`, `avg.item()` of `avg = total /
    n`, `dist.all_reduce(total)`, `return total`) keeps `.detach()`. The stored
    values are equal; only the graph is no longer kept.
    """

    code = "GA303"
    name = "graph-kept-across-iterations"

    VALID = [
        Valid("""
logs = []
for batch in loader:
    output = task(batch)
    loss = output["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    logs.append(output["log"])
""", "another part of a result whose loss is backpropagated (logs, metrics): not visibly a graph"),
        Valid("""
history = []
for batch in loader:
    loss, metrics = model(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    history.append(metrics)
""", "what the forward returns beside the loss it is backpropagated through: not visibly a graph"),
        Valid("""
from sklearn.metrics import f1_score


def metric(logits, y):
    return f1_score(y, logits.argmax(1))


score = 0
for x, y in loader:
    logits = model(x)
    loss = criterion(logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    score += metric(logits, y)
""", "a helper returning what an imported function returns: not visible, so not known to carry a graph"),
        Valid("""
def train_a_batch(model, xs, ys, optimizer):
    losses = []
    for t in range(len(xs)):
        task_loss = F.cross_entropy(model(xs[t]), ys[t])
        losses.append(task_loss)
        if per_task:
            (task_loss / len(xs)).backward()
    total = sum(losses) / len(xs)
    if not per_task:
        total.backward()
    optimizer.step()
""", "the list is summed and backpropagated after the loop in one configuration: its graphs are kept on purpose"),
        Valid("""
import utils

meters = {name: utils.Averager() for name in ["loss", "acc"]}
for x, y in loader:
    loss, acc = model(x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    meters["acc"].add(acc)
""", "the dict holds objects of a class the module cannot see: what their `.add` keeps is unknown"),
        Valid("""
from utils import accuracy


def train(model, loader, optimizer, metric):
    acc_fn = accuracy
    accs, values = [], []
    for x, y in loader:
        out = model(x)
        loss = criterion(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        accs.append(acc_fn(out, y))
        values.append(metric(out, y))
""", "a local alias of an imported function, and a callable handed in, return what the module cannot see"),
        Valid("""
def get_acc(output, label):
    correct = (output.argmax(1) == label).sum().data[0]
    return correct / output.shape[0]


total = 0
for x, y in loader:
    output = model(x)
    loss = criterion(output, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    total += get_acc(output, y)
""", "a helper's result built from `.data[0]` and `.shape[0]`: parts of values with no graph"),
        Valid("""
def forward_pass(model, x, y):
    scores = model(x)
    loss = F.cross_entropy(scores, y)
    correct = scores.argmax(dim=1) == y
    correct = correct.sum().item()
    return loss, correct


total = 0
for x, y in loader:
    loss, correct = forward_pass(model, x, y)
    total += correct
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
""", "the helper's last binding of what it returns, on its own block, is `.item()`: a number"),
        Valid("""
def meta_step(model, optimizer, tasks):
    task_losses = []
    for x, y in tasks:
        loss = loss_fn(model(x), y)
        task_losses.append(loss)
    optimizer.zero_grad()
    meta_loss = torch.stack(task_losses).mean()
    meta_loss.backward()
    optimizer.step()
""", "the list is backpropagated after the loop: its graphs are the outer loss, kept on purpose"),
        Valid("""
grad_norm = 0
for x, y in loader:
    x.requires_grad_(True)
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    g = torch.autograd.grad(loss_fn(model(x), y), x)[0]
    grad_norm += g.abs().sum()
""", "gradients taken without `create_graph=True` carry no graph"),
        Valid("""
def accuracy(out, y):
    _, predicted = torch.max(out.data, 1)
    return 100.0 * (predicted == y).sum() / out.size(0) + (out.argmax(1) == y).float().mean()


running = 0
for x, y in loader:
    out = model(x)
    loss = criterion(out, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    running += accuracy(out, y)
""", "a helper whose result is built from comparisons and `.data`: tensor methods of values with no graph make none"),
        Valid("""
class Net(nn.Module):
    def forward(self, x):
        return self.fc(x)

    def evaluation(self, out, y):
        return (out.argmax(1) == y).float().mean().item()


net = Net()
optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
running = 0
for x, y in loader:
    out = net(x)
    loss = criterion(out, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    running += net.evaluation(out, y)
""", "a method of the module's own class reached through its instance: its body is read, and returns a number"),
        Valid("""
from models import Model

model = Model()
optimizer = torch.optim.AdamW(model.parameters())
predictions = []
for batch in loader:
    pred, loss = model.training_step(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    predictions.append(pred)
""", "a method other than the forward of a model whose class the module cannot see: what it returns is unknown"),
        Valid("""
history = {}
for x, y in loader:
    history["loss"] = []
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    history["loss"].append(loss)
""", "the entry is a new list every iteration: only the latest graph is kept"),
        Valid("""
def scores_of(logits, labels):
    predicted = torch.max(logits, -1)[1].data
    scores = predicted == labels
    return scores


total_acc = 0
for x, y in loader:
    optimizer.zero_grad()
    loss, logits = model(x, y)
    acc = torch.sum(scores_of(logits, y).float()) / y.numel()
    loss.backward()
    optimizer.step()
    total_acc += acc
""", "the helper returns a comparison, a boolean tensor with no graph; `.float()` of it has none either"),
        Valid("""
def num_correct(y_pred, y):
    return (y_pred.argmax(dim=1) == y).sum().item()


correct = 0
for x, y in loader:
    optimizer.zero_grad()
    out = model(x)
    loss = loss_fn(out, y)
    loss.backward()
    optimizer.step()
    correct += num_correct(out, y)
""", "a helper of the module that returns `.item()`: a number, with no graph"),
        Valid("""
from utils.metrics import accuracy

total_acc = 0
for x, y in loader:
    optimizer.zero_grad()
    out = model(x)
    loss_fn(out, y).backward()
    optimizer.step()
    total_acc += accuracy(out, y)
""", "the result of a helper from another module is not known to carry a graph"),
        Valid("""
running = 0.0
for x, y in loader:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    running += loss.item()
""", ".item() keeps the number only"),
        Valid("""
for x, y in loader:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    log["loss"] = loss
""", "the same key is overwritten: only the latest graph is kept"),
        Valid("""
outputs = []
for x, y in loader:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        outputs.append(model(x))
""", "stored under no_grad"),
        Valid("""
for step, (x, y) in enumerate(loader):
    if step % k == 0:
        total = 0
    total += loss_fn(model(x), y)
    if (step + 1) % k == 0:
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
""", "reset inside the loop, then backpropagated: the graph is meant to live for the window"),
        Valid("""
for step, (x, y) in enumerate(loader):
    if step % k == 0:
        total = 0
    total = total + loss_fn(model(x), y)
    if (step + 1) % k == 0:
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
""", "rebuilt from itself, but reset inside the loop and backpropagated: a window's graph, meant to live"),
        Valid("""
losses = []
for step, (x, y) in enumerate(loader):
    losses.append(loss_fn(model(x), y))
    if (step + 1) % k == 0:
        optimizer.zero_grad()
        torch.stack(losses).mean().backward()
        optimizer.step()
        losses.clear()
""", "the kept losses are backpropagated together, then emptied in place: their graphs are meant to live for the window"),
        Valid("""
from utils import Averager

loss_avg = Averager()
for x, y in loader:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    loss_avg.add(loss)
""", "an object of a class the module cannot see: whether `add` keeps the tensor or reads `.data` is unknown"),
        Valid("""
def train_step(model, optimizer, batches, k):
    total = torch.zeros([])
    optimizer.zero_grad()
    for x, y in batches:
        loss = loss_fn(model(x), y)
        (loss / k).backward()
        total += loss
    optimizer.step()
    return total.item() / k
""", "the loop is one window, stepped after it, and the sum is made anew by each call: it lives for one step"),
        Valid("""
predictions = []
correct = []
for x, y in loader:
    optimizer.zero_grad()
    out = model(x)
    loss = loss_fn(out, y)
    loss.backward()
    optimizer.step()
    _, predicted = out.max(1)
    predictions.append(predicted)
    correct.append(out.max(dim=1)[1])
""", "the indices of a maximum are integers: no graph"),
        Valid("""
def accuracy(out, y):
    correct = out.argmax(-1).eq(y).sum()
    return np.float64(correct) / (y.size(0) * y.size(1))


def timed_loss(out, y):
    start = time.time()
    loss = loss_fn(out, y)
    return loss, time.time() - start


accuracies = []
timings = []
for x, y in loader:
    optimizer.zero_grad()
    out = model(x)
    loss, elapsed = timed_loss(out, y)
    loss.backward()
    optimizer.step()
    accuracies.append(accuracy(out, y))
    timings.append(elapsed)
""", "helpers of the module returning numbers: a float over sizes, a time difference at its place in a tuple"),
        Valid("""
from torchmetrics import Accuracy

metric = Accuracy(task="multiclass", num_classes=10).to(device)
train_acc = 0
for x, y in loader:
    optimizer.zero_grad()
    out = model(x)
    loss = loss_fn(out, y)
    loss.backward()
    optimizer.step()
    train_acc += metric(out, y)
""", "an object of an imported class that no optimizer trains: what its call returns is not visible"),
        Valid("""
class Trainer:
    def dice(self, pred, gt):
        inter = ((pred > 0.5) & (gt > 0)).sum()
        return (2 * inter / ((pred > 0.5).sum() + (gt > 0).sum())).item()

    def train_epoch(self, loader):
        epoch_dice = 0
        for x, y in loader:
            self.optimizer.zero_grad()
            pred = self.model(x)
            loss = self.loss_fn(pred, y)
            epoch_dice += self.dice(pred, y)
            loss.backward()
            self.optimizer.step()
""", "a method of the class that returns `.item()`: a number"),
        Valid("""
from utils import *


def train_one_epoch(loader, model, criterion, optimizer):
    iou_sum, dice_sum = 0.0, 0.0
    for images, masks in loader:
        preds = model(images)
        out_loss = criterion(preds, masks)
        optimizer.zero_grad()
        out_loss.backward()
        optimizer.step()
        iou_sum += iou_on_batch(masks, preds)
        dice_sum += criterion._show_dice(preds, masks)
    return iou_sum, dice_sum
""", "a name a star import brings, and a method of a callable handed in: what they return is not visible"),
        Valid("""
class CachedLoss(torch.nn.Module):
    def calculate_loss(self, anchors, candidates, with_backward=False):
        losses = []
        for b in range(0, len(anchors), self.mini_batch_size):
            scores = self.similarity_fct(anchors[b:b + self.mini_batch_size], candidates)
            loss_mb = self.cross_entropy_loss(scores, self.labels[b:b + self.mini_batch_size])
            if with_backward:
                loss_mb.backward()
                loss_mb = loss_mb.detach()
            losses.append(loss_mb)
        return sum(losses)
""", "detached where the loop backpropagates; where it does not, the loop trains nothing and its caller "
            "backpropagates what it returns"),
        Valid("""
for step, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    if step % log_every == 0:
        metrics = {"step": step}
        for i in range(len(parts)):
            metrics[f"part_{i}"] = parts[i]
        message = "step %d " % step
        message += "loss: %.4f" % loss
        print(message, metrics)
""", "made anew right before each store, in its block or one around it: what it keeps is one iteration's; "
            "and `%` formatting makes a string"),
        Valid("""
def _force_cacheable(data):
    output = dict()
    for key, value in data.items():
        output[key] = value.detach().cpu() if isinstance(value, torch.Tensor) else value
    return output


def train(task, loader, optimizer, log_step):
    batch_results = []
    for step, batch in enumerate(loader):
        loss, cacheable = task("train", **batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        batch_results.append(_force_cacheable(cacheable))
        if step % log_step == 0:
            task.log(batch_results)
            batch_results = []
""", "a function of the module that returns a container it fills: what its items hold is not read"),
        Valid("""
import torch as th


def train(model, params, batches, optimiser, log, metrics, log_every):
    summ = []
    for i, batch in enumerate(batches):
        out = log_softmax(model(batch))
        loss = (out * batch["mask"]).sum()
        loss.backward()
        if i % log_every == 0:
            out = out.data.cpu().numpy()
            summ.append(out)
        grad_norm = th.nn.utils.clip_grad_norm_(params, 10.0)
        log["grad_norm"].append(grad_norm)
        summ.append(metrics.acc(out, batch["y"]))
        optimiser.step()
        optimiser.zero_grad()
""", "rebound to a NumPy array in the store's own block; the norm clipping returns has no graph; a method "
            "no tensor has, of an object handed in, returns what the module cannot see"),
        Valid("""
window_sum = 0.0
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    window_sum += loss
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        opt.step()
        opt.zero_grad()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        print(float(window_sum))
        window_sum = 0.0
""", "reset under the step's own test, in an `if` of its own: a sum over one window"),
        Valid("""
losses = []
for step, (x, y) in enumerate(loader):
    per_example = F.cross_entropy(model(x), y, reduction="none")
    (per_example.mean() / k).backward()
    losses.append(per_example)
    if (step + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
        log(torch.cat(losses).mean())
        losses.clear()
""", "the list is emptied in place with every step: it keeps at most one window's graphs"),
        Valid("""
info = defaultdict(list)
for x in loader:
    with accelerator.accumulate(model):
        loss = model(x).pow(2).mean()
        info["loss"].append(loss)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    if accelerator.sync_gradients:
        accelerator.log({k: torch.stack(v).mean() for k, v in info.items()})
        info = defaultdict(list)
""", "made anew on accelerate's own boundary (`sync_gradients`), where `accumulate()` really steps: one window's graphs at most"),
        Valid("""
from helpers import create_loaders


def train_epoch(model, loader, optimizer, criterion, mixup):
    correct = 0
    for x, y in loader:
        x, ya, yb, lam = mixup(x, y)
        optimizer.zero_grad()
        out = model(x)
        criterion(out, ya).backward()
        optimizer.step()
        pred = out.argmax(1)
        correct += lam * (pred == ya).sum().item() + (1 - lam) * (pred == yb).sum().item()
    return correct


def main(model, optimizer, criterion):
    loader, mixup = create_loaders()
    train_epoch(model, loader, optimizer, criterion, mixup)
""", "`mixup` is a parameter whose every call site hands what an unseen call made: `lam` is not known to be a tensor"),
        Valid("""
for x, z in loader:
    fake = net_g(z)
    err_d_total = 0
    for i in range(len(nets_d)):
        nets_d[i].zero_grad()
        err_d = nets_d[i](x).mean() - nets_d[i](fake.detach()).mean()
        err_d.backward()
        opts_d[i].step()
        err_d_total += err_d
    log(err_d_total)
""", "the loop runs over the discriminators, each stepping its own optimizer, and the sum is made anew before each round: it holds one graph per model"),
        Valid("""
accelerator = Accelerator(gradient_accumulation_steps=k)
for update in range(num_updates):
    losses = torch.zeros((k,))
    for i in range(k):
        with accelerator.accumulate(model):
            loss = ((model(next(data)) - target) ** 2).mean()
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad()
            losses[i] = loss
    log(losses.mean().item())
""", "the inner loop is one accumulation window of accelerate's count, and the buffer is made anew before it"),
        Valid("""
accelerator = Accelerator(gradient_accumulation_steps=4)
for update in range(num_updates):
    losses = torch.zeros((4,))
    for start in range(0, 64, 16):
        with accelerator.accumulate(model):
            loss = ((model(data[start:start + 16]) - target) ** 2).mean()
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad()
            losses[start // 16] = loss
    log(losses.mean().item())
""", "the inner loop runs four micro-batches, as many as accelerate's count: one window, with the buffer made anew before it"),
        Valid("""
def calc(logits, labels, loss_func):
    if logits is None:
        loss = 0.
        n_corrects = 0
    else:
        loss = loss_func(logits, labels)
        n_corrects = (logits.argmax(1) == labels).sum().item()
    return loss, n_corrects


def train(model, loader, optimizer, loss_func):
    n_corrects_acm = 0
    for x, y in loader:
        optimizer.zero_grad()
        loss, n_corrects = calc(model(x), y, loss_func)
        loss.backward()
        optimizer.step()
        n_corrects_acm += n_corrects
    return n_corrects_acm
""", "the helper's second value is a number in every arm that binds it (`0`, `.item()`)"),
        Valid("""
def train_epoch(model, loader, optimizer):
    meter = AverageMeter()
    history = []
    for x, y in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        meter.update(loss)
        history.append(meter)
    return history
""", "`meter` is not visibly a dictionary: what its `update` keeps is not known"),
        Valid("""
def fit(net, loader, opt):
    total_acc = 0.0
    for x in loader:
        out, *extra = net(x)
        acc = extra[0] if extra else -1
        total_acc += acc
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    return total_acc
""", "`acc` is the number -1 on one path: what the other holds is not visible, and `.detach()` would fail on "
            "the number"),
        Valid("""
def train(gen, disc, loader, opt_g, fixed_z):
    snapshots = []
    for i, x in enumerate(loader):
        preview = gen(torch.randn(x.shape[0], 16))
        g_loss = F.softplus(-disc(preview)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        if i % 100 == 0:
            with torch.no_grad():
                preview = gen(fixed_z)
            snapshots.append(preview)
    return snapshots
""", "the name is bound again under `no_grad` in a `with` block that runs whenever the test's body does: what is "
            "stored there carries no graph"),
        Valid("""
def exact_match_rate(logits, y):
    tags = torch.round(torch.sigmoid(logits))
    rate = 0.0
    for r in range(y.shape[0]):
        if bool((tags[r] == y[r]).all()):
            rate += 1
    rate = rate / y.shape[0]
    return rate


def fit(net, data, opt):
    hit_sum = 0
    for x, y in data:
        opt.zero_grad()
        out = net(x)
        F.binary_cross_entropy_with_logits(out, y).backward()
        opt.step()
        hit_sum += exact_match_rate(out, y)
    return hit_sum
""", "the helper returns a number it builds from literals and sizes, rebinding it from itself (`rate = rate / n`): "
            "no graph"),
        Valid("""
class Ranker(nn.Module):
    def forward(self, u, i):
        return self.emb(u), self.emb(i)

    def pair_loss(self, ue, ie):
        main = -torch.mean(F.logsigmoid((ue * ie).sum(1)))
        return main, main.item()


model = Ranker()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
main_sum = 0.0
for u, i in pairs:
    ue, ie = model(u, i)
    batch_loss, batch_main = model.pair_loss(ue, ie)
    opt.zero_grad()
    batch_loss.backward()
    opt.step()
    main_sum += batch_main
""", "the method returns the number `.item()` gives beside the loss"),
        Valid("""
class Learner:
    def accuracy(self, logits, labels):
        if len(labels) == 0:
            return 0.0
        with torch.no_grad():
            return macro_recall(logits.argmax(1), labels)

    def observe(self, batches):
        record = []
        for x, y in batches:
            logits = self.net(x)
            loss = F.cross_entropy(logits, y)
            record.append(self.accuracy(logits, y))
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        return record
""", "the method returns a number or what a function the module cannot see computes: not visibly a graph"),
        Valid("""
def spread(counts):
    mean = counts.float().mean()
    return [(counts.min() / mean).item(), (counts.max() / mean).item()]


stats = []
for (x,) in loader:
    opt.zero_grad()
    out = net(x)
    out.pow(2).mean().backward()
    opt.step()
    stats.append(spread(out.sum(dim=0)))
""", "the helper returns a list of numbers (`.item()`)"),
    ]
    INVALID = [
        Invalid("""
from model import NGCF

model = NGCF()
optimizer = torch.optim.Adam(model.parameters())
epoch_loss = 0.0
for batch in loader:
    batch_loss, mf_loss, emb_loss = model.create_bpr_loss(*batch)
    optimizer.zero_grad()
    batch_loss.backward()
    optimizer.step()
    epoch_loss += batch_loss
""", fixed="""
from model import NGCF

model = NGCF()
optimizer = torch.optim.Adam(model.parameters())
epoch_loss = 0.0
for batch in loader:
    batch_loss, mf_loss, emb_loss = model.create_bpr_loss(*batch)
    optimizer.zero_grad()
    batch_loss.backward()
    optimizer.step()
    epoch_loss += batch_loss.detach()
""", why="a value the loop backpropagates carries a graph, whatever unseen method made it"),
        Invalid("""
def ssd_loss(cls_preds, box_preds, cls_true, box_true):
    cls = F.cross_entropy(cls_preds, cls_true)
    box = F.l1_loss(box_preds, box_true)
    return cls + box, box, cls


box_total = 0.0
for x, cls_true, box_true in loader:
    cls_preds, box_preds = net(x)
    loss, box, cls = ssd_loss(cls_preds, box_preds, cls_true, box_true)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    box_total += box
""", fixed="""
def ssd_loss(cls_preds, box_preds, cls_true, box_true):
    cls = F.cross_entropy(cls_preds, cls_true)
    box = F.l1_loss(box_preds, box_true)
    return cls + box, box, cls


box_total = 0.0
for x, cls_true, box_true in loader:
    cls_preds, box_preds = net(x)
    loss, box, cls = ssd_loss(cls_preds, box_preds, cls_true, box_true)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    box_total += box.detach()
""", why="the parts a function of the module returns beside the loss are read from it: they carry its graph"),
        Invalid("""
history = {"loss": [], "acc": []}
for x, y in loader:
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    history["loss"].append(loss)
""", fixed="""
history = {"loss": [], "acc": []}
for x, y in loader:
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    history["loss"].append(loss.detach())
""", why="a dict of lists: its entry is a list that outlives the iteration"),
        Invalid("""
losses, outputs = [], []
for x, y in loader:
    out = model(x)
    loss = loss_fn(out, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss)
""", fixed="""
losses, outputs = [], []
for x, y in loader:
    out = model(x)
    loss = loss_fn(out, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.detach())
""", why="lists made by unpacking a tuple of literals are lists too"),
        Invalid("""
input_size = 64
total_loss = 0
for i in range(steps):
    optimizer.zero_grad()
    x = sample(input_size)
    loss = (model(x) - x.median()).norm(2) / input_size
    loss.backward()
    optimizer.step()
    total_loss += loss
""", fixed="""
input_size = 64
total_loss = 0
for i in range(steps):
    optimizer.zero_grad()
    x = sample(input_size)
    loss = (model(x) - x.median()).norm(2) / input_size
    loss.backward()
    optimizer.step()
    total_loss += loss.item()
""", why="a norm of everything over a number is one number: `.item()`"),
        Invalid("""
history = {"loss": [], "lr": []}
for x, y in loader:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    history["loss"].append(loss)
""", fixed="""
history = {"loss": [], "lr": []}
for x, y in loader:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    history["loss"].append(loss.detach())
""", why="a list kept under a key of a dict that outlives the loop"),
        Invalid("""
class Trainer:
    def __init__(self, model):
        self.model = model
        self.losses = []

    def train(self, loader, optimizer):
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(self.model(x), y)
            loss.backward()
            optimizer.step()
            self.losses.append(loss)
""", fixed="""
class Trainer:
    def __init__(self, model):
        self.model = model
        self.losses = []

    def train(self, loader, optimizer):
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(self.model(x), y)
            loss.backward()
            optimizer.step()
            self.losses.append(loss.detach())
""", why="an attribute that every method binding it makes a list"),
        Invalid("""
total_loss = 0.0
for x, y in loader:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    total_loss += loss
""", fixed="""
total_loss = 0.0
for x, y in loader:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    total_loss += loss.item()
"""),
        Invalid("""
epoch_loss = 0
seen = []
for x, y in loader:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    epoch_loss = epoch_loss + loss
    seen = seen + [loss]
""", fixed="""
epoch_loss = 0
seen = []
for x, y in loader:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    epoch_loss = epoch_loss + loss.item()
    seen = seen + [loss.detach()]
""", why="a sum or a list rebuilt from itself every iteration keeps every graph, as `+=` does"),
        Invalid("""
predictions = []
for x, y in loader:
    optimizer.zero_grad()
    out = model(x)
    loss = loss_fn(out, y)
    loss.backward()
    optimizer.step()
    predictions.append(out)
""", fixed="""
predictions = []
for x, y in loader:
    optimizer.zero_grad()
    out = model(x)
    loss = loss_fn(out, y)
    loss.backward()
    optimizer.step()
    predictions.append(out.detach())
"""),
        Invalid("""
for step, (x, y) in enumerate(loader):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    history[step] = loss
""", fixed="""
for step, (x, y) in enumerate(loader):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    history[step] = loss.detach()
""", why="a key that changes every iteration"),
        Invalid("""
feature_sum = 0
for x, y in loader:
    optimizer.zero_grad()
    out = model(x)
    loss = loss_fn(out, y)
    loss.backward()
    optimizer.step()
    feature_sum += out.mean(0)
""", fixed="""
feature_sum = 0
for x, y in loader:
    optimizer.zero_grad()
    out = model(x)
    loss = loss_fn(out, y)
    loss.backward()
    optimizer.step()
    feature_sum += out.mean(0).detach()
""", why="a mean over one dimension is not one number: detached, not `.item()`"),
        Invalid("""
for epoch in range(10):
    stats = {"d": 0.0, "g": 0.0}
    for real in loader:
        d_loss = D(real).mean()
        optD.zero_grad()
        d_loss.backward()
        optD.step()
        stats["d"] += d_loss
""", fixed="""
for epoch in range(10):
    stats = {"d": 0.0, "g": 0.0}
    for real in loader:
        d_loss = D(real).mean()
        optD.zero_grad()
        d_loss.backward()
        optD.step()
        stats["d"] += d_loss.detach()
""", why="a running sum under one key of a dict of numbers"),
        Invalid("""
hist = []
for i, real in enumerate(loader):
    d_loss = D(real).mean()
    optD.zero_grad()
    d_loss.backward()
    optD.step()
    hist.append((i, d_loss))
""", fixed="""
hist = []
for i, real in enumerate(loader):
    d_loss = D(real).mean()
    optD.zero_grad()
    d_loss.backward()
    optD.step()
    hist.append((i, d_loss.detach()))
""", why="the loss kept inside a tuple"),
        Invalid("""
def train(model, loader, optimizer, log_step):
    train_loss = 0
    for step, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        train_loss += loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % log_step == 0:
            print(train_loss / log_step)
            train_loss = 0
""", fixed="""
def train(model, loader, optimizer, log_step):
    train_loss = 0
    for step, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        train_loss += loss.item()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % log_step == 0:
            print(train_loss / log_step)
            train_loss = 0
""", why="reset only at the log interval: it keeps every graph since the last log"),
        Invalid("""
def train(loader, model, opt):
    total = 0
    for x, y in loader:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        total += loss
    print(total.item() / len(loader))
""", fixed="""
def train(loader, model, opt):
    total = 0
    for x, y in loader:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        total += loss.detach()
    print(total.item() / len(loader))
""", why="the sum is read as a tensor afterwards (`total.item()`): it stays one, detached"),
        Invalid("""
info = defaultdict(list)
for step, x in enumerate(loader):
    with accelerator.accumulate(model):
        loss = model(x).pow(2).mean()
        info["loss"].append(loss)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    if step % 100 == 0:
        accelerator.log({k: torch.stack(v).mean() for k, v in info.items()})
        info = defaultdict(list)
""", fixed="""
info = defaultdict(list)
for step, x in enumerate(loader):
    with accelerator.accumulate(model):
        loss = model(x).pow(2).mean()
        info["loss"].append(loss.detach())
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    if step % 100 == 0:
        accelerator.log({k: torch.stack(v).mean() for k, v in info.items()})
        info = defaultdict(list)
""", why="made anew only every 100 micro-batches, not on the boundary where `accumulate()` steps: up to 100 graphs stay alive"),
        Invalid("""
history = []
for x, z in loader:
    fake = net_g(z)
    for i in range(len(nets_d)):
        nets_d[i].zero_grad()
        err_d = nets_d[i](x).mean() - nets_d[i](fake.detach()).mean()
        err_d.backward()
        opts_d[i].step()
        history.append(err_d)
""", fixed="""
history = []
for x, z in loader:
    fake = net_g(z)
    for i in range(len(nets_d)):
        nets_d[i].zero_grad()
        err_d = nets_d[i](x).mean() - nets_d[i](fake.detach()).mean()
        err_d.backward()
        opts_d[i].step()
        history.append(err_d.detach())
""", why="a loop over the discriminators, but the list is never made anew: it grows with the data"),
        Invalid("""
def train(model, loader, optimizer):
    for epoch in range(2):
        running = 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.mse_loss(model(x), y)
            running += loss
            loss.backward()
            optimizer.step()
        avg = running / len(loader)
        print(avg.item())
""", fixed="""
def train(model, loader, optimizer):
    for epoch in range(2):
        running = 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.mse_loss(model(x), y)
            running += loss.detach()
            loss.backward()
            optimizer.step()
        avg = running / len(loader)
        print(avg.item())
""", why="a value computed from the sum is read as a tensor (`avg.item()`): the sum stays a tensor, detached, rather than a number"),
        Invalid("""
outs = []
for x, y in loader:
    out = model(x)
    loss = F.mse_loss(out, y)
    rec = {"out": out, "loss": loss.item()}
    loss.backward()
    opt.step()
    opt.zero_grad()
    outs.append(rec)
""", fixed=None, applicability=None,
            why="the dictionary appended holds the model's output: every iteration's graph is kept (no fix: a dictionary has no `.detach()`)"),
        Invalid("""
def train_epoch(model, loader, optimizer):
    history = []
    for x, y in loader:
        optimizer.zero_grad()
        out = model(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
        optimizer.step()
        record = {}
        record.update({"pred": out, "target": y})
        history.append(record)
    return history
""", fixed=None, applicability=None,
            why="the dictionary's own `update` puts the model's output into it, and the dictionary is kept: every "
                "iteration's graph stays (no fix: a dictionary has no `.detach()`)"),
        Invalid("""
def fit(net, batches, objective, opt):
    running = 0.0
    for inputs, labels in batches:
        loss = objective(net(inputs), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running += len(inputs) * loss
    return running
""", fixed="""
def fit(net, batches, objective, opt):
    running = 0.0
    for inputs, labels in batches:
        loss = objective(net(inputs), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running += (len(inputs) * loss).detach()
    return running
""", why="arithmetic on the loss the loop backpropagates keeps its graph, whatever made the loss"),
        Invalid("""
class Ranker(nn.Module):
    def forward(self, u, i):
        return self.emb(u), self.emb(i)

    def pair_loss(self, ue, ie):
        main = -torch.mean(F.logsigmoid((ue * ie).sum(1)))
        reg = 1e-4 * (ue.norm() ** 2 + ie.norm() ** 2)
        return main + reg, main, reg


model = Ranker()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
main_sum = 0.0
for u, i in pairs:
    ue, ie = model(u, i)
    batch_loss, batch_main, batch_reg = model.pair_loss(ue, ie)
    opt.zero_grad()
    batch_loss.backward()
    opt.step()
    main_sum += batch_main
""", fixed="""
class Ranker(nn.Module):
    def forward(self, u, i):
        return self.emb(u), self.emb(i)

    def pair_loss(self, ue, ie):
        main = -torch.mean(F.logsigmoid((ue * ie).sum(1)))
        reg = 1e-4 * (ue.norm() ** 2 + ie.norm() ** 2)
        return main + reg, main, reg


model = Ranker()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
main_sum = 0.0
for u, i in pairs:
    ue, ie = model(u, i)
    batch_loss, batch_main, batch_reg = model.pair_loss(ue, ie)
    opt.zero_grad()
    batch_loss.backward()
    opt.step()
    main_sum += batch_main.detach()
""", why="a method of a module class this module defines is read as its functions are: the part beside the "
            "backpropagated loss is a tensor computed from the model's outputs"),
        Invalid("""
class Runner:
    def __init__(self, loader):
        self.net = nn.Linear(4, 2)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3)
        self.loader = loader

    def crit(self, out, tgt):
        per_col = torch.sqrt(torch.mean((tgt - out) ** 2, dim=0))
        return per_col.mean(), per_col[0]

    def epoch(self):
        first_sum = 0.0
        for x, y in self.loader:
            loss, first = self.crit(self.net(x), y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            first_sum += first
        return first_sum / len(self.loader)
""", fixed="""
class Runner:
    def __init__(self, loader):
        self.net = nn.Linear(4, 2)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3)
        self.loader = loader

    def crit(self, out, tgt):
        per_col = torch.sqrt(torch.mean((tgt - out) ** 2, dim=0))
        return per_col.mean(), per_col[0]

    def epoch(self):
        first_sum = 0.0
        for x, y in self.loader:
            loss, first = self.crit(self.net(x), y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            first_sum += first.detach()
        return first_sum / len(self.loader)
""", why="`self.net` is a module the class binds and `self.crit` a method it defines: both are read, and the part "
            "the method returns beside the loss is computed from the forward's output"),
        Invalid("""
class Trainer:
    def __init__(self, n):
        self.discriminators = nn.ModuleList([nn.Linear(4, 1) for _ in range(n)])
        self.gen = nn.Linear(4, 4)
        self.opt = torch.optim.Adam(self.gen.parameters())
        self.n = n

    def epoch(self, loader):
        history = []
        for z in loader:
            fake = self.gen(z)
            loss = 0
            for i in range(self.n):
                local = self.discriminators[i](fake).mean()
                history.append(local)
                loss = loss + local
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        return history
""", fixed="""
class Trainer:
    def __init__(self, n):
        self.discriminators = nn.ModuleList([nn.Linear(4, 1) for _ in range(n)])
        self.gen = nn.Linear(4, 4)
        self.opt = torch.optim.Adam(self.gen.parameters())
        self.n = n

    def epoch(self, loader):
        history = []
        for z in loader:
            fake = self.gen(z)
            loss = 0
            for i in range(self.n):
                local = self.discriminators[i](fake).mean()
                history.append(local.detach())
                loss = loss + local
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        return history
""", why="a module picked from a `ModuleList` by index is a forward: what it returns carries a graph"),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        graph = loop.graph
        if graph is None:
            return
        backpropagated = backpropagated_names(loop, graph)
        # The backward's own losses carry a graph whatever made them (`loss.backward()`)
        losses = {}
        for event in loop.events:
            if event.kind is EventKind.BACKWARD and isinstance(event.loss, cst.Name):
                losses.setdefault(event.loss.value, []).append(event.position)
        # A reset bounds a running sum where it runs at least once per window. Elsewhere (`if step %
        # log_every == 0: total = 0`) it still keeps every graph since the last one.
        block_of = {id(record.statement): record.block for record in loop.body}
        bounding = set(loop.window_blocks)
        for record in loop.body:
            if record.without_grad or record.in_inner_loop:
                continue
            for small in getattr(record.statement, "body", ()):
                found = _stored(small, record, graph, loop.function, losses, _resets_bounding(loop, bounding, record))
                if found is None:
                    continue
                node, container, value = found
                if container in backpropagated or _root(container) in backpropagated:
                    continue  # `losses.append(loss)` ... `torch.stack(losses).mean().backward()`: kept for a backward
                if _one_window(loop, model.facts, container) or _root(container) in loop.remade_each_pass:
                    continue  # made anew for each window (or each round over the models): bounded by it
                if _beside_the_loss(graph, value, record.position, backpropagated):
                    continue
                if _detached_with_the_backward(loop, graph, value, record.position, block_of):
                    continue
                item = (isinstance(small, (cst.AugAssign, cst.Assign)) and _starts_at_zero(model.facts, loop, container)
                        and _scalar(graph, value, record.position) and _read_as_number_only(model, loop, container))
                replacement = cst.parse_expression(f"{atom(value)}.{'item' if item else 'detach'}()")
                fix = Fix(Applicability.SAFE, f"Store `{code_of(replacement)}`", (Replace(value, replacement),))
                if _container_bound(graph, value, record.position) is not None:
                    fix = None  # a dictionary or list of values: no `.detach()` of its own
                yield self.finding(
                    f"`{code_of(value)}` carries its autograd graph into `{container}`, which outlives the iteration: "
                    "every iteration's graph stays in memory",
                    node, fix)


def _detached_with_the_backward(loop: TrainingLoop, graph: GraphFlow, value: cst.BaseExpression,
                                position: float, block_of: dict[int, object]) -> bool:
    """`if with_backward: loss.backward(); loss = loss.detach()` before `losses.append(loss)`:
    wherever the loop backpropagates the value is detached first, and where it does not, the
    loop trains nothing (the kept graphs are what its caller backpropagates). `block_of`: each
    statement's block, by id."""
    if not isinstance(value, cst.Name):
        return False
    blocks = {id(block_of.get(id(e.statement))) for e in loop.events if e.kind is EventKind.BACKWARD}
    if len(blocks) != 1:
        return False
    block = blocks.pop()
    return any(id(block_of.get(id(d.statement.statement))) == block and not d.unpacked and d.augmented is None
               and _detaches(d.value) for d in graph.definitions(value.value, position))


def _detaches(value: cst.BaseExpression) -> bool:
    """`loss.detach()`, `loss.item()`, `float(loss)`: visibly a value without a graph."""
    if not isinstance(value, cst.Call):
        return False
    if isinstance(value.func, cst.Attribute):
        return value.func.attr.value in {"detach", "item", "tolist", "numpy"}
    return isinstance(value.func, cst.Name) and value.func.value in {"float", "int"}


def _number_on_one_path(value: cst.BaseExpression) -> bool:
    """`x.item() if c else x`, `extra[0] if extra else -1`: a plain number (or None) on one arm,
    where neither `.detach()` nor the finding can rest on what the other arm holds."""
    if type(value) is not cst.IfExp:
        return False
    return any(_detaches(arm) or type(arm) in (cst.Integer, cst.Float) or (
        type(arm) is cst.UnaryOperation and type(arm.expression) in (cst.Integer, cst.Float))
        or (type(arm) is cst.Name and arm.value == "None") for arm in (value.body, value.orelse))


def _carries(graph: GraphFlow, value: cst.BaseExpression, position: float, losses: dict[str, list[int]],
             record: LoopStatement | None = None) -> bool:
    """`value` visibly carries a graph, or is what a backward of the loop propagates (bound the
    same between the two: `loss = loss.item()` after the backward is a number)."""
    if _number_on_one_path(value):
        return False  # `x.item() if c else x`: a number on one path; what the other holds there is not visible
    if isinstance(value, cst.Name) and any(_number_on_one_path(d.value) for d in graph.definitions(value.value, position)):
        return False  # `acc = extra[0] if extra else -1`, then `total += acc`: the same, through a name
    if isinstance(value, cst.Name) and record is not None:
        # `if i % log == 0: out = out.data.cpu().numpy(); summ.append(out)`: the store's own block
        # rebinds the name first, whatever the loop body bound it to before
        own = [d for d in graph.all_definitions(value.value) if d.position < position and not d.unpacked
               and d.augmented is None and d.statement.block is record.block]
        if own and _detaches(own[-1].value):
            return False
    if graph.visibly_carries_graph(value, position):
        return True
    parts = _container_bound(graph, value, position)
    if parts is not None:  # `rec = {"out": out}` then `outs.append(rec)`: the dictionary holds the output's graph
        return any(_carries(graph, part, position, losses) for part in parts)
    if type(value) is cst.BinaryOperation and type(value.operator) in _GRAPH_KEEPING_OPERATORS:
        # `len(x) * loss`: arithmetic on a value with a graph has one
        return _carries(graph, value.left, position, losses) or _carries(graph, value.right, position, losses)
    if not isinstance(value, cst.Name):
        return False
    return any(not graph.reassigned_between(value.value, min(at, position), max(at, position))
               for at in losses.get(value.value, ()))


_GRAPH_KEEPING_OPERATORS = (cst.Add, cst.Subtract, cst.Multiply, cst.Divide)


def _container_bound(graph: GraphFlow, value: cst.BaseExpression, position: float) -> list[cst.BaseExpression] | None:
    """The values of the dictionary, list or tuple literal that `value`, a name, is bound to in this
    iteration (its one definition before `position`); None for anything else."""
    if type(value) is not cst.Name:
        return None
    found = graph.definitions(value.value, position)
    if len(found) != 1 or found[0].unpacked or found[0].augmented is not None:
        return None
    literal = found[0].value
    if type(literal) is cst.Dict:
        return [e.value for e in literal.elements if type(e) is cst.DictElement]
    if type(literal) in (cst.List, cst.Tuple):
        return [e.value for e in literal.elements if type(e) is cst.Element]
    return None


def _stored(small: cst.BaseSmallStatement, record: LoopStatement, graph: GraphFlow, scope: cst.FunctionDef | None,
            losses: dict[str, list[int]] | None = None, bounding=None):
    losses = losses or {}
    """(the storing node, the container's text, the stored value) when it keeps a graph across iterations."""
    position = record.position
    if isinstance(small, cst.AugAssign) and isinstance(small.operator, cst.AddAssign):
        container = dotted_name(small.target) or _number_entry(graph, small.target)
        if container and _outlives(graph, container, bounding) and _carries(graph, small.value, position, losses, record):
            return small, container, small.value
        return None
    if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
        call = small.value
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value in PUTTING_METHODS and call.args:
            named = dotted_name(func.value)
            container = named or _keyed(func.value, graph)
            value = call.args[-1].value
            root = container.split("[")[0] if container else ""
            visible = graph.facts.holds_container(root, graph.loop_node, scope) if named else \
                graph.facts.holds_containers(root, graph.loop_node, scope)  # `history["loss"].append(x)`
            if container and _outlives(graph, container, bounding) and visible:
                if isinstance(value, (cst.List, cst.Tuple, cst.Dict)):
                    # `append((step, loss))`, `append({"d": d_loss})`: the one part that keeps a graph
                    if func.attr.value == "extend":
                        return None  # several values; report the simple shapes only
                    parts = [e.value for e in value.elements if isinstance(e, (cst.Element, cst.DictElement))]
                    kept = [part for part in parts if _carries(graph, part, position, losses, record)]
                    return (call, container, kept[0]) if len(kept) == 1 else None
                if _carries(graph, value, position, losses, record):
                    return call, container, value
        return None
    if isinstance(small, cst.Assign) and len(small.targets) == 1:
        target = small.targets[0].target
        container = dotted_name(target) or _number_entry(graph, target)
        added = addend(container, small.value) if container else None
        if added is not None:  # `total = total + loss`, `losses = losses + [loss]`
            if isinstance(added, cst.List) and len(added.elements) == 1 and isinstance(added.elements[0], cst.Element):
                added = added.elements[0].value
            if _outlives(graph, container, bounding) and _carries(graph, added, position, losses, record):
                return small, container, added
            return None
        if isinstance(target, cst.Subscript) and len(target.slice) == 1:
            container = dotted_name(target.value)
            key = target.slice[0].slice
            if not container or not isinstance(key, cst.Index) or not _outlives(graph, container, bounding):
                return None
            if not graph.reads(key.value) & graph.varying:
                return None  # the same key every iteration
            if _carries(graph, small.value, position, losses, record):
                return small, container, small.value
    return None


def _scalar(graph: GraphFlow, value: cst.BaseExpression, before: int, depth: int = 0) -> bool:
    """`value` is visibly one number (so `.item()` reads it): a loss call, a `.mean()` or `.sum()`
    of everything, a name holding one, or one times a plain number or a size."""
    if depth > 8:
        return False
    if isinstance(value, cst.Name):
        found = graph.definitions(value.value, before)
        return len(found) == 1 and not found[0].unpacked and found[0].augmented is None and _scalar(
            graph, found[0].value, found[0].position, depth + 1)
    if isinstance(value, cst.Call):
        if isinstance(value.func, cst.Attribute) and value.func.attr.value in {"mean", "sum"}:
            return not value.args
        if isinstance(value.func, cst.Attribute) and value.func.attr.value == "norm":
            return len(value.args) <= 1 and all(arg.keyword is None for arg in value.args)  # `.norm(2)`: of everything
        return graph.is_loss_call(value) and keyword_argument(value, "reduction") is None
    if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, (cst.Multiply, cst.Divide)):
        for side, other in ((value.left, value.right), (value.right, value.left)):
            if _scalar(graph, side, before, depth + 1) and (
                    isinstance(other, (cst.Integer, cst.Float)) or _plain_number(graph, other)
                    or isinstance(other, cst.Call) and (call_name(other) or "").rsplit(".", 1)[-1] in {"size", "len", "numel"}):
                return True
    return False


def _beside_the_loss(graph: GraphFlow, value: cst.BaseExpression, before: float, backpropagated: set[str]) -> bool:
    """`metrics` of `loss, metrics = model(batch)`, or `output["log"]` beside `loss =
    output["loss"]`: another part of the result whose loss is backpropagated. What a model returns
    beside its loss (logs, metrics) is not visibly a graph (RULES.md, *values the module cannot see*)."""
    if isinstance(value, cst.Name):
        found = graph.definitions(value.value, before)  # type: ignore[arg-type]
        if not found or any(_made_here(graph, d.value) for d in found):
            return False  # a function of this module: what each part carries is read from it
        if all(d.index is not None for d in found):
            # every binding unpacks it beside a backpropagated name (`loss, n, log = criterion(...)`)
            return all(any(other.statement is d.statement and other.name != value.value
                           for name in backpropagated for other in graph.all_definitions(name)) for d in found)
        if len(found) != 1:
            return False
        value = found[0].value  # `log = output["log"]`
    key = _literal_key(value)
    if key is None:
        return False
    root = dotted_name(value.value)  # type: ignore[attr-defined]
    if root is not None and any(_made_here(graph, d.value) for d in graph.definitions(root, before)):
        return False
    return any(isinstance(d.value, cst.Subscript) and dotted_name(d.value.value) == root
               and _literal_key(d.value) not in (None, key)
               for name in backpropagated for d in graph.all_definitions(name))


def _made_here(graph: GraphFlow, value: cst.BaseExpression) -> bool:
    """`value` is a call of a function this module defines (`self.name(...)` included), of a method
    of a module class it defines, or of an object of a class it defines (`criterion =
    SSDLoss(...)`, then `criterion(...)`)."""
    name = call_name(value) if isinstance(value, cst.Call) else None
    if not name:
        return False
    if name.removeprefix("self.") in graph.facts.functions:
        return True
    owner, _, method = name.rpartition(".")
    if owner and graph.module_class_method(owner, method):
        return True  # `model.pair_loss(...)` with `model = Ranker()`, a module class this module defines
    bound = graph.facts.bindings.get(name, ())
    scope = graph.facts.tree.enclosing_function(graph.loop_node)
    bound = [b for b in bound if b.scope is scope] or [b for b in bound if b.scope is None]
    return bool(bound) and all(isinstance(b.value, cst.Call) and call_name(b.value) in graph.facts.classes
                               for b in bound)


def _literal_key(node: cst.BaseExpression) -> str | None:
    """`"loss"` of `output["loss"]`, as its code."""
    if not (isinstance(node, cst.Subscript) and len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index)):
        return None
    key = node.slice[0].slice.value
    return code_of(key) if isinstance(key, (cst.SimpleString, cst.Integer)) else None


def _keyed(node: cst.BaseExpression, graph: GraphFlow) -> str | None:
    """`history["loss"]`: an entry of a dict under a literal key, as text (its root is the dict).
    None when the loop assigns that entry anew (`history["loss"] = []`)."""
    if _literal_key(node) is None:
        return None
    root = dotted_name(node.value)  # type: ignore[attr-defined]
    if root is None:
        return None
    text = code_of(node)
    for assignment in graph.facts.tree.find(graph.loop_node, cst.Assign, cst.AugAssign, cst.AnnAssign):
        if any(code_of(target) == text for target in assignment_targets(assignment)):
            return None
    return text


def _number_entry(graph: GraphFlow, node: cst.BaseExpression) -> str | None:
    """`stats["d"]` of a dict the loop's scope makes holding numbers (`{"d": 0.0, "g": 0.0}`,
    `defaultdict(float)`), under the same literal key every iteration: a running sum."""
    if not isinstance(node, cst.Subscript) or len(node.slice) != 1 or not isinstance(node.slice[0].slice, cst.Index):
        return None
    key = node.slice[0].slice.value
    root = dotted_name(node.value)
    if root is None or "." in root or not isinstance(key, (cst.SimpleString, cst.Integer)):
        return None
    binding = graph.facts.latest_binding(root, graph.loop_node, graph.facts.tree.enclosing_function(graph.loop_node))
    if binding is None or binding.tuple_index is not None:
        return None
    value = binding.value
    if isinstance(value, cst.Dict):
        numbers = all(isinstance(e, cst.DictElement) and isinstance(e.value, (cst.Integer, cst.Float))
                      for e in value.elements) and bool(value.elements)
    elif isinstance(value, cst.DictComp):
        numbers = isinstance(value.value, (cst.Integer, cst.Float))
    elif isinstance(value, cst.Call):
        numbers = (call_name(value) or "").rpartition(".")[2] == "defaultdict" and len(value.args) == 1 and \
            code_of(value.args[0].value) in ("float", "int")
    else:
        numbers = False
    return f"{root}[{code_of(key)}]" if numbers else None


def _plain_number(graph: GraphFlow, node: cst.BaseExpression) -> bool:
    """A name only ever bound to a literal number (`input_size = 128`)."""
    if not isinstance(node, cst.Name):
        return False
    bound = graph.facts.bindings.get(node.value, [])
    return bool(bound) and all(b.tuple_index is None and isinstance(b.value, (cst.Integer, cst.Float)) for b in bound)


def _root(container: str) -> str:
    """The name a container hangs from: `history` for `history["loss"]` or `history.losses`, and
    `self.history` for `self.history.losses` (`self` reaches the model as well as the records)."""
    parts = container.split("[")[0].split(".")
    return ".".join(parts[:2]) if parts[0] == "self" and len(parts) > 1 else parts[0]


def _resets_bounding(loop: TrainingLoop, blocks: set[int], store: LoopStatement):
    """Whether a reset of a container bounds what `store` puts in it: a reset in a block that runs
    every iteration or every window (`blocks`), or one that runs right before the store, in its
    block or one around it (`metrics = {...}` then `metrics[k] = v`)."""
    tree = loop.graph.facts.tree if loop.graph is not None else None

    def bounds(reset: LoopStatement) -> bool:
        if id(reset.block) in blocks:
            return True
        if reset.position > store.position or tree is None:
            return False
        return reset.block is store.block or any(
            tree.contains(statement, store.statement) for statement in reset.block)
    return bounds


def _outlives(graph: GraphFlow, container: str, bounding=None) -> bool:
    """Never rebound in the loop body, or rebound only where `bounding` (of the reset's statement)
    says it does not bound the store: it lives across iterations."""
    root = _root(container)

    def kept(definition) -> bool:
        return definition.adds_to_itself or (bounding is not None and not bounding(definition.statement))

    return all(kept(d) for d in graph.all_definitions(container)) and (
        root == "self" or all(kept(d) for d in graph.all_definitions(root)))


def _one_window(loop: TrainingLoop, facts, container: str) -> bool:
    """The loop steps nothing itself (a step follows it, or the caller steps a closure that runs
    a fixed number of passes), so the whole loop is one accumulation window, and the container is
    made anew by the function around it before the loop (`total = torch.zeros([])` in a
    `train_step` that steps once per call): what it keeps lives for that window only (RULES.md
    GA303, a sum reset at every step)."""
    if loop.function is None or any(e.kind is EventKind.STEP for e in loop.events):
        return False
    if not loop.flush_after_loop and ("." in container or loop.iterable.literal_length is None):
        # With no step after it (a closure the caller steps), only a local the call drops, filled
        # by a loop of a known number of passes, is bounded: over a loader it is the whole data.
        return False
    binding = facts.latest_binding(_root(container), loop.node, loop.function)
    return binding is not None and binding.scope is loop.function


# Calls that take a Python number as well as a one-element tensor, and give what a number gives.
_NUMBER_CALLS = frozenset({"print", "float", "int", "round", "str", "format", "abs", "min", "max", "math.isfinite",
                           "math.isnan", "math.exp", "math.log", "np.exp", "numpy.exp"})


def _read_as_number_only(model, loop: TrainingLoop, container: str) -> bool:
    """Every read of the sum in its scope, and of names computed from it (`avg = total / n`),
    works the same on a Python number: arithmetic, comparisons, f-strings, `print`, `float`,
    `round`. Then `.item()` may replace the tensor; anything else (`total.item()`, `avg.item()`,
    `dist.all_reduce(total)`, `return total`, `losses.append(total)`) needs it to stay a tensor,
    detached."""
    tree = model.facts.tree
    scope = loop.function if loop.function is not None else model.module
    parents: dict[int, cst.CSTNode] = {}
    for node in tree.walk(scope):
        for child in tree.children(node):
            parents[id(child)] = node
    names, checked = [container], set()
    while names:
        name = names.pop()
        if name in checked:
            continue
        checked.add(name)
        for node in tree.find(scope, cst.Name):
            if node.value != name:
                continue
            parent, current = parents.get(id(node)), node
            # up through arithmetic: what the expression's value is used for is what counts
            while type(parent) in (cst.BinaryOperation, cst.UnaryOperation, cst.Comparison, cst.ComparisonTarget):
                parent, current = parents.get(id(parent)), parent
            if type(parent) is cst.Attribute and parent.value is current:
                return False  # `total.item()`, `total.data`: a tensor's attribute
            if type(parent) is cst.AssignTarget:
                continue  # `total = 0`: a write of the name
            if type(parent) is cst.FormattedStringExpression or (
                    type(parent) in (cst.If, cst.While, cst.IfExp) and parent.test is current):
                continue
            if type(parent) in (cst.AugAssign, cst.Assign, cst.AnnAssign):
                targets = [t.target for t in parent.targets] if type(parent) is cst.Assign else [parent.target]
                if any(target is current for target in targets):
                    continue  # a write of the name: `total = 0`, `total += ...`
                if all(type(target) is cst.Name for target in targets):
                    names.extend(target.value for target in targets)  # `avg = total / n`: read it too
                    continue
                return False
            if type(parent) is cst.Arg:
                call = parents.get(id(parent))
                if type(call) is cst.Call and (call_name(call) or "") in _NUMBER_CALLS:
                    continue
            return False
    return True


def _starts_at_zero(facts, loop: TrainingLoop, container: str) -> bool:
    binding = facts.latest_binding(container, loop.node, loop.function)
    if binding is None or binding.tuple_index is not None:
        return False
    value = binding.value
    return isinstance(value, (cst.Integer, cst.Float)) and float(value.value) == 0.0
