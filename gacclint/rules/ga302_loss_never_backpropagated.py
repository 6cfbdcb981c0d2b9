from __future__ import annotations

from typing import Iterator

import libcst as cst

from gacclint.fixes.edits import Replace
from gacclint.loops.graphs import GraphFlow
from gacclint.loops.model import GuardKind, ResolvedEvent, TrainingLoop
from gacclint.loops.vocabulary import dotted_name
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import backpropagated_names


class LossNeverBackpropagated(Rule):
    """
    ## What it does
    Checks for an iteration that backpropagates the same loss twice (without
    `retain_graph=True`) while another loss it computed never reaches a
    backward.

    ## Why is this bad?
    The first backward frees the graph, so the second raises "Trying to
    backward through the graph a second time"; and the loss that was meant to
    be backpropagated there contributes nothing. This is the typo of the
    memory-friendly multi-task rewrite (`loss.backward()` written where
    `loss2.backward()` was meant).

    ## Example
    ```python
    for xs, ys in loader:
        optimizer.zero_grad()
        loss = loss_fn1(model1(xs), ys)
        loss.backward()
        loss2 = loss_fn2(model2(xs), ys)
        loss.backward()
        optimizer.step()
    ```

    ## Use instead
    ```python
    for xs, ys in loader:
        optimizer.zero_grad()
        loss = loss_fn1(model1(xs), ys)
        loss.backward()
        loss2 = loss_fn2(model2(xs), ys)
        loss2.backward()
        optimizer.step()
    ```

    ## Fix safety
    Unsafe: the finding is certain, but which loss was meant is a guess. The
    fix is offered only when exactly one orphaned loss lies between the two
    backwards; the second backward then uses it.
    """

    code = "GA302"
    name = "loss-never-backpropagated"

    VALID = [
        Valid("""
for x, y in loader:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward(retain_graph=True)
    aux = aux_loss(model(x), y)
    loss.backward()
    optimizer.step()
""", "retain_graph=True: the graph is backpropagated twice on purpose"),
        Valid("""
for x, y in loader:
    optimizer.zero_grad()
    loss = loss_fn1(model1(x), y)
    loss.backward()
    loss = loss_fn2(model2(x), y)
    loss.backward()
    optimizer.step()
""", "the name is reassigned: two different graphs"),
        Valid("""
for x, y in loader:
    optimizer.zero_grad()
    loss1 = loss_fn1(model1(x), y)
    loss1.backward()
    loss2 = loss_fn2(model2(x), y)
    loss2.backward()
    errD = loss1 + loss2
    optimizer.step()
""", "a logging-only sum after the backwards"),
        Valid("""
for x, y in loader:
    loss1 = loss_fn(model(x + delta), y)
    with amp.scale_loss(loss1, optimizer) as scaled_loss:
        scaled_loss.backward()
    loss2 = loss_fn(model(x + delta.detach()), y)
    optimizer.zero_grad()
    with amp.scale_loss(loss2, optimizer) as scaled_loss:
        scaled_loss.backward()
    optimizer.step()
""", "each `with ... as scaled_loss` binds the name anew: two losses, each backpropagated once"),
        Valid("""
for x, y in loader:
    optimizer.zero_grad()
    aux = loss_fn(model(x), y)
    loss = loss_fn(model(x), y)
    scaler.scale(loss).backward() if use_amp else loss.backward()
    optimizer.step()
""", "the two arms of a conditional expression: one backward runs"),
    ]
    INVALID = [
        Invalid("""
for idx, data in enumerate(train_loader):
    xs, ys = data
    optimizer.zero_grad()
    pred1 = model1(xs)  # graph 1
    loss = loss_fn1(pred1, ys)
    loss.backward()
    pred2 = model2(xs)  # graph 2
    loss2 = loss_fn2(pred2, ys)
    loss.backward()
    optimizer.step()
""", fixed="""
for idx, data in enumerate(train_loader):
    xs, ys = data
    optimizer.zero_grad()
    pred1 = model1(xs)  # graph 1
    loss = loss_fn1(pred1, ys)
    loss.backward()
    pred2 = model2(xs)  # graph 2
    loss2 = loss_fn2(pred2, ys)
    loss2.backward()
    optimizer.step()
""", applicability=Applicability.UNSAFE, why="seed 000, Edition 2"),
        Invalid("""
for x, y in loader:
    optimizer.zero_grad()
    loss = crit(net1(x), y)
    loss_b = crit(net2(x), y)
    loss.backward()
    loss.backward()
    optimizer.step()
""", fixed=None, applicability=None, why="the orphan comes before the first backward: which one was meant is unclear"),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        graph = loop.graph
        if graph is None:
            return
        reported: set[int] = set()
        for variant in loop.variants:
            backwards = [b for b in variant.backwards if not b.event.in_inner_loop and b.guard.kind is not GuardKind.OPAQUE]
            for first, second in zip(backwards, backwards[1:]):
                if id(second.event.node) in reported:
                    continue
                name = _loss_name(first)
                if name is None or name != _loss_name(second) or first.event.retain_graph or first.guard != second.guard:
                    continue
                if first.event.excludes(second.event):
                    continue  # `scaler.scale(loss).backward() if amp else loss.backward()`: one of them runs
                if graph.reassigned_between(name, first.event.position, second.event.position):
                    continue
                orphans = _orphans(loop, graph, second.event.position)
                if not orphans:
                    continue
                reported.add(id(second.event.node))
                between = [o for o in orphans if first.event.position < o[1] < second.event.position]
                fix = None
                if len(between) == 1 and second.event.loss is not None:
                    orphan = between[0][0]
                    fix = Fix(Applicability.UNSAFE, f"Backpropagate `{orphan}` instead",
                              (Replace(second.event.loss, cst.Name(orphan)),))
                names = ", ".join(f"`{o[0]}`" for o in orphans)
                yield self.finding(
                    f"`{name}` is backpropagated a second time (its graph was freed by the first backward) while "
                    f"{names} is computed and never backpropagated",
                    second.event.node, fix)


def _loss_name(backward: ResolvedEvent) -> str | None:
    loss = backward.event.loss
    if loss is None or backward.event.via_scaler is not None and not isinstance(loss, cst.Name):
        return None
    return dotted_name(loss) if isinstance(loss, (cst.Name, cst.Attribute)) else None


def _orphans(loop: TrainingLoop, graph: GraphFlow, before: int) -> list[tuple[str, int]]:
    """Losses of this iteration that carry a graph and reach no backward, with where they are set."""
    reached = backpropagated_names(loop, graph)
    found = []
    for record in loop.body:
        if record.position >= before or record.without_grad or record.in_inner_loop:
            continue
        for small in getattr(record.statement, "body", ()):
            if not (isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name)):
                continue
            name = small.targets[0].target.value
            if name in reached or not graph.is_reduced_loss(small.value, record.position):
                continue
            if graph.carries_graph(small.value, record.position):
                found.append((name, record.position))
    return found

