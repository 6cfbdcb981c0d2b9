from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import libcst as cst

from gacclint.fixes.edits import Edit, InsertAfter, InsertBefore, Remove, Replace
from gacclint.loops.graphs import UNKNOWN_GRAPH, Definition, GraphFlow, combination_terms, strip_scaling
from gacclint.loops.model import Event, EventKind, LoopStatement, TrainingLoop
from gacclint.loops.vocabulary import PURE_CALLS, assignment_targets, call_name, code_of, dotted_name
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import alone_on_its_line


@dataclass(frozen=True)
class _Term:
    expression: cst.BaseExpression
    forwards: frozenset[int]
    name: str | None  # the loss's name, when the term is `name` or `weight * name`


class DoubleBuiltGraph(Rule):
    """
    ## What it does
    Checks for losses of *separate* forward calls (two models on the same
    input, or one model on two inputs) that are summed before a single
    backward.

    ## Why is this bad?
    Each forward keeps its graph (the activations saved for backward) alive
    until the backward that consumes it. Summing the losses first keeps every
    task's graph in memory at once, so peak memory grows with the number of
    tasks. Backpropagating each loss as soon as it exists gives the same
    gradients (they accumulate in `.grad`) with one graph alive at a time.

    Losses of one forward (`out1, out2 = model(x)`), forwards that share an
    intermediate requiring grad (`feats = encoder(x)` feeding two heads), and
    one loss computed from several forwards together (`mse(model(a),
    model(b))`) cannot be split and are left alone.

    ## Example
    ```python
    for xs, ys in loader:
        pred1 = model1(xs)
        pred2 = model2(xs)
        loss1 = loss_fn1(pred1, ys)
        loss2 = loss_fn2(pred2, ys)
        loss = loss1 + loss2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ```

    ## Use instead
    ```python
    for xs, ys in loader:
        optimizer.zero_grad()
        pred1 = model1(xs)
        loss1 = loss_fn1(pred1, ys)
        loss1.backward()
        pred2 = model2(xs)
        loss2 = loss_fn2(pred2, ys)
        loss2.backward()
        loss = (loss1 + loss2).detach()
        optimizer.step()
    ```

    ## Fix safety
    Safe, and offered only when each loss's forward reads loop data alone and
    the statements can be reordered without changing what they read: each
    task's forward and loss move together, its backward follows at once with
    the same scaling as before (`/ k`, `scaler.scale(...)`), a clear that
    stood between the losses and the backward moves ahead of them, and the
    combined value stays available, detached, for logging. A loss computed
    inside the sum (`loss_fn(model_a(x), y) + loss_fn(model_b(x), y)`, an
    ensemble) gets a fresh name (`loss_1`, ...) so the detached sum reads it
    and no forward runs twice. No fix is offered when two losses share a
    graph (separate backwards would need `retain_graph`) or a forward reads
    another task's output, nor when the sum reaches the backward through
    another name (`d_loss = adv_weight * wd`) or holds a term that is not
    visibly a loss (a gradient penalty from a helper): those are reported
    for the user to split.
    """

    code = "GA301"
    name = "double-built-graph"

    VALID = [
        Valid("""
for xs, ys, xt in loader:
    cls_s, dom_s = model(xs)
    cls_t, dom_t = model(xt)
    fea_loss = F.cross_entropy(cls_s, ys) + F.cross_entropy(dom_t, ys)
    critic_loss = F.cross_entropy(dom_s, ys) + F.cross_entropy(dom_t, 1 - ys)
    opt_f.zero_grad()
    fea_loss.backward(retain_graph=True)
    opt_f.step()
    opt_c.zero_grad()
    critic_loss.backward()
    opt_c.step()
""", "both forwards' graphs are needed by the next backward anyway: separate backwards free nothing sooner"),
        Valid("""
for x, y in loader:
    out1 = model1(x)
    out2 = model2(x)
    pseudo1 = torch.argmax(out1.detach(), dim=1)
    pseudo2 = torch.argmax(out2.detach(), dim=1)
    loss = ce(out1, y) + ce(out1, pseudo2) + ce(out2, y) + ce(out2, pseudo1)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""", "each model's loss reads the other's output (cross pseudo-labels): both forwards must exist before "
            "either loss, so separate backwards free nothing sooner"),
        Valid("""
for x in loader:
    optimizer.zero_grad()
    recon, mu = model(x)
    kl_loss = torch.sum(mu.pow(2)) / mu.shape[0]
    gen_loss = F.softplus(-disc(recon.contiguous().float())).mean()
    loss = kl_loss + 0.1 * gen_loss
    loss.backward()
    optimizer.step()
""", "`.float()` casts and keeps the graph: both losses hang off one `model(x)`"),
        Valid("""
for x, y in loader:
    out1, out2 = model(x)
    loss = loss_fn(out1, y) + loss_fn(out2, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""", "one forward with two outputs"),
        Valid("""
for x, y in loader:
    feats = encoder(x)
    loss1 = head_loss(head1(feats), y)
    loss2 = head_loss(head2(feats), y)
    loss = loss1 + loss2
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""", "two heads share the encoder's graph: separate backwards would need retain_graph"),
        Valid("""
for real, _ in loader:
    fake = generator(noise())
    d_loss = d_logistic_loss(discriminator(real), discriminator(fake.detach()))
    d_optim.zero_grad()
    d_loss.backward()
    d_optim.step()
""", "one loss computed from two forwards together"),
        Valid("""
for x, y in loader:
    with torch.no_grad():
        target = teacher(x)
    logits = student(x)
    loss = 0.5 * criterion(logits, y) + 0.5 * kd_loss(logits, target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""", "the teacher builds no graph; both losses share the student's forward"),
        Valid("""
for texts, y, target in loader:
    feats = model.encoder(texts)
    crops = []
    crops.append(feats[0])
    out = model.decoder(torch.stack(crops))
    loss = F.l1_loss(out, y) + F.l1_loss(model.head(feats), target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""", "the decoder's input is a list filled from `feats`: both losses share the encoder's graph"),
        Valid("""
for x, y in loader:
    out = model(x)
    loss = criterion(out[0], y)
    loss += 0.1 * criterion(out[1], y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""", "a sum built with `+=` from one forward's outputs: one graph"),
        Valid("""
for x, y in loader:
    loss = 0
    for head in heads:
        loss += criterion(head(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""", "summed in a loop over heads: how many graphs, and which backward each could have, is not a fixed list"),
        Valid("""
optimizer = torch.optim.Adam(policy.parameters())
for obs, actions, old_logp, adv in batches:
    _, outputs = policy.act({"observations": obs, "taken_actions": actions}, role="policy")
    entropy_loss = -entropy_scale * policy.get_entropy(role="policy").mean()
    ratio = torch.exp(outputs["log_prob"] - old_logp)
    policy_loss = -torch.min(adv * ratio, adv * torch.clip(ratio, 0.8, 1.2)).mean()
    optimizer.zero_grad()
    (policy_loss + entropy_loss).backward()
    optimizer.step()
""", "`get_entropy(role=...)` is handed no data: it reads the distribution `act` just built, one graph"),
        Valid("""
w = images.clone().detach()
w.requires_grad = True
optimizer = torch.optim.Adam([w], lr=0.01)
for step in range(steps):
    adv = 0.5 * (torch.tanh(w) + 1)
    l2 = mse(flatten(adv), flatten(images)).sum()
    f_loss = nn.functional.cross_entropy(model(adv), labels)
    cost = l2 + c * f_loss
    optimizer.zero_grad()
    cost.backward()
    optimizer.step()
""", "both terms read `adv`, made from `w`, the input being optimised: one graph they share (separate backwards would need retain_graph)"),
        Valid("""
class Updater:
    def __init__(self, agent, optimizer):
        self.agent = agent
        self.optimizer = optimizer

    def update(self, obs, act, old_logp, adv, ret, minibatch):
        for start in range(0, obs.shape[0], minibatch):
            idx = slice(start, start + minibatch)
            logp, ent = self.agent.log_prob_and_entropy(obs[idx], act[idx])
            value = self.agent.value(obs[idx])
            pg_loss = -(adv[idx] * (logp - old_logp[idx]).exp()).mean()
            vf_loss = ((value.view(-1) - ret[idx]) ** 2).mean()
            loss = pg_loss - 0.01 * ent.mean() + 0.5 * vf_loss
            self.optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.agent.parameters(), 0.5)
            self.optimizer.step()
""", "two methods of a module whose class is not visible may share a trunk one computes and the other reads"),
        Valid("""
def train_epoch(disc, gen, loader, opt_d, score_fn):
    for x in loader:
        fake = gen(x)
        d_real = disc(x)
        d_fake = disc(fake.detach())
        loss_real = score_fn(d_real, torch.ones_like(d_real))
        loss_fake = score_fn(d_fake, torch.zeros_like(d_fake))
        loss_d = (loss_real + loss_fake) / 2
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()


def make_eval_metric():
    score_fn = nn.BCEWithLogitsLoss()
    return score_fn


def main():
    disc = nn.Linear(4, 1)
    gen = nn.Linear(4, 4)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.randn(64, 4), batch_size=8)
    for _ in range(3):
        train_epoch(disc, gen, loader, opt_d, external.pair_score)
""", "the one call site hands a function the module cannot see; a loss module bound to the same name "
            "in another function is not what the parameter holds"),
    ]
    INVALID = [
        Invalid("""
for x in loader:
    real_loss = F.softplus(-D(x)).mean()
    fake_loss = F.softplus(D(G(torch.randn(16, 100)).detach())).mean()
    d_loss = real_loss + 0.5 * r1_gamma * fake_loss
    d_opt.zero_grad()
    d_loss.backward()
    d_opt.step()
""", fixed=None, applicability=None, why="a term weighted by a product of numbers is still its own loss "
            "(reported only: the weight is not a plain name or number a fix would carry)"),
        Invalid("""
for x, y in loader:
    loss = criterion(model1(x), y)
    loss += criterion(model2(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""", fixed=None, applicability=None,
                why="the sum built with `+=` is the same sum: two graphs alive at the backward (reported only: a fix "
                    "would rewrite every step of it)"),
        Invalid("""
def gradient_penalty(y, x):
    grad = torch.autograd.grad(y, x, torch.ones_like(y), create_graph=True)[0]
    return ((grad.view(grad.size(0), -1).norm(2, dim=1) - 1) ** 2).mean()


for x_real in loader:
    d_loss_real = -D(x_real).mean()
    x_fake = G(torch.randn(x_real.size(0), 64))
    d_loss_fake = D(x_fake.detach()).mean()
    alpha = torch.rand(x_real.size(0), 1)
    x_hat = (alpha * x_real.data + (1 - alpha) * x_fake.data).requires_grad_(True)
    d_loss_gp = gradient_penalty(D(x_hat), x_hat)
    d_loss = d_loss_real + d_loss_fake + 10 * d_loss_gp
    d_optimizer.zero_grad()
    d_loss.backward()
    d_optimizer.step()
""", fixed=None, applicability=None,
                why="a penalty from a helper joins the sum: its own forward's graph is alive too; the split is left to the user"),
        Invalid("""
for expert_batch, policy_batch in zip(expert_loader, policy_loader):
    expert_loss = F.binary_cross_entropy_with_logits(D(expert_batch), ones)
    policy_loss = F.binary_cross_entropy_with_logits(D(policy_batch), zeros)
    gail_loss = expert_loss + policy_loss
    d_optimizer.zero_grad()
    (gail_loss + grad_pen).backward()
    d_optimizer.step()
""", fixed=None, applicability=None, why="the sum is named, then added to once more before the backward"),
        Invalid("""
for x_real in loader:
    d_loss_real = -D(x_real).mean()
    d_loss_fake = D(G(torch.randn(x_real.size(0), 64)).detach()).mean()
    wd = d_loss_real + d_loss_fake
    d_loss = adv_weight * wd
    d_optimizer.zero_grad()
    d_loss.backward()
    d_optimizer.step()
""", fixed=None, applicability=None, why="the sum reaches the backward through another name"),
        Invalid("""
class GAN(nn.Module):
    def __init__(self):
        super().__init__()
        self.generator = Generator()
        self.discriminator = Discriminator()

    def discriminator_forward(self, x):
        return self.discriminator(x).view(-1)


model = GAN()
for real in loader:
    fake = model.generator(torch.randn(real.size(0), 100))
    real_loss = F.binary_cross_entropy(model.discriminator_forward(real), ones)
    fake_loss = F.binary_cross_entropy(model.discriminator_forward(fake.detach()), zeros)
    discr_loss = 0.5 * (real_loss + fake_loss)
    optim_discr.zero_grad()
    discr_loss.backward()
    optim_discr.step()
""", fixed=None, applicability=None,
                why="a method of the module's own `nn.Module` class runs a forward; no fix, as one input is another model's output"),
        Invalid("""
optimizer = torch.optim.Adam(list(agent.parameters()) + list(rnd_model.parameters()))
for obs, actions, returns in loader:
    predicted, target = rnd_model(obs)
    rnd_loss = F.mse_loss(predicted, target.detach())
    logprob, value = agent.evaluate(obs, actions)
    pg_loss = -(logprob * advantages).mean()
    v_loss = ((value - returns) ** 2).mean()
    loss = pg_loss + v_loss * vf_coef + rnd_loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""", fixed=None, why="two graphs: the agent's (shared by two losses) and the RND model's; no automatic split"),
        Invalid("""
for idx, data in enumerate(train_loader):
    xs, ys = data
    pred1 = model1(xs)
    pred2 = model2(xs)

    loss1 = loss_fn1(pred1, ys)
    loss2 = loss_fn2(pred2, ys)

    loss = loss1 + loss2
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""", fixed="""
for idx, data in enumerate(train_loader):
    xs, ys = data
    optimizer.zero_grad()
    pred1 = model1(xs)
    loss1 = loss_fn1(pred1, ys)
    loss1.backward()
    pred2 = model2(xs)
    loss2 = loss_fn2(pred2, ys)
    loss2.backward()

    loss = (loss1 + loss2).detach()
    optimizer.step()
""", why="seed 000, Edition 1"),
        Invalid("""
for i, (x, y) in enumerate(loader):
    la = crit(net_a(x), y)
    lb = crit(net_b(x), y)
    lc = crit(net_c(x), y)
    total = 0.5 * la + lb + 2 * lc
    scaler.scale(total / k).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    la = crit(net_a(x), y)
    scaler.scale((0.5 * la) / k).backward()
    lb = crit(net_b(x), y)
    scaler.scale(lb / k).backward()
    lc = crit(net_c(x), y)
    scaler.scale((2 * lc) / k).backward()
    total = (0.5 * la + lb + 2 * lc).detach()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""", why="three tasks, weights and the accumulation scaling are kept", also=("GA203",)),
        Invalid("""
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model_a(x), y) + loss_fn(model_b(x), y)
    (loss / k).backward()
    print(loss.item())
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for i, (x, y) in enumerate(loader):
    loss_1 = loss_fn(model_a(x), y)
    (loss_1 / k).backward()
    loss_2 = loss_fn(model_b(x), y)
    (loss_2 / k).backward()
    loss = (loss_1 + loss_2).detach()
    print(loss.item())
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
""", why="a two-model ensemble's losses summed inline: each gets a name", also=("GA203",)),
        Invalid("""
for real, _ in loader:
    fake = G(torch.randn(real.size(0), nz))
    d_loss = criterion(D(real), ones) + criterion(D(fake.detach()), zeros)
    optD.zero_grad()
    d_loss.backward()
    optD.step()
""", fixed=None, applicability=None, why="the GAN discriminator: D on two inputs; the fake input is another model's output"),
        Invalid("""
bce = nn.BCEWithLogitsLoss()
ce = nn.CrossEntropyLoss()
for real, labels in loader:
    fake = generator(torch.randn(real.shape[0], 8))
    optD.zero_grad()
    real_out = D(real)
    d_real_loss = (bce(real_out[:, 0], ones) + ce(real_out[:, 1:], labels)) / 2
    fake_out = D(fake.detach())
    d_fake_loss = (bce(fake_out[:, 0], zeros) + ce(fake_out[:, 1:], labels)) / 2
    d_loss = (d_real_loss + d_fake_loss) / 2
    d_loss.backward()
    optD.step()
""", fixed=None, applicability=None,
            why="each half is itself a sum of losses of one forward: a term may be a name holding a sum"),
        Invalid("""
for x, y in loader:
    optimizer.zero_grad()
    loss = crit(model_a(x), y) + crit(model_b(x), y)
    loss = loss / accumulation_steps
    loss.backward()
    optimizer.step()
""", fixed=None, applicability=None,
            why="the sum is scaled again before the backward: no automatic split (each task would need it)"),
        Invalid("""
Tensor = torch.cuda.FloatTensor if cuda else torch.FloatTensor
for x, _ in loader:
    target = Tensor(np.ones((x.size(0), 1)))
    loss_a = crit(model_a(x), target)
    loss_b = crit(model_b(x), target)
    loss = loss_a + loss_b
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""", fixed="""
Tensor = torch.cuda.FloatTensor if cuda else torch.FloatTensor
for x, _ in loader:
    target = Tensor(np.ones((x.size(0), 1)))
    optimizer.zero_grad()
    loss_a = crit(model_a(x), target)
    loss_a.backward()
    loss_b = crit(model_b(x), target)
    loss_b.backward()
    loss = (loss_a + loss_b).detach()
    optimizer.step()
""", why="the shared target is built by a tensor class of torch under another name, not by a model"),
        Invalid("""
for step, (x, y) in enumerate(loader):
    optimizer.zero_grad()
    loss_a = crit(model_a(x), y)
    loss_b = crit(model_b(x), y)
    aux_weight = min(1.0, step / warmup)
    loss = loss_a + aux_weight * loss_b
    loss.backward()
    optimizer.step()
""", fixed=None, applicability=None,
            why="the weight is set after the losses: a backward moved up to `loss_b` would read the last iteration's"),
        Invalid("""
for x, y in loader:
    optimizer.zero_grad()
    loss_a = crit(model_a(x), y)
    loss_b = crit(model_b(x), y)
    loss = loss_a + loss_b + 1e-4 * model_a.weight.pow(2).sum()
    loss.backward()
    optimizer.step()
""", fixed=None, applicability=None, why="the penalty has no forward of its own, so no backward a fix could move it to"),
        Invalid("""
for x, y in loader:
    optimizer.zero_grad()
    loss_a = crit(model_a(x), y)
    loss_b = crit(model_b(x), y)
    loss = loss_a + loss_b
    loss *= 0.5
    loss.backward()
    optimizer.step()
""", fixed=None, applicability=None, why="the sum is scaled after it is made: both graphs are still alive at the backward"),
        Invalid("""
for x, y in loader:
    optimizer.zero_grad()
    loss_a = crit(model_a(x), y)
    loss_b = crit(model_b(x), y)
    loss = loss_a + loss_b
    loss.mul_(0.5)
    loss.backward()
    optimizer.step()
""", fixed=None, applicability=None, why="the sum is scaled in place before the backward"),
        Invalid("""
for x, y in loader:
    optimizer.zero_grad()
    loss_a = crit(model_a(x), y)
    order = torch.randperm(x.size(0))
    loss_b = crit(model_b(x), y)
    loss = loss_a + loss_b
    loss.backward()
    optimizer.step()
""", fixed=None, applicability=None,
            why="moving `model_b`'s forward above a random draw would change the numbers its dropout draws"),
        Invalid("""
for it in range(1000):
    G_sample = G(z)
    D_real = D(X)
    D_fake = D(G_sample.detach())
    D_loss = -(torch.mean(D_real) - torch.mean(D_fake))
    D_loss.backward()
    D_solver.step()
    D_solver.zero_grad()
""", why="a negated sum (a WGAN critic's loss) is a sum all the same"),
        Invalid("""
D_solver = torch.optim.Adam(D_net.parameters(), lr=1e-3)


def D(X):
    return D_net(X)


for it in range(1000):
    D_real = D(X)
    D_fake = D(fake)
    D_loss = F.binary_cross_entropy(D_real, ones) + F.binary_cross_entropy(D_fake, zeros)
    D_loss.backward()
    D_solver.step()
    D_solver.zero_grad()
""", why="`D` returns `D_net`'s forward: each call is one", applicability=None),
        Invalid("""
def train(model, optimizer, x_data, y_data, x_phys):
    for i in range(100):
        optimizer.zero_grad()

        yh = model(x_data)
        loss1 = torch.mean((yh - y_data) ** 2)

        yp = model(x_phys)
        loss2 = torch.mean(yp ** 2)

        loss = loss1 + loss2
        loss.backward()
        optimizer.step()
""", fixed="""
def train(model, optimizer, x_data, y_data, x_phys):
    for i in range(100):
        optimizer.zero_grad()

        yh = model(x_data)
        loss1 = torch.mean((yh - y_data) ** 2)
        loss1.backward()

        yp = model(x_phys)
        loss2 = torch.mean(yp ** 2)
        loss2.backward()

        loss = (loss1 + loss2).detach()
        optimizer.step()
""", why="each loss's statements already come one after the other: its backward follows them, and the "
            "blank lines stay"),
        Invalid("""
def train(model, loader_a, loader_b):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for (xa, ya), (xb, yb) in zip(loader_a, loader_b):
        review_loss = model(xa, labels=ya).loss
        squad_loss = model(xb, labels=yb).loss
        loss = review_loss + squad_loss
        loss.backward()
        opt.step()
        opt.zero_grad()
""", why="a backward without a gradient needs one number, so each term is one forward's reduced loss; "
            "reported only (the terms are not visibly losses to rebuild)"),
        Invalid("""
for (x, y), x_oe in zip(loader, loader_oe):
    data_loss = F.cross_entropy(model(x), y)
    smax_oe = F.log_softmax(model(x_oe), dim=1)
    oe_loss = -1 * smax_oe.mean()
    loss = data_loss + oe_loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
""", fixed="""
for (x, y), x_oe in zip(loader, loader_oe):
    optimizer.zero_grad()
    data_loss = F.cross_entropy(model(x), y)
    data_loss.backward()
    smax_oe = F.log_softmax(model(x_oe), dim=1)
    oe_loss = -1 * smax_oe.mean()
    oe_loss.backward()
    loss = (data_loss + oe_loss).detach()
    optimizer.step()
""", why="a term weighted by a negative number (`-1 * smax_oe.mean()`) is a reduced loss like any weighted one"),
        Invalid("""
bce = nn.BCEWithLogitsLoss()
opt_d = torch.optim.Adam(discriminator.parameters())
for i, real in enumerate(loader):
    fake = generator(torch.randn(real.size(0), 4))
    discriminator.requires_grad_(True)
    d_loss = bce(discriminator(real), torch.ones(real.size(0), 1)) + bce(
        discriminator(fake.detach()), torch.zeros(real.size(0), 1))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
""", fixed=None, applicability=None, why="`discriminator.requires_grad_(True)` thaws a module's parameters: no input being optimised that the two terms would share (no fix: `fake` is not loop data)"),
        Invalid("""
def train(encoder, head, domain_clf, optimizer, pairs, w=0.1):
    for (xs, ys), (xt, _) in pairs:
        optimizer.zero_grad()
        f_src = encoder(xs)
        f_tgt = encoder(xt)
        reg = F.mse_loss(head(f_src), ys)
        d_src = F.binary_cross_entropy_with_logits(domain_clf(f_src), torch.ones(len(xs), 1))
        d_tgt = F.binary_cross_entropy_with_logits(domain_clf(f_tgt), torch.zeros(len(xt), 1))
        dom = d_src + d_tgt
        loss = reg + w * dom
        loss.backward()
        optimizer.step()
""", fixed=None, applicability=None,
            why="`dom` is itself a sum: `d_src` shares the source forward with `reg`, `d_tgt` is a forward of its "
                "own, and both graphs stay alive until the backward (no fix: both sums would need rewriting)"),
        Invalid("""
def train_disc(gen, disc, opt, loader):
    for real in loader:
        real_logit = disc(real)
        fake_logit = disc(gen(torch.randn(real.shape[0], 16)).detach())
        d_real = nn.BCEWithLogitsLoss()(real_logit, torch.ones_like(real_logit))
        d_fake = nn.BCEWithLogitsLoss()(fake_logit, torch.zeros_like(fake_logit))
        d_loss = d_real + d_fake
        opt.zero_grad()
        d_loss.backward()
        opt.step()
""", fixed=None, applicability=None,
            why="a loss module made and called in one expression is a loss as one bound to a name is; no fix: the "
                "fake forward reads the generator, not loop data alone"),
        Invalid("""
def train(critic, maker, loader, opt_c, opt_m):
    bce = nn.BCEWithLogitsLoss()
    for src, tgt in loader:
        fake = maker(src)
        score_real = critic(tgt)
        loss_real = bce(score_real, torch.ones_like(score_real))
        score_fake = critic(fake.detach())
        loss_fake = bce(score_fake, torch.zeros_like(score_fake))
        c_loss = loss_real + loss_fake
        opt_c.zero_grad()
        c_loss.backward()
        opt_c.step()
        with torch.autocast("cuda"):
            score_fake = critic(fake)
            m_loss = bce(score_fake, torch.ones_like(score_fake))
        opt_m.zero_grad()
        m_loss.backward()
        opt_m.step()
""", fixed=None, applicability=None,
            why="the name bound again later in a `with` block holds the earlier forward where the discriminator's "
                "loss reads it"),
        Invalid("""
def train_epoch(disc, gen, loader, opt_d, score_fn):
    for x in loader:
        fake = gen(x)
        d_real = disc(x)
        d_fake = disc(fake.detach())
        loss_real = score_fn(d_real, torch.ones_like(d_real))
        loss_fake = score_fn(d_fake, torch.zeros_like(d_fake))
        loss_d = (loss_real + loss_fake) / 2
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()


def main():
    disc = nn.Linear(4, 1)
    gen = nn.Linear(4, 4)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
    adv_crit = nn.BCEWithLogitsLoss()
    loader = torch.utils.data.DataLoader(torch.randn(64, 4), batch_size=8)
    for _ in range(3):
        train_epoch(disc, gen, loader, opt_d, adv_crit)
""", fixed=None, applicability=None,
            why="the parameter is handed a loss module at its one call site, under another name (RULES.md, facts "
                "along calls)"),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        self._loop = loop
        graph = loop.graph
        if graph is None:
            return
        for event in loop.events:
            if event.kind is not EventKind.BACKWARD or event.loss is None or event.in_inner_loop:
                continue
            found = self._combination(event, graph)
            if found is None:
                continue
            combined, definition, terms, groups, whole = found
            separable = all(len(group) == 1 for group in groups)
            names = ", ".join(f"`{code_of(t.expression)}`" for t in terms) if separable else " and ".join(
                "(" + ", ".join(f"`{code_of(t.expression)}`" for t in group) + ")" if len(group) > 1
                else f"`{code_of(group[0].expression)}`" for group in groups)
            yield self.finding(
                f"{names} come from separate forward calls and are summed before one backward: every forward's "
                "graph stays alive until then; backpropagate each loss as soon as it is computed",
                # terms that share a forward must be backpropagated together: no automatic split
                combined, _fix(loop, graph, event, definition, terms) if separable and whole else None)

    @staticmethod
    def _opened(graph: GraphFlow, terms: list[_Term], before: int) -> list[_Term] | None:
        """The terms, with each (weighted) name bound once to a sum of losses replaced by that sum's
        terms (`w * dom`, `dom = d_src + d_tgt`); None when none is."""
        found: list[_Term] = []
        opened = False
        for term in terms:
            value = term.expression
            sides = [value.left, value.right] if type(value) is cst.BinaryOperation and type(  # `w * dom`
                value.operator) in (cst.Multiply, cst.Divide) else [value]
            inner = next((side for side in sides if type(side) is cst.Name and graph.is_loss_sum(side, before)), None)
            behind = _sum_behind(graph, graph.definitions(inner.value, before)) if inner is not None else None
            parts = combination_terms(behind[1]) if behind is not None else None
            if not parts:
                found.append(term)
                continue
            opened = True
            for part in parts:
                forwards = graph.forwards(part, behind[2])
                if forwards:
                    found.append(_Term(part, forwards, _term_name(part, graph, behind[2])))
        return found if opened else None

    @staticmethod
    def _one_fed_forward(term: _Term, graph: GraphFlow, before: int) -> bool:
        """The term is what one forward, a call handed inputs, returns itself: `model(x, y)`,
        `model(x, labels=y).loss`, `out[0]`, or a name bound to one (not `model.l2_penalty()`,
        nor a value computed from a forward's output, which may share graphs the module cannot see)."""
        if len(term.forwards) != 1:
            return False
        value = term.expression
        if isinstance(value, cst.Name):
            found = graph.definitions(value.value, before)
            if len(found) != 1 or found[0].unpacked or found[0].augmented is not None:
                return False
            value = found[0].value
        while isinstance(value, (cst.Attribute, cst.Subscript)):
            value = value.value
        return isinstance(value, cst.Call) and id(value) in term.forwards and bool(value.args)

    def _kept_alive(self, event: Event, graph: GraphFlow) -> frozenset[int]:
        """The forwards whose graphs another backward of the iteration needs as well: an earlier one
        keeps them with `retain_graph=True`, or a later one reads them. Those graphs stay alive
        whatever this backward does."""
        found: set[int] = set()
        block_of = {id(record.statement): record.block for record in self._loop.body}
        block = block_of.get(id(event.statement))
        for other in self._loop.events:
            if other.kind is not EventKind.BACKWARD or other is event or other.loss is None:
                continue
            # A later backward counts when it surely runs after this one (the same block): under
            # an `if` of its own (a GAN's generator every n_critic steps) it may not, and what it
            # reads there may be made anew.
            if (other.position < event.position and other.retain_graph) or (
                    other.position > event.position and block is not None and block_of.get(id(other.statement)) is block):
                found |= graph.forwards(other.loss, other.position)
        return frozenset(found)

    def _combination(self, event: Event, graph: GraphFlow):
        loss = event.loss
        assert loss is not None
        definition: Definition | None = None
        direct = True  # the sum is the backward loss's own definition, not another name's
        # The terms and where each is read, when the sum is not one expression.
        preset: list[tuple[cst.BaseExpression, int]] | None = None
        value: cst.BaseExpression = _stripped(graph, loss, event.position)
        before = event.position
        name = dotted_name(value) if isinstance(value, (cst.Name, cst.Attribute)) else None
        if name is not None:
            found = graph.definitions(name, event.position)
            # `loss *= 0.5` after the sum scales it: the sum is the definition before
            while found and isinstance(found[-1].augmented, cst.AugAssign) and isinstance(
                    found[-1].augmented.operator, (cst.MultiplyAssign, cst.DivideAssign)):
                found = graph.definitions(name, found[-1].position)
            behind = _sum_behind(graph, found)
            if behind is None:
                # `loss = l1` then `loss += l2`: the same sum, built in steps (reported only: a fix
                # would rewrite every step)
                added = _added_up(graph, found)
                if added is None:
                    return None
                definition, value, before, preset = added
                direct = False
            else:
                definition, value, before = behind
            # `loss_D = 0.5 * (a + b)` then `loss_D = loss_D / k`: the combination is the earlier one;
            # so it is behind another name (`d_loss = wd`, `loss_d = adv_weight * d_sum`), though a fix
            # would then have to rewrite that chain too: reported only
            hops = 0
            while isinstance(value, cst.Name) and hops < 8:
                direct = direct and value.value == name
                behind = _sum_behind(graph, graph.definitions(value.value, before))
                if behind is None:
                    return None
                definition, value, before = behind
                hops += 1
        for _ in range(4):
            placed = preset or [(term, before) for term in combination_terms(value) or ()]
            preset = None
            if not placed:
                return None
            terms = [term for term, _ in placed]
            graph_terms = []
            for term, read_at in placed:
                forwards = graph.forwards(term, read_at)
                if forwards:
                    graph_terms.append(_Term(term, forwards, _term_name(term, graph, read_at)))
            if len(graph_terms) != 1:
                break
            # `(gail_loss + grad_pen).backward()` with `gail_loss = expert_loss + policy_loss`: the one
            # term with a graph is itself a named sum of losses; its terms are what is summed (reported only)
            only = graph_terms[0]
            if only.name is None or not graph.is_loss_sum(only.expression, before):
                return None
            behind = _sum_behind(graph, graph.definitions(only.name, before))
            if behind is None:
                return None
            definition, value, before = behind
            direct = False
        if len(graph_terms) < 2:
            return None
        # Terms that are not visibly losses (a gradient penalty from a helper) still hold graphs, and
        # join the groups of the forwards they read; they leave the split to the user.
        losses = [term for term in graph_terms
                  if graph.is_reduced_loss(term.expression, before) or graph.is_loss_sum(term.expression, before)]
        # A backward without a gradient argument needs one number, so each term of its sum is one:
        # a term made by one forward handed inputs (`model(x, labels=y).loss`) is that forward's
        # reduced loss. Counted as a loss to report; a fix still asks for visible losses.
        reduced = losses + [term for term in graph_terms if term not in losses and _needs_one_number(event)
                            and direct and self._one_fed_forward(term, graph, before)]
        if any(UNKNOWN_GRAPH in term.forwards for term in graph_terms):
            return None  # some term's forwards are not visible: whether graphs are shared is unknown
        kept = self._kept_alive(event, graph)
        if any(term.forwards & kept for term in graph_terms):
            return None  # a backward with `retain_graph=True` keeps those graphs alive for this one anyway
        # Terms sharing a forward stay together (separate backwards would need retain_graph);
        # two or more such groups are separate graphs alive at once.
        groups = _groups(graph, graph_terms)
        if sum(any(term in reduced for term in group) for group in groups) < 2:
            # `loss = reg + w * dom` with `dom = d_src + d_tgt` (a DANN domain loss): `dom` joins the
            # source group through `d_src`, and hides `d_tgt`, a forward of its own: its terms are
            # what is summed (reported only: a fix would rewrite both sums)
            opened = self._opened(graph, graph_terms, before)
            if opened is None:
                return None
            graph_terms, placed = opened, placed + [(t.expression, before) for t in opened]
            reduced = [t for t in graph_terms if graph.is_reduced_loss(t.expression, before)]
            losses = list(reduced)
            groups = _groups(graph, graph_terms)
            direct = False
            if sum(any(term in reduced for term in group) for group in groups) < 2:
                return None
        # An input being optimised (`w.requires_grad = True`, `adv = tanh(w)`) that every group reads
        # is an intermediate they share: separate backwards would need retain_graph.
        optimized = graph.optimized_inputs()
        if optimized and len(groups) > 1:
            shared = set(optimized)
            for group in groups:
                shared &= set().union(*(graph.tensors_read(t.expression, before) for t in group))
            if shared:
                return None
        # What each group's losses are computed from, detached values included: a group reading
        # another's output (a pseudo-label from the other model) needs that forward first.
        placed_at = {id(term): read_at for term, read_at in placed}
        reads = [frozenset().union(*(graph.made_from(t.expression, placed_at.get(id(t.expression), before))
                                     for t in group)) for group in groups]
        owns = [frozenset().union(*(t.forwards for t in group)) for group in groups]
        needs = {(i, j) for i in range(len(groups)) for j in range(len(groups)) if i != j and reads[i] & owns[j]}
        if any((j, i) in needs for i, j in needs):
            return None  # each needs the other's forward (cross pseudo-labels): both graphs are alive whatever the order
        if needs:
            direct = False  # a split must keep that order: reported only
        # A term with no forward of its own (`+ 1e-2 * w.pow(2).sum()`) has no backward to move to.
        # whole: every term is a task's loss (`+ 1e-2 * w.pow(2).sum()` has no forward, and so no
        # backward of its own that a fix could move)
        return value, definition, graph_terms, groups, len(graph_terms) == len(terms) == len(losses) and direct


def _groups(graph: GraphFlow, terms: list["_Term"]) -> list[list["_Term"]]:
    """The terms in groups that share a forward (each group one graph)."""
    groups: list[list[_Term]] = []
    for term in terms:
        joined = [group for group in groups if any(_share(graph, term, other) for other in group)]
        merged = sorted([term] + [member for group in joined for member in group], key=terms.index)
        groups = [group for group in groups if group not in joined] + [merged]
    groups.sort(key=lambda group: terms.index(group[0]))
    return groups


def _share(graph, term: "_Term", other: "_Term") -> bool:
    """Two terms read one graph: a forward in common, or one term's forward is handed no data and
    reads what a forward of the same module in the other left (`policy.act(x)` then
    `policy.get_entropy(role="policy")`)."""
    if term.forwards & other.forwards:
        return True
    owners = [{graph.forward_owner(key) for key in side.forwards} - {None} for side in (term, other)]
    for mine, theirs in ((owners[0], owners[1]), (owners[1], owners[0])):
        if any(handed_nothing and any(module == owner for module, _ in theirs) for owner, handed_nothing in mine):
            return True
    # Two methods of one module whose class is not visible (`agent.log_prob(obs)`, `agent.value(obs)`):
    # whether they share a trunk is not visible either.
    methods = [{graph.unseen_method(key) for key in side.forwards} - {None} for side in (term, other)]
    return any(module == owner and method != other_method
               for module, method in methods[0] for owner, other_method in methods[1])  # type: ignore[misc]


def _needs_one_number(event: Event) -> bool:
    """`loss.backward()`, `scaler.scale(loss).backward()`, `accelerator.backward(loss)`: no
    gradient is handed in, so what is backpropagated must be a single number."""
    call = event.node
    if not isinstance(call, cst.Call):
        return False
    positional = [a for a in call.args if a.keyword is None]
    if isinstance(call.func, cst.Attribute) and call.func.attr.value == "backward" and not positional:
        return True
    return len(positional) == 1 and event.framework is not None and event.loss is positional[0].value


def _sum_behind(graph: GraphFlow, found: list[Definition]) -> tuple[Definition, cst.BaseExpression, int] | None:
    """The one definition reaching a read, when it is a plain assignment (not unpacked, not
    `+=`): itself, its value without the scaling around it, and its place."""
    if len(found) != 1 or found[0].unpacked or found[0].augmented is not None:
        return None
    definition = found[0]
    return definition, _stripped(graph, definition.value, definition.position), definition.position


def _added_up(graph: GraphFlow, found: list[Definition]
              ) -> tuple[Definition, cst.BaseExpression, int, list[tuple[cst.BaseExpression, int]]] | None:
    """The definitions reaching a read are one plain assignment and then `+=` to it, all in one
    block of the iteration (`loss = l1` then `loss += l2`): the last `+=`, where it stands, and
    the terms of the whole sum, each with the place it is read at."""
    if len(found) < 2:
        return None
    first, added = found[0], found[1:]
    block = first.statement.block
    if first.unpacked or first.augmented is not None or any(
            d.statement.block is not block or d.statement.in_inner_loop for d in found):
        return None
    if not all(isinstance(d.augmented, cst.AugAssign) and isinstance(d.augmented.operator, cst.AddAssign)
               for d in added):
        return None
    terms: list[tuple[cst.BaseExpression, int]] = []
    for definition in found:
        value = _stripped(graph, definition.value, definition.position)
        terms.extend((term, definition.position) for term in combination_terms(value) or [value])
    last = added[-1]
    return last, last.augmented, last.position, terms  # type: ignore[return-value]


def _stripped(graph: GraphFlow, node: cst.BaseExpression, before: int) -> cst.BaseExpression:
    """`strip_scaling`, a product read by its sides' graphs first: in `adv_weight * d_loss` the
    weight is the side that carries none."""
    while isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Multiply):
        left, right = graph.forwards(node.left, before), graph.forwards(node.right, before)
        if left and not right:
            node = node.left
        elif right and not left:
            node = node.right
        else:
            break
    return strip_scaling(node)


def _term_name(term: cst.BaseExpression, graph: GraphFlow, before: int) -> str | None:
    """The loss's name in a term `loss` or `weight * loss`: the side that carries a forward."""
    if isinstance(term, cst.Name):
        return term.value
    if isinstance(term, cst.BinaryOperation) and isinstance(term.operator, cst.Multiply):
        for side, other in ((term.left, term.right), (term.right, term.left)):
            if (isinstance(side, cst.Name) and isinstance(other, (cst.Integer, cst.Float, cst.Name, cst.Attribute))
                    and graph.forwards(side, before) and not graph.forwards(other, before)):
                return side.value
    return None


def _fix(loop: TrainingLoop, graph: GraphFlow, backward: Event, definition: Definition | None,
         terms: list[_Term]) -> Fix | None:
    """Move each task's forward and loss together, each followed by its own backward."""
    if definition is None or not alone_on_its_line(backward) or backward.in_inner_loop:
        return None
    block = definition.statement.block
    if backward.statement is not _statement_at(loop, backward.position).statement or \
            _statement_at(loop, backward.position).block is not block:
        return None
    if not graph.forward_inputs_are_loop_data(frozenset().union(*(t.forwards for t in terms)), definition.position):
        return None
    chains: list[list[LoopStatement]] = []
    inline: dict[int, str] = {}  # id(term) -> the name a loss computed inline in the sum gets
    tree = graph.facts.tree
    if sum(1 for name in tree.find(backward.node, cst.Name) if name.value == definition.name) != 1:
        return None  # `(loss / max(loss.item(), 1)).backward()`: the sum is read again
    for term in terms:
        if term.name is None:
            # `loss_fn(model_a(x), y) + loss_fn(model_b(x), y)`: the term is
            # its own forward; it gets a name and moves ahead as it is.
            if graph.reads(term.expression) & _bound_with_graphs(graph, terms, definition.position):
                return None
            if not tree.contains(definition.value, term.expression):
                return None  # `a - b`'s `-b` is made here, not a part of the sum that can be renamed
            preferred = f"{definition.name}_{len(inline) + 1}"
            taken = set(loop.bound_names) | set(inline.values())
            name, index = preferred, 2
            while name in taken:
                name, index = f"{preferred}_{index}", index + 1
            inline[id(term)] = name
            chains.append([])
            continue
        chain = _chain(graph, term, definition.position)
        if chain is None or any(record.block is not block or not alone_on_its_line(record) for record in chain):
            return None
        chains.append(chain)
    chained = {record.position for chain in chains for record in chain}
    if len(chained) != sum(len(chain) for chain in chains):
        return None  # two tasks share a statement
    if any(_changes(graph, r, definition.name) for r in loop.body if definition.position < r.position < backward.position):
        return None  # `loss = loss / k`, `loss.mul_(0.5)` after the sum: each task's backward would need that too
    first = min(chained | {definition.position})
    # Each task's backward moves up to its loss: what else it reads (a weight, a divisor) must
    # already hold the value it has at the original backward.
    for term, chain in zip(terms, chains):
        own = set().union(*(_written(record) for record in chain))
        moved = {record.position for record in chain}
        needed = (graph.reads(backward.statement) - {definition.name}) | graph.reads(term.expression)
        if any(_written(r) & (needed - own) for r in loop.body
               if first <= r.position < backward.position and r.position not in moved):
            return None
    moved_clears: list[LoopStatement] = []
    between = [r for r in loop.body if first < r.position < backward.position and r.position not in chained
               and r.position != definition.position]
    chain_reads: set[str] = set().union(*(graph.reads(r.statement) for chain in chains for r in chain))
    for record in between:
        kinds = {e.kind for e in loop.events if e.position == record.position}
        if record.block is not block:
            return None
        if kinds == {EventKind.CLEAR} and alone_on_its_line(record):
            moved_clears.append(record)
            continue
        if kinds:
            return None
        # The chains move up past this statement: none may need what it writes, and it may not
        # draw random numbers (a forward with dropout would draw others) or act otherwise.
        if _written(record) & chain_reads or not _calls_only_passable(graph, record):
            return None
    anchor = _statement_at(loop, first).statement
    order = sorted(zip(terms, chains), key=lambda pair: min([r.position for r in pair[1]] or [definition.position]))
    combination = strip_scaling(definition.value)
    if not inline and _in_order([chain for _, chain in order], moved_clears):
        # Each task's statements already come one after the other: its backward goes right after
        # them, and nothing moves (the blank lines and comments between them stay).
        edits: list[Edit] = [InsertAfter(max(chain, key=lambda r: r.position).statement, _backward_for(
            backward, definition.name, _scaled_like(definition.value, combination, term.expression), graph))
            for term, chain in order]
        edits.append(Remove(backward.statement))
        edits.append(Replace(definition.value, _detached(definition.value)))
        return Fix(Applicability.SAFE, "Backpropagate each loss right after it is computed", tuple(edits))
    edits = [InsertBefore(anchor, record.statement) for record in moved_clears]
    for term, chain in order:
        edits += [InsertBefore(anchor, record.statement) for record in chain]
        loss: cst.BaseExpression = term.expression
        if id(term) in inline:
            name = inline[id(term)]
            edits.append(InsertBefore(anchor, f"{name} = {code_of(term.expression)}"))
            loss = cst.Name(name)
        # `(a + b) / 2`: each task's loss keeps the scaling around the sum, `a / 2` (it is linear)
        edits.append(InsertBefore(anchor, _backward_for(backward, definition.name,
                                                        _scaled_like(definition.value, combination, loss), graph)))
    edits += [Remove(record.statement) for record in moved_clears]
    edits += [Remove(record.statement) for chain in chains for record in chain]
    edits.append(Remove(backward.statement))
    value = definition.value
    named = {id(term.expression): cst.Name(inline[id(term)]) for term in terms if id(term) in inline}
    if named:  # the sum of the named losses: no forward runs twice
        value = value.visit(_Renamed(named))  # type: ignore[assignment]
    edits.append(Replace(definition.value, _detached(value)))
    return Fix(Applicability.SAFE, "Backpropagate each loss right after it is computed", tuple(edits))


def _detached(value: cst.BaseExpression) -> cst.BaseExpression:
    text = code_of(value)
    return cst.parse_expression(f"({text}).detach()" if not value.lpar else f"{text}.detach()")


def _in_order(chains: list[list[LoopStatement]], clears: list[LoopStatement]) -> bool:
    """Every chain's statements come before the next chain's, and every clear between them runs
    before the first chain ends (so before the first backward put after it)."""
    if not chains or not all(chains):
        return False
    ends = [max(r.position for r in chain) for chain in chains]
    starts = [min(r.position for r in chain) for chain in chains]
    return all(end < start for end, start in zip(ends, starts[1:])) and all(c.position < ends[0] for c in clears)


def _scaled_like(value: cst.BaseExpression, combination: cst.BaseExpression,
                 term: cst.BaseExpression) -> cst.BaseExpression:
    """`value` (the sum scaled by weights and divisions) with the sum `combination` in it
    replaced by one of its terms."""
    if value is combination:
        return term
    if isinstance(term, (cst.BinaryOperation, cst.UnaryOperation)) and not term.lpar:
        term = term.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return value.deep_replace(combination, term)  # type: ignore[return-value]


class _Renamed(cst.CSTTransformer):
    def __init__(self, names: dict[int, cst.Name]) -> None:
        super().__init__()
        self.names = names

    def on_leave(self, original_node, updated_node):  # type: ignore[override]
        return self.names.get(id(original_node), updated_node)


def _bound_with_graphs(graph: GraphFlow, terms: list[_Term], before: int) -> set[str]:
    """Names bound before `before` that carry a graph (another task's forward output)."""
    names: set[str] = set()
    for term in terms:
        for read in graph.reads(term.expression):
            if "." not in read and graph.definitions(read, before) and graph.forwards(cst.Name(read), before):
                names.add(read)
    return names


def _statement_at(loop: TrainingLoop, position: int) -> LoopStatement:
    return loop.body[position]


def _changes(graph: GraphFlow, record: LoopStatement, name: str) -> bool:
    """`record` rebinds `name` or changes it in place (`name.mul_(0.5)`)."""
    if name in _written(record):
        return True
    return any(isinstance(call.func, cst.Attribute) and call.func.attr.value.endswith("_")
               and dotted_name(call.func.value) == name
               for call in graph.facts.tree.find(record.statement, cst.Call))


# Calls that draw no random number and run no model (by the last part of their name): a
# statement holding only these may stay behind when a task's forward moves up past it.
_PASSABLE_CALLS = PURE_CALLS | {
    "print", "str", "repr", "format", "float", "round", "abs", "min", "max", "sum", "append", "item", "detach",
    "cpu", "numpy", "tolist", "size", "dim", "numel", "argmax", "argmin", "eq", "ne", "mean", "long",
    "info", "debug", "warning", "add_scalar", "set_postfix", "set_description"}


def _calls_only_passable(graph: GraphFlow, record: LoopStatement) -> bool:
    return all((call_name(call) or "").rsplit(".", 1)[-1] in _PASSABLE_CALLS
               for call in graph.facts.tree.find(record.statement, cst.Call))


def _written(record: LoopStatement) -> set[str]:
    names: set[str] = set()
    for small in getattr(record.statement, "body", ()):
        for target in assignment_targets(small):
            text = dotted_name(target)
            if text:
                names.add(text)
            elif isinstance(target, (cst.Tuple, cst.List)):
                names.update(dotted_name(e.value) or "" for e in target.elements)
    return names - {""}


def _chain(graph: GraphFlow, term: _Term, before: int) -> list[LoopStatement] | None:
    """The statements that compute a task's loss from its forward, in order."""
    found: dict[int, LoopStatement] = {}
    pending = [(term.name, before)]
    while pending:
        name, limit = pending.pop()
        assert name is not None
        definitions = graph.definitions(name, limit)
        if not definitions or not graph.forwards(cst.Name(name), limit):
            continue  # loop data: stays where it is
        if len(definitions) != 1:
            return None
        definition = definitions[0]
        if not graph.forwards(definition.value, definition.position) <= term.forwards:
            return None
        found[definition.position] = definition.statement
        for read in graph.reads(definition.value):
            if "." not in read:
                pending.append((read, definition.position))
    return [found[position] for position in sorted(found)]


def _backward_for(backward: Event, combined: str, term: cst.BaseExpression, graph: GraphFlow) -> str:
    """The original backward statement with the combined loss replaced by one task's term."""
    statement = backward.statement
    targets = [n for n in graph.facts.tree.find(backward.node, cst.Name) if n.value == combined]
    replacement = term
    if isinstance(term, cst.BinaryOperation) and not term.lpar:
        replacement = term.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    updated = statement
    for target in targets:
        updated = updated.deep_replace(target, replacement)  # type: ignore[assignment]
    updated = updated.with_changes(leading_lines=[])
    return cst.Module(body=[]).code_for_node(updated).strip()
