from __future__ import annotations

from typing import Iterator

import libcst as cst

from gacclint.fixes.edits import Replace
from gacclint.fixes.schedule import floor_counted
from gacclint.loops.model import Boundary, ConditionKind, EventKind, IterableKind, Scaling, TrainingLoop
from gacclint.loops.vocabulary import code_in_one_line, code_of
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import divides_evenly, read_after_the_backward

_FINITE = {IterableKind.LOADER, IterableKind.RANGE, IterableKind.LIST, IterableKind.SIZED}
_SAFE_TO_MEASURE = {IterableKind.LOADER, IterableKind.RANGE, IterableKind.LIST}



def _reads_count(loop: TrainingLoop, event, boundary: Boundary, model) -> bool:
    """The backward's loss reads the accumulation count, directly or through the names it is
    computed from (the loop's assignments, then the module's), a few steps deep."""
    graph = loop.graph
    if graph is None:
        return True  # nothing to read the loss's making from: assume the worst
    count = boundary.k_text
    pending, seen = [(event.loss, 0)], set()
    while pending:
        node, depth = pending.pop()
        for name in graph.reads(node):
            if name == count or name == count.split(".")[0] or name.split(".")[0] == count.split(".")[0] \
                    and "." not in count:
                return True  # the count, or the object holding it (`fwd_pass(model, batch, cfg)`)
            if name in seen or depth >= 4:
                continue
            seen.add(name)
            values = [d.value for d in graph.all_definitions(name)]
            binding = model.facts.latest_binding(name, loop.node, loop.function)
            if binding is not None:
                values.append(binding.value)
            pending.extend((value, depth + 1) for value in values)
    return False

class DroppedFinalWindow(Rule):
    """
    ## What it does
    Checks for accumulation boundaries with no end-of-data clause over a
    finite iterable, when nothing after the loop steps the remainder.

    ## Why is this bad?
    When the number of micro-batches is not a multiple of `k`, the last
    `len(loader) % k` micro-batches of every pass are never stepped: their
    gradients are lost at the end of training, or leak into the first window
    of the next epoch (which then holds more than `k` micro-batches).
    `drop_last=True` does not help: it drops the ragged last micro-batch,
    not the ragged last window.

    Streams (a `while` loop pulling with `next()`, generators,
    `itertools.count`, an `IterableDataset`) have no last window and are
    exempt, as are loops where `len(loader) % k == 0` follows from literals.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0:
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
    Adds `or (i + 1) == len(loader)` (spelled for the counter: `or i ==
    len(loader)` with `start=1`). Safe when the iterable is visibly a
    `DataLoader`, a name ending in `loader`, a list or a range; unsafe
    otherwise (an iterable-style dataset has no `len`), and unsafe for a
    loader the module asks about (`isinstance(loader.dataset,
    IterableDataset)`): it may be one. When the loss is
    divided by `k`, `gacclint fix` goes on to GA203's fix, so every window is
    weighted as in the large batch. The loop then takes one more optimizer
    step per pass: when a scheduler stepped in the loop is built in the same
    file with a length counted as `len(loader) // k` steps, the fix is
    unsafe and its message says to round that length up.
    """

    code = "GA202"
    name = "dropped-final-window"

    VALID = [
        Valid("""
stream = load_dataset("allenai/c4", "en", split="train", streaming=True)
loader = DataLoader(stream, batch_size=8)
for step, batch in enumerate(loader):
    loss = model(**batch).loss / k
    loss.backward()
    if (step + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "a streamed dataset has no length and no last micro-batch: nothing to add (and `len(loader)` would raise)"),
        Valid("""
corpus = load_dataset("allenai/c4", "en", split="train", streaming=True)
for step, batch in enumerate(corpus):
    loss = model(**batch).loss / k
    loss.backward()
    if (step + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "iterated directly, a streamed dataset has no length either"),
        Valid("""
class Stream(IterableDataset):
    def __iter__(self):
        yield from read_records()


def make_loaders():
    train_loader = DataLoader(Stream(), batch_size=8)
    return train_loader, DataLoader(Stream(), batch_size=8)


train_loader, eval_loader = make_loaders()
for step, batch in enumerate(train_loader, start=1):
    (model(batch).mean() / k).backward()
    if step % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "the loader a function of the module returns is built over an IterableDataset: a stream"),
        Valid("""
ACCUMULATION = 1
for i, (x, y) in enumerate(loader):
    loss_fn(model(x), y).backward()
    if (i + 1) % ACCUMULATION == 0:
        optimizer.step()
        optimizer.zero_grad()
""", 'an accumulation count of 1 (a module constant) is no accumulation'),
        Valid("""
def main(accumulate=4):
    loader = DataLoader(TensorDataset(torch.randn(128, 8), torch.randn(128, 2)), batch_size=8)
    for i, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / accumulate).backward()
        if (i + 1) % accumulate == 0:
            optimizer.step()
            optimizer.zero_grad()


main()
""", "16 micro-batches and a count of 4 that the only call leaves at its default: no partial window"),
        Valid("""
batches = iter(stream)
for step in range(max_steps):
    x, y = next(batches)
    (loss_fn(model(x), y) / k).backward()
    if (step + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "a script's count of steps pulling from a stream with `next()`, in no other loop: the whole run, not a pass"),
        Valid("""
def train_epoch(model, loader, optimizer, k):
    assert len(loader) % k == 0
    for i, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / k).backward()
        if (i + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()
""", "the length is asserted to be a multiple of k before the loop"),
        Valid("""
def main(model, optimizer, loader, k, max_steps):
    global_step = 0
    for step, batch in enumerate(loader):
        (model(batch) / k).backward()
        if (step + 1) % k == 0:
            global_step += 1
            optimizer.step()
            optimizer.zero_grad()
        if global_step >= max_steps:
            break
""", "one pass that ends on a budget of steps: at most the run's last micro-batches go unstepped"),
        Valid("""
for i in range(steps * k):
    (loss_fn(model(next(batches))) / k).backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "`steps * k` micro-batches: a whole number of windows"),
        Valid("""
class CFG:
    batch_size = 64
    accumulation = max(1, 32 // batch_size)


for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / CFG.accumulation).backward()
    if (i + 1) % CFG.accumulation == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "a class attribute computed from the class's literals is 1: no accumulation"),
        Valid("""
class CFG:
    accumulation = 1


def train(loader):
    for i, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / CFG.accumulation).backward()
        if (i + 1) % CFG.accumulation == 0:
            optimizer.step()
            optimizer.zero_grad()
""", "an accumulation count of 1 as a configuration class's attribute that nothing sets elsewhere"),
        Valid("""
def train():
    for i, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / accumulation).backward()
        if (i + 1) % accumulation == 0:
            optimizer.step()
            optimizer.zero_grad()


if __name__ == "__main__":
    accumulation = 1
    train()
""", "a module constant bound below the function is what the function reads when it runs"),
        Valid("""
step = start_step
for x, y in loader:
    (loss_fn(model(x), y) / k).backward()
    step += 1
    if step % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", 'a counter carried in from elsewhere: windows straddle passes'),
        Valid("""
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", "an end-of-data clause"),
        Valid("""
data = iter(loader)
step = 0
while step < max_steps:
    x, y = next(data)
    (loss_fn(model(x), y) / k).backward()
    step += 1
    if step % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "a stream: the micro-batch loop pulls with next()"),
        Valid("""
loader = DataLoader(TensorDataset(torch.randn(64, 3), torch.randn(64, 1)), batch_size=8)
k = 4
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "8 micro-batches, k = 4: provable from literals"),
        Valid("""
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
if len(loader) % k:
    optimizer.step()
    optimizer.zero_grad()
""", "a flush after the loop"),
        Valid("""
X = torch.randn(40, 3)
Y = torch.randn(40, 1)
loader = DataLoader(TensorDataset(X[:32], Y[:32]), batch_size=4)
k = 4
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", "32 of 40 rows in batches of 4 is 8 micro-batches, 2 windows of 4: no partial window (a slice's length from literals)"),
        Valid("""
step = 0
for epoch in range(epochs):
    for x, y in loader:
        (loss_fn(model(x), y) / k).backward()
        step += 1
        if step % k == 0:
            optimizer.step()
            optimizer.zero_grad()
    if evaluate(model) > best:
        step = 0
""", "set back only after some passes (a test the loop changes): which passes restart the count is unknown"),
        Valid("""
def main(model, optimizer, loader, k, epochs):
    data_iter = iter(loader)
    for it in range(epochs * len(loader)):
        if it % len(loader) == 0:
            data_iter = iter(loader)
        x, y = next(data_iter)
        (loss_fn(model(x), y) / k).backward()
        if (it + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()
""", "the passes over the data are inside the loop (its iterator is made anew there) and the counter "
            "runs across them: only the run's last micro-batches go unstepped"),
        Valid("""
def data_gen(n):
    for _ in range(n):
        yield torch.randn(4, 8)


def run_epoch(data_iter, model, optimizer, accum_iter=1):
    for i, batch in enumerate(data_iter):
        (model(batch).mean() / accum_iter).backward()
        if (i + 1) % accum_iter == 0:
            optimizer.step()
            optimizer.zero_grad()


def main(model, loader, optimizer):
    run_epoch(data_gen(20), model, optimizer)
    run_epoch((b[0] for b in loader), model, optimizer, accum_iter=10)
""", "every call hands the loop's iterable a generator: a stream, with no length to end a window on"),
        Valid("""
for epoch in range(num_epochs):
    for step, (x, y) in enumerate(train_loader):
        loss = loss_fn(model(x), y) / k
        loss.backward()
        iterations = epoch * len(train_loader) + step + 1
        if iterations % k == 0:
            optimizer.step()
            optimizer.zero_grad()
""", "a global step spelt through the epoch is not reset between passes: windows run across them"),
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
""", "the pass stops before the ragged tail ever runs a backward: every pass ends on a boundary"),
        Valid("""
CONFIG = {"seed": 42, "n_accumulate": 1, "lr": 1e-5}


def train_one_epoch(model, optimizer, dataloader, criterion):
    for step, (x, y) in enumerate(dataloader):
        loss = criterion(model(x), y) / CONFIG["n_accumulate"]
        loss.backward()
        if (step + 1) % CONFIG["n_accumulate"] == 0:
            optimizer.step()
            optimizer.zero_grad()
""", "the count is the literal 1 of a module dictionary that nothing writes again: nothing accumulates"),
        Valid("""
def train_one_epoch(model, optimizer, loader, k):
    for i, (x,) in enumerate(loader):
        loss = model(x).pow(2).mean() / k
        loss.backward()
        if (i + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()


def main():
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=4)
    for _ in range(3):
        train_one_epoch(model, optimizer, loader, 4)
""", "the loader handed to the loop's function at its only call has 16 micro-batches, from literals, and k is 4 "
            "there: every pass ends on a boundary (RULES.md, facts along calls)"),
        Valid("""
def run_epoch(model, loader, optimizer, k, it):
    for x, y in loader:
        it += 1
        loss = F.mse_loss(model(x), y) / k
        loss.backward()
        if it % k == 0:
            optimizer.step()
            optimizer.zero_grad()
    return it


def main(model, loader, optimizer, k):
    counter = 0
    for epoch in range(3):
        counter = run_epoch(model, loader, optimizer, k, counter)
""", "the counter is handed back and passed in again: it is carried across passes, and windows straddle them"),
        Valid("""
def train(model, optimizer, data_iter):
    total_iters = 10_000_000  # run until stopped
    it = 0
    for index in range(total_iters):
        it += 1
        x = next(data_iter)
        loss = model(x).mean() / 4
        loss.backward()
        if it % 4 == 0:
            optimizer.step()
            optimizer.zero_grad()
""", "the pass is ten million literal micro-batches, a multiple of 4: its schedule is read from sample "
            "lengths, not by running every micro-batch"),
        Valid("""
def train(net, loader, opt, k):
    for epoch in range(2):
        for i, (x, y) in enumerate(loader):
            loss = F.mse_loss(net(x), y)
            if k > 1:
                loss = loss / k
            else:
                loss.backward()
            if (i + 1) % k == 0:
                opt.step()
                opt.zero_grad()
""", "where `k > 1` is false, k is 1 and every micro-batch steps; where it is true, nothing is backpropagated: "
            "no window accumulates in either"),
        Valid("""
def update(stream, accum_steps, n_updates):
    for _ in range(n_updates):
        for j in range(1, accum_steps + 1):
            x, y = next(stream)
            loss = crit(net(x), y) / accum_steps
            loss.backward()
            if j % accum_steps == 0:
                opt.step()
                opt.zero_grad()
""", "the loop runs `accum_steps` micro-batches, one whole window: no pass leaves a partial one"),
        Valid("""
class TokenStream(IterableDataset):
    def __iter__(self):
        yield from self.rows


class Runner:
    def __init__(self, model, rows, k):
        self.model, self.k = model, k
        self.opt = torch.optim.AdamW(model.parameters())
        self.loader = DataLoader(TokenStream(rows), batch_size=8)

    def train(self):
        for i, batch in enumerate(self.loader):
            (self.model(batch).mean() / self.k).backward()
            if (i + 1) % self.k == 0:
                self.opt.step()
                self.opt.zero_grad()
""", "the loader, built in `__init__`, streams an IterableDataset of the module: it has no length, so no clause "
            "can name its last micro-batch"),
        Valid("""
def train(model, opt, loader, k, max_seen):
    seen, counter = 0, 0
    for x in loader:
        if seen >= max_seen:
            break
        (model(x).mean() / k).backward()
        if (counter + 1) % k == 0:
            opt.step()
            opt.zero_grad()
        counter += 1
        seen = seen + x.shape[0]
""", "the loop is the whole run, ended by a budget it adds to (`seen = seen + n` as `seen += n`): only the run's "
            "last micro-batches could go unstepped"),
        Valid("""
cfg = {}
cfg["accum"] = 1
for i, (x, y) in enumerate(dl):
    F.mse_loss(net(x), y).backward()
    if (i + 1) % cfg["accum"] == 0:
        opt.step()
        opt.zero_grad()
""", "the one value ever stored under the key is 1: no accumulation"),
        Valid("""
N_DEVICES = 8
ACCUM = 32 / N_DEVICES // 4
for it in range(1000):
    x, y = samples[it % len(samples)]
    (F.mse_loss(net(x), y) / ACCUM).backward()
    if (it + 1) % ACCUM == 0:
        opt.step()
        opt.zero_grad()
""", "the count is 1.0 from literals (`32 / 8 // 4`): every micro-batch is a boundary"),
        Valid("""
def train(model, opt, loader, k, max_steps):
    step = 0
    for i, x in enumerate(loader):
        (model(x).mean() / k).backward()
        if (i + 1) % k == 0:
            opt.step()
            opt.zero_grad()
        step += 1
        if step >= max_steps:
            break


for seed in range(3):
    train(model, opt, loader, 4, 100)
""", "each call is a run of its own, ended by a budget the function starts again: the loop around the "
            "calls runs the whole training again (seeds), not more passes of one run"),
    ]
    INVALID = [
        Invalid("""
for step, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if cfg.do_update and (step + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for step, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if cfg.do_update and ((step + 1) % k == 0 or (step + 1) == len(loader)):
        optimizer.step()
        optimizer.zero_grad()
""", why="the clause joins the boundary in parentheses, still under the switch beside it", also=("GA203",)),
        Invalid("""
n_seen, n_steps = 0, 0
for x, y in loader:
    (loss_fn(model(x), y) / k).backward()
    n_steps += 1
    if n_steps % k == 0:
        optimizer.step()
        optimizer.zero_grad()
    if n_steps % 100 == 0:
        scheduler.step()
        n_seen, n_steps = 0, 0
""", fixed=None, applicability=None,
            why="a reset written as a tuple of literals is read as one: the counter is set back within the pass, "
                "so no clause can name the last micro-batch"),
        Invalid("""
def forward_pass(model, batch, cfg):
    x, y = batch
    return loss_fn(model(x), y) / cfg.accum


def train(model, loader, optimizer, cfg):
    for i, batch in enumerate(loader):
        loss = forward_pass(model, batch, cfg)
        loss.backward()
        if (i + 1) % cfg.accum == 0:
            optimizer.step()
            optimizer.zero_grad()
""", fixed=None, applicability=None,
            why="the loss is divided by a helper handed the object holding the count: the window a clause adds "
                "would be stepped with that division, which no fix here can see to reweight"),
        Invalid("""
n = 0
for batch in loader:
    n += 1
    (model(batch) / accum).backward()
    if n >= accum and n % accum == 0:
        optimizer.step()
        optimizer.zero_grad()
    if n % 100 == 0:
        scheduler.step()
""", fixed="""
n = 0
for batch in loader:
    n += 1
    (model(batch) / accum).backward()
    if n >= accum and n % accum == 0 or n == len(loader):
        optimizer.step()
        optimizer.zero_grad()
    if n % 100 == 0:
        scheduler.step()
""", why="another event's period (`n % 100`) is not the accumulation count: the step's own test names it",
            also=("GA203",)),
        Invalid("""
for i, (x, y) in enumerate(bar := tqdm(loader)):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(bar := tqdm(loader)):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", why="an iterable bound with `:=` is the loader it names", also=("GA203",)),
        Invalid("""
for step, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    actual_step = step + 1
    if actual_step % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for step, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    actual_step = step + 1
    if actual_step % k == 0 or (step + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", why="a name bound to the count's arithmetic in the body counts too: the boundary is read through it",
            also=("GA203",)),
        Invalid("""
step = 0
for epoch in range(epochs):
    for x, y in loader:
        (loss_fn(model(x), y) / k).backward()
        step += 1
        if step % k == 0:
            optimizer.step()
            optimizer.zero_grad()
    step = 0
""", fixed="""
step = 0
for epoch in range(epochs):
    for x, y in loader:
        (loss_fn(model(x), y) / k).backward()
        step += 1
        if step % k == 0 or step == len(loader):
            optimizer.step()
            optimizer.zero_grad()
    step = 0
""", why="set back after every pass, the count restarts with each pass as if set before it", also=("GA203",)),
        Invalid("""
step = 0
for epoch in range(epochs):
    for x, y in loader:
        (loss_fn(model(x), y) / k).backward()
        step += 1
        if step % k == 0:
            optimizer.step()
            optimizer.zero_grad()
    if args.do_eval:
        evaluate(model)
        step = 0
""", fixed=None, applicability=None,
                why="set back after each pass when `args.do_eval` (a configuration switch): that variant drops each "
                    "pass's tail; a clause on `step` would be wrong in the other, where it counts on"),
        Invalid("""
for i, batch in enumerate(loader):
    with fabric.no_backward_sync(model, enabled=(i + 1) % k != 0):
        fabric.backward(model(batch) / k)
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", fixed=None, applicability=None,
            why="the sync switch spells the boundary again: a clause on the step alone would step the last window "
                "with its gradient sync still off"),
        Invalid("""
for i, batch in enumerate(loader):
    accumulating = (i + 1) % k != 0
    with fabric.no_backward_sync(model, enabled=accumulating):
        fabric.backward(model(batch) / k)
    if not accumulating:
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for i, batch in enumerate(loader):
    accumulating = (i + 1) % k != 0 and (i + 1) != len(loader)
    with fabric.no_backward_sync(model, enabled=accumulating):
        fabric.backward(model(batch) / k)
    if not accumulating:
        optimizer.step()
        optimizer.zero_grad()
""", why="the step and the sync switch read one name: the clause added where it is computed serves both",
            also=("GA203",)),
        Invalid("""
count = 0
for x, y in loader:
    (loss_fn(model(x), y) / k).backward()
    if (count + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
    count = count + 1
""", fixed="""
count = 0
for x, y in loader:
    (loss_fn(model(x), y) / k).backward()
    if (count + 1) % k == 0 or (count + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
    count = count + 1
""", why="`count = count + 1` counts on: it is no reset, and the counter names the pass's last micro-batch"),
        Invalid("""
num_iter = 0
for x, y in loader:
    num_iter += 1
    (loss_fn(model(x), y) / k).backward()
    if num_iter == k:
        num_iter = 0
        optimizer.step()
        optimizer.zero_grad()
""", fixed=None, applicability=None,
                why="a counter reset at the step counts a window's micro-batches, not the pass's: no clause can name the last one"),
        Invalid("""
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0: optimizer.step(); optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader): optimizer.step(); optimizer.zero_grad()
""", why="a body on the line of its test is read as a block"),
        Invalid("""
for i, (x, _) in enumerate(loader):
    fake = G(torch.randn(x.size(0), 2))
    d_loss = (D(fake.detach()).mean() - D(x).mean()) / k
    d_loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        opt_d.step()
        opt_d.zero_grad()
    g_loss = -D(fake).mean() / k
    g_loss.backward()
    if (i + 1) % k == 0:
        opt_g.step()
        opt_g.zero_grad()
""", fixed="""
for i, (x, _) in enumerate(loader):
    fake = G(torch.randn(x.size(0), 2))
    d_loss = (D(fake.detach()).mean() - D(x).mean()) / k
    d_loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        opt_d.step()
        opt_d.zero_grad()
    g_loss = -D(fake).mean() / k
    g_loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        opt_g.step()
        opt_g.zero_grad()
""", why="each optimizer's own boundary: the generator's drops the tail the discriminator's steps", also=("GA203", "GA301")),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)
    loss.backward()
    if not (i + 1) % k:
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)
    loss.backward()
    if not (i + 1) % k or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", why="the boundary read as the truth of the remainder under a `not`: the clause goes beside the `not`", also=("GA201",)),
        Invalid("""
t_total = int(len(dataset) / batch_size / k) * epochs
scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=t_total)
for epoch in range(epochs):
    for step, batch in enumerate(loader):
        loss = model(batch) / k
        loss.backward()
        if (step + 1) % k == 0:
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
""", fixed="""
t_total = int(len(dataset) / batch_size / k) * epochs
scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=t_total)
for epoch in range(epochs):
    for step, batch in enumerate(loader):
        loss = model(batch) / k
        loss.backward()
        if (step + 1) % k == 0 or (step + 1) == len(loader):
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
""", applicability=Applicability.UNSAFE, why="the schedule's length is truncated by `int(...)`: one more step per pass would outrun it",
                also=("GA203",)),
        Invalid("""
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k != 0:
        continue
    optimizer.step()
    optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) / k).backward()
    if (i + 1) % k != 0 and (i + 1) != len(loader):
        continue
    optimizer.step()
    optimizer.zero_grad()
""", why='a negated early continue: the step runs after it', also=('GA203',)),
        Invalid("""
k = 4
num_training_steps = epochs * (len(loader) // k)
scheduler = get_linear_schedule_with_warmup(optimizer, 10, num_training_steps=num_training_steps)
for epoch in range(epochs):
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        (loss / k).backward()
        if (i + 1) % k == 0:
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
""", fixed="""
k = 4
num_training_steps = epochs * (len(loader) // k)
scheduler = get_linear_schedule_with_warmup(optimizer, 10, num_training_steps=num_training_steps)
for epoch in range(epochs):
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        (loss / k).backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
""", applicability=Applicability.UNSAFE, why="one more step per pass than the schedule counts", also=("GA203",)),
        Invalid("""
for i, (x, y) in enumerate(train_loader):
    loss = loss_fn(model(x), y)
    loss.backward()
    if (i + 1) % k == 0:  # window full
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(train_loader):
    loss = loss_fn(model(x), y)
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(train_loader):  # window full
        optimizer.step()
        optimizer.zero_grad()
""", also=("GA201",)),
        Invalid("""
for step, batch in enumerate(data, start=1):
    model(batch).loss.backward()
    if step % args.k == 0:
        opt.step()
        opt.zero_grad()
""", fixed="""
for step, batch in enumerate(data, start=1):
    model(batch).loss.backward()
    if step % args.k == 0 or step == len(data):
        opt.step()
        opt.zero_grad()
""", applicability=Applicability.UNSAFE, why="`data` might be an iterable without len()", also=("GA201",)),
        Invalid("""
samples = []
for item in dataset:
    samples.append(item)
for i, (x, y) in enumerate(samples):
    (loss_fn(model(x), y) / 4).backward()
    if (i + 1) % 4 == 0:
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
samples = []
for item in dataset:
    samples.append(item)
for i, (x, y) in enumerate(samples):
    (loss_fn(model(x), y) / 4).backward()
    if (i + 1) % 4 == 0 or (i + 1) == len(samples):
        optimizer.step()
        optimizer.zero_grad()
""", applicability=Applicability.UNSAFE, why="a list filled at run time: `[]` is not its length",),
        Invalid("""
total_steps = epochs * (len(loader) // k)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / total_steps)
for epoch in range(epochs):
    for i, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / k).backward()
        if (i + 1) % k == 0:
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
""", fixed="""
total_steps = epochs * (len(loader) // k)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / total_steps)
for epoch in range(epochs):
    for i, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / k).backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
""", applicability=Applicability.UNSAFE, why="the schedule's function counts `len // k` steps: one more would outrun it",
            also=("GA203",)),
        Invalid("""
scale = 1.0 / k
for i, (x, y) in enumerate(loader):
    (loss_fn(model(x), y) * scale).backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", fixed=None, applicability=None,
            why="the loss is scaled by a factor, not divided by the count: the added window's weight could not be read"),
        Invalid("""
for i, (x, y) in enumerate(loader, 1):
    (loss_fn(model(x), y) / k).backward()
    if i % k == k - 1:
        optimizer.step()
        optimizer.zero_grad()
""", fixed=None, applicability=None, also=("GA104",),
            why="the boundary is off by one (GA104): windows added for it would be out of phase, so no fix until it is"),
        Invalid("""
def train(model, loader, k, epochs, resume_step):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for epoch in range(epochs):
        for step, (x, y) in enumerate(loader):
            if step < resume_step:
                continue
            (loss_fn(model(x), y) / k).backward()
            if (step + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()
""", fixed="""
def train(model, loader, k, epochs, resume_step):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for epoch in range(epochs):
        for step, (x, y) in enumerate(loader):
            if step < resume_step:
                continue
            (loss_fn(model(x), y) / k).backward()
            if (step + 1) % k == 0 or (step + 1) == len(loader):
                optimizer.step()
                optimizer.zero_grad()
""", why="skipping the micro-batches below a resume point shortens only the first windows: the tail of the "
            "pass is still never stepped", also=("GA203",)),
        Invalid("""
def train(model, loader, optimizer, loss_fn, cfg):
    for j, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / cfg.accum).backward()
        if not cfg.accumulate or (j + 1) % cfg.accum == 0:
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
def train(model, loader, optimizer, loss_fn, cfg):
    for j, (x, y) in enumerate(loader):
        (loss_fn(model(x), y) / cfg.accum).backward()
        if not cfg.accumulate or (j + 1) % cfg.accum == 0 or (j + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", why="a switch or-ed with the boundary: where it is off, the loop accumulates and drops the tail",
                also=("GA203",)),
        Invalid("""
cfg = load_config()
for i, (x, y) in enumerate(loader):
    n_acc = cfg["accum"]
    loss = loss_fn(model(x), y) / n_acc
    loss.backward()
    if (i + 1) % n_acc == 0:
        opt.step()
        opt.zero_grad()
""", fixed="""
cfg = load_config()
for i, (x, y) in enumerate(loader):
    n_acc = cfg["accum"]
    loss = loss_fn(model(x), y) / n_acc
    loss.backward()
    if (i + 1) % n_acc == 0 or (i + 1) == len(loader):
        opt.step()
        opt.zero_grad()
""", why="an entry of the configuration read anew each iteration is one value all the same", also=("GA203",)),
        Invalid("""
CONFIG = {"seed": 42, "n_accumulate": 1, "lr": 1e-5}
CONFIG["n_accumulate"] = args.accum


def train_one_epoch(model, optimizer, dataloader, criterion):
    for step, (x, y) in enumerate(dataloader):
        loss = criterion(model(x), y) / CONFIG["n_accumulate"]
        loss.backward()
        if (step + 1) % CONFIG["n_accumulate"] == 0:
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
CONFIG = {"seed": 42, "n_accumulate": 1, "lr": 1e-5}
CONFIG["n_accumulate"] = args.accum


def train_one_epoch(model, optimizer, dataloader, criterion):
    for step, (x, y) in enumerate(dataloader):
        loss = criterion(model(x), y) / CONFIG["n_accumulate"]
        loss.backward()
        if (step + 1) % CONFIG["n_accumulate"] == 0 or (step + 1) == len(dataloader):
            optimizer.step()
            optimizer.zero_grad()
""", why="the dictionary's count is written again elsewhere: its value is not the literal"),
        Invalid("""
def train(model, train_dataloader, optimizer, grad_acc):
    if isinstance(train_dataloader.dataset, IterableDataset):
        train_dataloader.dataset.set_epoch(0)
    for batch_id, batch in enumerate(train_dataloader, start=1):
        loss = model(**batch).loss
        (loss / grad_acc).backward()
        if batch_id % grad_acc == 0:
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
def train(model, train_dataloader, optimizer, grad_acc):
    if isinstance(train_dataloader.dataset, IterableDataset):
        train_dataloader.dataset.set_epoch(0)
    for batch_id, batch in enumerate(train_dataloader, start=1):
        loss = model(**batch).loss
        (loss / grad_acc).backward()
        if batch_id % grad_acc == 0 or batch_id == len(train_dataloader):
            optimizer.step()
            optimizer.zero_grad()
""", applicability=Applicability.UNSAFE, why="the function asks whether the loader's dataset is iterable-style: it may have no len()"),
        Invalid("""
def train(model, loader, k, crit):
    model = DDP(model)
    opt = torch.optim.Adam(model.parameters())
    for i, (x, y) in enumerate(loader):
        if (i + 1) % k != 0:
            with model.no_sync():
                loss = crit(model(x), y) / k
                loss.backward()
        else:
            loss = crit(model(x), y) / k
            loss.backward()
        if (i + 1) % k == 0:
            opt.step()
            opt.zero_grad()
""", fixed=None, applicability=None, why="the backward runs in both arms of `if (i + 1) % k != 0:`, which together are every micro-batch (no fix: the sync test spells the boundary a second time)"),
        Invalid("""
def train(G, D, loader, k, crit):
    optG = torch.optim.Adam(G.parameters())
    optD = torch.optim.Adam(D.parameters())
    for i, (x, z) in enumerate(loader):
        d_loss = crit(D(x), 1)
        d_loss.backward()
        if (i + 1) % k == 0:
            optD.step()
            optG.zero_grad()
            g_loss = crit(D(G(z)), 1)
            g_loss.backward()
            optG.step()
            optD.zero_grad()
""", fixed="""
def train(G, D, loader, k, crit):
    optG = torch.optim.Adam(G.parameters())
    optD = torch.optim.Adam(D.parameters())
    for i, (x, z) in enumerate(loader):
        d_loss = crit(D(x), 1)
        d_loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optD.step()
            optG.zero_grad()
            g_loss = crit(D(G(z)), 1)
            g_loss.backward()
            optG.step()
            optD.zero_grad()
""", why="the discriminator accumulates while the generator updates inside the step's block: each optimizer has its own window", also=("GA201",)),
        Invalid("""
def run_epoch(model, loader, optimizer, k, it):
    for x, y in loader:
        it += 1
        loss = F.mse_loss(model(x), y) / k
        loss.backward()
        if it % k == 0:
            optimizer.step()
            optimizer.zero_grad()


def main(model, loader, optimizer, k):
    counter = 0
    for epoch in range(3):
        run_epoch(model, loader, optimizer, k, counter)
""", fixed="""
def run_epoch(model, loader, optimizer, k, it):
    for x, y in loader:
        it += 1
        loss = F.mse_loss(model(x), y) / k
        loss.backward()
        if it % k == 0 or it == len(loader):
            optimizer.step()
            optimizer.zero_grad()


def main(model, loader, optimizer, k):
    counter = 0
    for epoch in range(3):
        run_epoch(model, loader, optimizer, k, counter)
""", also=("GA203",), why="the counter is a parameter the function counts on and never hands back: each call, one "
            "pass, starts from the 0 the caller passes, so each pass drops its tail"),
        Invalid("""
loader = DataLoader(dataset, batch_size=8)
for epoch in range(epochs):
    it = iter(loader)
    for step, (x, y) in enumerate(it):
        loss = F.mse_loss(model(x), y) / accum
        loss.backward()
        if (step + 1) % accum == 0:
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
loader = DataLoader(dataset, batch_size=8)
for epoch in range(epochs):
    it = iter(loader)
    for step, (x, y) in enumerate(it):
        loss = F.mse_loss(model(x), y) / accum
        loss.backward()
        if (step + 1) % accum == 0 or (step + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", applicability=Applicability.UNSAFE, also=("GA203",),
            why="a loop over `iter(loader)` is one pass over the loader, not a stream; the fix is unsafe: a batch "
                "pulled from the iterator before the loop (a resumed run) would leave the pass shorter than the loader"),
        Invalid("""
def updates_per_epoch(loader, accum):
    return len(loader) // accum


def train(model, loader, accum, epochs):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, updates_per_epoch(loader, accum) * epochs)
    for epoch in range(epochs):
        for i, (x, y) in enumerate(loader):
            loss = F.mse_loss(model(x), y) / accum
            loss.backward()
            if (i + 1) % accum == 0:
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
""", fixed="""
def updates_per_epoch(loader, accum):
    return len(loader) // accum


def train(model, loader, accum, epochs):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, updates_per_epoch(loader, accum) * epochs)
    for epoch in range(epochs):
        for i, (x, y) in enumerate(loader):
            loss = F.mse_loss(model(x), y) / accum
            loss.backward()
            if (i + 1) % accum == 0 or (i + 1) == len(loader):
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
""", applicability=Applicability.UNSAFE, also=("GA203",),
            why="the schedule's length counts `len(loader) // accum` steps per pass, through a function of the "
                "module: stepping the final window too outruns it"),
        Invalid("""
for epoch in range(epochs):
    for i, (x, y) in enumerate(loader):
        loss = F.mse_loss(model(x), y) / k
        loss.backward()
        tr_loss += loss.item() * k
        if (i + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
for epoch in range(epochs):
    for i, (x, y) in enumerate(loader):
        loss = F.mse_loss(model(x), y) / k
        loss.backward()
        tr_loss += loss.item() * k
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
""", applicability=Applicability.UNSAFE,
            why="the clause is unsafe here: GA203's fix, which weights the final window the clause steps, is "
                "unsafe (the loss is logged undivided again, `* k`), and the clause alone would step that window at r / k"),
        Invalid("""
def train_epoch(model, loader, optimizer, scheduler, k):
    for i, (x, y) in enumerate(loader):
        loss = F.mse_loss(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0:
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()


def main(model, loader, epochs, k):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t_total = len(loader) // k * epochs
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=t_total)
    for _ in range(epochs):
        train_epoch(model, loader, opt, sched, k)
""", fixed="""
def train_epoch(model, loader, optimizer, scheduler, k):
    for i, (x, y) in enumerate(loader):
        loss = F.mse_loss(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()


def main(model, loader, epochs, k):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t_total = len(loader) // k * epochs
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=t_total)
    for _ in range(epochs):
        train_epoch(model, loader, opt, sched, k)
""", applicability=Applicability.UNSAFE, also=("GA203",),
            why="the scheduler handed in as `scheduler` was built by the caller with `len // k` steps per pass: "
                "one more step per pass outruns it"),
        Invalid("""
model = DDP(model)
for epoch in range(epochs):
    for i, (x, y) in enumerate(loader):
        skip_sync = (i + 1) % k != 0
        with model.no_sync() if skip_sync else contextlib.nullcontext():
            loss = F.mse_loss(model(x), y) / k
            loss.backward()
        if (i + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()
""", fixed=None, applicability=None,
            why="no fix: the sync flag spells the boundary a second time, and a clause added to the step alone "
                "would step the final window with its gradients never all-reduced"),
        Invalid("""
loader = DataLoader(dataset, sampler=BucketSampler(len(dataset)), batch_size=None)
bar = tqdm(loader, total=len(dataset))
for i, (x, y) in enumerate(bar):
    loss = F.mse_loss(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
loader = DataLoader(dataset, sampler=BucketSampler(len(dataset)), batch_size=None)
bar = tqdm(loader, total=len(dataset))
for i, (x, y) in enumerate(bar):
    loss = F.mse_loss(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(bar):
        optimizer.step()
        optimizer.zero_grad()
""", applicability=Applicability.UNSAFE, also=("GA203",),
            why="the bar is given its own `total=`, not the loader's length: `len(bar)` may be a count of samples, "
                "or raise"),
        Invalid("""
class BucketedLoader:
    def __init__(self, pairs, per_batch):
        self.pairs, self.per_batch = pairs, per_batch

    def __iter__(self):
        for start in range(0, len(self.pairs), self.per_batch):
            yield collate(self.pairs[start:start + self.per_batch])


def train(train_loader, model, optimizer, k):
    for i, (x, y) in enumerate(train_loader):
        (F.mse_loss(model(x), y) / k).backward()
        if (i + 1) % k == 0:
            optimizer.step()
            optimizer.zero_grad()


def main(pairs, model, optimizer):
    loader = BucketedLoader(pairs, per_batch=3)
    for epoch in range(2):
        train(loader, model, optimizer, k=4)
""", fixed="""
class BucketedLoader:
    def __init__(self, pairs, per_batch):
        self.pairs, self.per_batch = pairs, per_batch

    def __iter__(self):
        for start in range(0, len(self.pairs), self.per_batch):
            yield collate(self.pairs[start:start + self.per_batch])


def train(train_loader, model, optimizer, k):
    for i, (x, y) in enumerate(train_loader):
        (F.mse_loss(model(x), y) / k).backward()
        if (i + 1) % k == 0 or (i + 1) == len(train_loader):
            optimizer.step()
            optimizer.zero_grad()


def main(pairs, model, optimizer):
    loader = BucketedLoader(pairs, per_batch=3)
    for epoch in range(2):
        train(loader, model, optimizer, k=4)
""", applicability=Applicability.UNSAFE, also=("GA203",),
            why="the loader handed in is the module's own iterator class, which has no `__len__`: the clause "
                "would raise, whatever the parameter is called"),
        Invalid("""
def train(k, n_aux, model, aux, opt, aux_opt, loader):
    for i, (x, y) in enumerate(loader):
        loss = F.mse_loss(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0:
            opt.step()
            opt.zero_grad()
        if i % n_aux == 0:
            aux_opt.zero_grad()
            aux(x).pow(2).mean().backward()
            aux_opt.step()
""", fixed="""
def train(k, n_aux, model, aux, opt, aux_opt, loader):
    for i, (x, y) in enumerate(loader):
        loss = F.mse_loss(model(x), y) / k
        loss.backward()
        if (i + 1) % k == 0 or (i + 1) == len(loader):
            opt.step()
            opt.zero_grad()
        if i % n_aux == 0:
            aux_opt.zero_grad()
            aux(x).pow(2).mean().backward()
            aux_opt.step()
""", why="the second optimizer is updated in a block of its own (its clear, a backward through another module, its "
            "step), every `n_aux` micro-batches: the first optimizer's window is read without it", also=("GA203",)),
        Invalid("""
def train(base, critic, judge, dataset, k, distributed):
    loader = DataLoader(dataset, batch_size=8)
    opt_g = torch.optim.Adam(base.parameters())
    opt_d = torch.optim.Adam(critic.parameters())
    net = base
    if distributed:
        net = DistributedDataParallel(base)
    for i, x in enumerate(loader):
        boundary = (i + 1) % k == 0
        fake = net(x)
        (judge.gen(x, fake) / k).backward()
        if boundary:
            opt_g.step()
            opt_g.zero_grad()
        if judge.active(i):
            (judge.disc(critic(x), critic(fake.detach())) / k).backward()
            if boundary:
                opt_d.step()
                opt_d.zero_grad()
""", fixed="""
def train(base, critic, judge, dataset, k, distributed):
    loader = DataLoader(dataset, batch_size=8)
    opt_g = torch.optim.Adam(base.parameters())
    opt_d = torch.optim.Adam(critic.parameters())
    net = base
    if distributed:
        net = DistributedDataParallel(base)
    for i, x in enumerate(loader):
        boundary = (i + 1) % k == 0 or (i + 1) == len(loader)
        fake = net(x)
        (judge.gen(x, fake) / k).backward()
        if boundary:
            opt_g.step()
            opt_g.zero_grad()
        if judge.active(i):
            (judge.disc(critic(x), critic(fake.detach())) / k).backward()
            if boundary:
                opt_d.step()
                opt_d.zero_grad()
""", why="`net` is `base` or a DistributedDataParallel of it: its forward runs the generator optimizer's parameters, "
            "so that optimizer's window is read apart from the critic's, whose backward runs under a test that cannot "
            "be read", also=("GA203", "GA501")),
        Invalid("""
def train(epochs):
    for epoch in range(epochs):
        opt.zero_grad()
        n = 0
        for xb, yb in loader:
            while True:
                try:
                    loss = F.mse_loss(net(xb), yb) / k
                    loss.backward()
                    n += 1
                    break
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
            if n % k == 0:
                opt.step()
                opt.zero_grad()
""", fixed="""
def train(epochs):
    for epoch in range(epochs):
        opt.zero_grad()
        n = 0
        for xb, yb in loader:
            while True:
                try:
                    loss = F.mse_loss(net(xb), yb) / k
                    loss.backward()
                    n += 1
                    break
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
            if n % k == 0 or n == len(loader):
                opt.step()
                opt.zero_grad()
""", why="the retry loop runs its body once per micro-batch: the count it keeps is the micro-batch loop's counter",
            also=("GA203",)),
        Invalid("""
def train(model, loader, opt, k):
    for step, batch in enumerate(loader):
        loss = model(batch).mean() / k
        last = (step + 1) % k != 0
        with amp.scale_loss(loss, opt, delay_unscale=last) as scaled:
            scaled.backward()
            if not last:
                all_reduce_grads([p.grad for p in model.parameters() if p.grad is not None])
        if (step + 1) % k == 0:
            opt.step()
            opt.zero_grad()
""", fixed=None, applicability=None,
            why="the boundary is spelled a second time (`delay_unscale=`, the hand-made all-reduce): a clause added "
                "to the step alone would step the last window unreduced"),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = F.mse_loss(net(x), y) / k
    loss.backward()
    if (i + 1) % k == 0:
        opt.step()
        opt.zero_grad()
    if i >= max_batches:
        break
""", fixed=None, applicability=None,
            why="a pass may end on the `break` before its last micro-batch: a clause naming `len(loader)` would not "
                "be reached there"),
        Invalid("""
class Looper:
    def fit(self, loader, epochs):
        for _ in range(epochs):
            self.run_epoch(loader)
            if self.stop:
                break

    def run_epoch(self, loader):
        n = 0
        for x, y in loader:
            n += 1
            loss = F.mse_loss(self.net(x), y) / self.accum
            loss.backward()
            if n % self.accum == 0:
                self.opt.step()
                self.opt.zero_grad()
            self.global_step += 1
            if self.max_steps is not None and self.global_step >= self.max_steps:
                self.stop = True
                break
""", fixed="""
class Looper:
    def fit(self, loader, epochs):
        for _ in range(epochs):
            self.run_epoch(loader)
            if self.stop:
                break

    def run_epoch(self, loader):
        n = 0
        for x, y in loader:
            n += 1
            loss = F.mse_loss(self.net(x), y) / self.accum
            loss.backward()
            if n % self.accum == 0 or n == len(loader):
                self.opt.step()
                self.opt.zero_grad()
            self.global_step += 1
            if self.max_steps is not None and self.global_step >= self.max_steps:
                self.stop = True
                break
""", why="the loop's method is called once per epoch from a loop: it is one pass of many, not the whole run a "
            "budget ends", also=("GA203",)),
        Invalid("""
sched = [0.1 * (1 - j / (epochs * (len(loader) // K))) for j in range(epochs * (len(loader) // K))]
for epoch in range(epochs):
    for i, x in enumerate(loader):
        (model(x).pow(2).mean() / K).backward()
        if (i + 1) % K == 0:
            for g in opt.param_groups:
                g["lr"] = sched[(len(loader) // K) * epoch + i // K]
            opt.step()
            opt.zero_grad()
""", fixed="""
sched = [0.1 * (1 - j / (epochs * (len(loader) // K))) for j in range(epochs * (len(loader) // K))]
for epoch in range(epochs):
    for i, x in enumerate(loader):
        (model(x).pow(2).mean() / K).backward()
        if (i + 1) % K == 0 or (i + 1) == len(loader):
            for g in opt.param_groups:
                g["lr"] = sched[(len(loader) // K) * epoch + i // K]
            opt.step()
            opt.zero_grad()
""", applicability=Applicability.UNSAFE,
            why="the learning-rate table is sized by the steps of a pass counted down (`len(loader) // K`): with one "
                "step more per pass its index runs past the end", also=("GA203",)),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        self._model = model  # what the fix reads
        if loop.iterable.kind not in _FINITE or loop.flush_after_loop or loop.single_budgeted_pass:
            return  # a single pass ended by a step budget: only the run's last micro-batches at most
        reported: set[int] = set()
        # Each step's own boundary: a GAN's two optimizers may test the same count, one with an
        # end-of-data clause and one without.
        boundaries = [step.guard.boundary for variant, _ in loop.accumulation_variants() for step in variant.steps
                      if step.guard.boundary is not None]
        for boundary in boundaries:
            if boundary.steps_tail is not False or boundary.expression is None:
                continue  # the tail is stepped, or we cannot tell
            if boundary.counter is None or not boundary.counter.per_pass:
                continue  # a counter carried across passes: windows straddle them
            if id(boundary.expression) in reported or divides_evenly(loop, boundary, model.facts):
                continue
            reported.add(id(boundary.expression))
            length = loop.iterable.len_text or "len(...)"
            evidence = boundary.schedule.evidence if boundary.schedule is not None else ""
            switch = boundary.counter.pass_reset_switched
            where = f" when `{switch}` holds (it restarts `{boundary.counter.text}` every pass)" if switch else ""
            yield self.finding(
                f"`{code_in_one_line(boundary.expression)}` has no end-of-data clause: the last `{length} % {boundary.k_text}` "
                f"micro-batches of each pass are never stepped{where}" + (f" ({evidence})" if evidence else ""),
                boundary.expression, self._fix(loop, boundary))

    def _fix(self, loop: TrainingLoop, boundary: Boundary) -> Fix | None:
        counter = boundary.counter
        length = loop.iterable.len_text
        if counter is None or not counter.per_pass or counter.resets_in_pass or counter.pass_reset_switched \
                or counter.first_value not in (0, 1) \
                or length is None:
            return None
        expression = boundary.expression
        assert expression is not None
        if boundary.first_window in ("1", "k-1", "k+1"):
            return None  # off by one (GA104): windows computed for this boundary would be out of phase
        if loop.sync_spelled_elsewhere(counter.text, expression):
            return None  # a clause added to the step alone would step the last window with its sync still off
        if loop.breaks_early:
            return None  # the pass may end on a `break` before the micro-batch a clause would name
        if loop.boundary_spelled_elsewhere(counter.text, boundary.k_text, boundary):
            return None  # another test of the boundary (`delay_unscale=`, a hand-made all-reduce) would stay behind
        # The window the clause adds is stepped with each loss scaled as before: a division by
        # the count is then GA203's to weight, but a scaling by the count that it cannot read
        # (`loss * scale` with `scale = 1 / k`, `compute_loss(x, y, k)`) would stay wrong unseen.
        for event in loop.events:
            flow = event.loss_flow
            if event.kind is not EventKind.BACKWARD or flow is None or flow.scaling is not Scaling.SCALED:
                continue
            if not flow.divisions and event.loss is not None and _reads_count(loop, event, boundary, self._model):
                return None
        last = f"({counter.text} + 1)" if counter.first_value == 0 else counter.text
        # `if not (i + 1) % k:` reads the truthy remainder under a `not`: the clause goes beside the
        # `not`, positive (`not (i + 1) % k or (i + 1) == len(dl)`); joined inside it, `and` would bind
        # to the `not` and leave the tail dropped.
        negation = next((n for n in self._model.facts.tree.find(loop.node, cst.UnaryOperation)
                         if isinstance(n.operator, cst.Not) and n.expression is expression), None)
        negated = boundary.negated
        if negation is not None:
            expression, negated = negation, not negated
        if negated:
            clause = cst.parse_expression(f"{last} != {length}")
            operator: cst.BaseBooleanOp = cst.And()
        else:
            clause = cst.parse_expression(f"{last} == {length}")
            operator = cst.Or()
        joined = cst.BooleanOperation(left=expression, operator=operator, right=clause)
        # Beside a configuration switch in an `and` (`cfg.do_update and (i + 1) % k == 0`): the
        # clause joins the boundary in parentheses, under the switch (bare, the `or` would bind to
        # the whole test and step the switched-off variant).
        switches = {id(c.expression) for e in loop.events if e.kind is EventKind.STEP for c in e.conditions
                    if c.kind is ConditionKind.SWITCH and c.expression is not None}
        if not expression.lpar and any(
                not isinstance(parent.operator, type(operator)) and (
                    (expression is parent.left and id(parent.right) in switches)
                    or (expression is parent.right and id(parent.left) in switches))
                for parent in self._model.facts.tree.find(loop.node, cst.BooleanOperation)):
            joined = joined.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        applicability = Applicability.SAFE if loop.iterable.kind in _SAFE_TO_MEASURE else Applicability.UNSAFE
        message = f"Also step on the last micro-batch (`{code_of(clause)}`)"
        # One more optimizer step per pass: a schedule counted as `len // k` steps is outrun.
        model = self._model
        for event in loop.events:
            if event.kind is EventKind.SCHEDULER_STEP and event.receiver:
                length = floor_counted(model.facts.tree, model.module, event.receiver)
                if length is not None:
                    applicability = Applicability.UNSAFE
                    message += (f"; unsafe: the loop then takes one more step per pass than `{event.receiver}`'s "
                                f"`{length}` counts (`len // {boundary.k_text}`): round it up")
                    break
        if applicability is Applicability.SAFE:
            counted = model.facts.floor_count_of(loop.iterable.len_text or "", boundary.k_text)
            if counted is not None:
                # `sched[(len(loader) // K) * epoch + i // K]`: something sized or indexed by the
                # steps a pass takes, counted down; a step more per pass may run past its end
                applicability = Applicability.UNSAFE
                message += (f"; unsafe: the code counts `{counted}` steps per pass, and the loop then takes "
                            "one more: round that count up")
        if applicability is Applicability.SAFE:
            # The clause alone steps the final window with its losses still divided by the count:
            # GA203's fix weights it, and where that fix is unsafe (the divided loss is read elsewhere),
            # a safe run of `gacclint fix` would stop half-way, at a window weighted r / k.
            read = next((name for event in loop.events if event.kind is EventKind.BACKWARD and event.loss_flow
                         for division in event.loss_flow.divisions
                         if division.divisor_text.strip() == boundary.k_text.strip()
                         and (name := read_after_the_backward(loop, division)) is not None), None)
            if read is not None:
                applicability = Applicability.UNSAFE
                message += (f"; unsafe: the final window's loss stays divided by `{boundary.k_text}` until GA203's "
                            f"fix weights it, which is unsafe too (`{read}` is read elsewhere in the loop)")
        return Fix(applicability, message, (Replace(expression, joined),))
