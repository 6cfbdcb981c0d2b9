"""Small helpers shared by rules: spelling code and choosing what a fix may touch."""

from __future__ import annotations

import libcst as cst

from gacclint.loops.model import Boundary, Division, Event, EventKind, LoopStatement, LoopVariant, ResolvedEvent, TrainingLoop
from gacclint.loops.model import ConditionKind, GuardKind, Shape
from gacclint.loops.vocabulary import code_of



def alone_on_its_line(event: Event | LoopStatement) -> bool:
    """The statement can be moved or removed as a whole: one small statement on its own line."""
    statement = event.statement
    return event.editable and isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1


def atom(node: cst.BaseExpression) -> str:
    """Source text safe to put next to an operator (parenthesised unless atomic)."""
    text = code_of(node)
    if isinstance(node, (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float)) or node.lpar:
        return text
    return f"({text})"


def divides_evenly(loop: TrainingLoop, boundary: Boundary, facts) -> bool:
    """`len(loader) % k == 0`, provable from literals in the module or visible in the code, or
    every pass ending on a boundary as the loop runs (`if step // k >= len(dl) // k: break`)."""
    if "".join(boundary.k_text.split()) in loop.length_multiples:
        return True  # `range(steps * k)`, or `assert len(dl) % k == 0` before the loop
    if boundary.schedule is not None and boundary.schedule.whole_windows:
        return True
    length = loop.iterable.literal_length
    if length is None:
        return False
    k = boundary.k_literal
    if k is None:
        k = facts.evaluate_int(boundary.k, loop.node, loop.function)
    return bool(k) and length % k == 0


def boundary_steps(variant: LoopVariant) -> list[ResolvedEvent]:
    return [step for step in variant.steps if step.event.framework is None]


def step_for(variant: LoopVariant, receiver: str | None) -> ResolvedEvent | None:
    """The step a clear belongs after: same optimizer, else the first step."""
    steps = boundary_steps(variant)
    return next((s for s in steps if s.event.receiver == receiver), steps[0] if steps else None)


def clears_after(variant: LoopVariant, step: ResolvedEvent, receiver: str | None) -> bool:
    """A clear of the same receiver already sits in the step's block, after it."""
    return any(
        e.kind is EventKind.CLEAR and e.event.order > step.event.order and e.guard == step.guard
        and e.event.receiver == receiver
        for e in variant.events
    )


def fresh_name(loop: TrainingLoop, preferred: str) -> str:
    if preferred not in loop.bound_names:
        return preferred
    for candidate in (f"{preferred}_size", f"accum_{preferred}"):
        if candidate not in loop.bound_names:
            return candidate
    index = 2
    while f"{preferred}_{index}" in loop.bound_names:
        index += 1
    return f"{preferred}_{index}"


def read_after_the_backward(loop: TrainingLoop, division: Division) -> str | None:
    """The name a division binds (`loss = criterion(out, y) / k`), where a statement of the loop
    other than a backward multiplies it by the divisor again before its next binding
    (`history.append(loss.item() * k)`: the undivided loss, logged): a fix of that division makes
    the statement log a wrong value. A plain read (`tr_loss += loss.item()`, the window's share
    of the mean) stays right, and more so in the final window. The name too where the division
    is not a statement of the loop's own (what reads it is not visible)."""
    name = division.binds
    graph = loop.graph
    if name is None:
        return None
    at = next((record.position for record in loop.body if record.statement is division.statement), None)
    if at is None or graph is None:
        return name
    backwards = {id(event.statement) for event in loop.events if event.kind is EventKind.BACKWARD}
    for record in loop.body:
        if record.position <= at or id(record.statement) in backwards:
            continue
        if graph.reassigned_between(name, at, record.position):
            break
        if name in graph.reads_before_binding(record.statement) and graph.scales_back(
                record.statement, name, division.divisor_text):
            return name
        if graph.reassigned_between(name, at, record.position + 1):
            break
    return None


def looks_like_accumulation_count(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in ("accum", "accumulation", "grad_acc", "gradient_acc", "micro"))


# -- step hygiene (GA401, GA403, GA404, GA501): once per step, not per micro-batch --


def per_micro_batch(loop: TrainingLoop, kind: EventKind):
    """(variant, event, steps) for each `kind` event that runs on every micro-batch
    of an accumulation window while the optimizer steps once per window.

    The windows are the GA1xx/GA2xx ones: `accumulation_variants()` (boundary
    guards, counters, early `continue`s, flags; framework-managed variants
    skipped) and the nanoGPT inner micro-step loop. `steps` are the window's
    boundary steps, in order.
    """
    if loop.shape is Shape.INNER_WINDOW:
        for variant in loop.variants:
            if variant.managed:
                continue
            steps = [s for s in boundary_steps(variant) if not s.event.in_window_loop and not s.event.in_inner_loop
                     and s.guard.kind is GuardKind.NONE]
            if not steps:
                continue
            for event in variant.of(kind):
                if event.event.in_window_loop and not event.event.in_inner_loop and event.guard.kind is GuardKind.NONE:
                    yield variant, event, steps
        return
    for variant, _ in loop.accumulation_variants():
        steps = boundary_steps(variant)
        for event in variant.of(kind):
            if event.guard.kind is GuardKind.NONE and not event.event.in_inner_loop:
                yield variant, event, steps


def switches_of(event: Event) -> frozenset[tuple[str, bool]]:
    return frozenset((c.text, c.polarity) for c in event.conditions if c.kind is ConditionKind.SWITCH)


def bare_call(event: Event) -> bool:
    """The statement is the call alone (`clip_grad_norm_(...)`, not `norm = clip_grad_norm_(...)`)."""
    statement = event.statement
    return (alone_on_its_line(event) and isinstance(statement.body[0], cst.Expr)  # type: ignore[union-attr]
            and statement.body[0].value is event.node)  # type: ignore[union-attr]


def can_move_to(event: Event, anchor: ResolvedEvent) -> bool:
    """Moving `event` next to `anchor` changes only how often it runs: it is a
    bare call on its own line, the anchor is editable, and both sit under the
    same configuration switches (moving out of `if args.fp16:` would change
    which configurations run it)."""
    return (bare_call(event) and anchor.event.editable and not anchor.event.in_inner_loop
            and switches_of(event) == switches_of(anchor.event))


def same_block_after(variant: LoopVariant, anchor: ResolvedEvent, kinds: set[EventKind]) -> list[ResolvedEvent]:
    """Events of `kinds` that follow `anchor` under the same guard and switches, before the next backward."""
    found: list[ResolvedEvent] = []
    for later in variant.events[variant.events.index(anchor) + 1:]:
        if later.kind is EventKind.BACKWARD:
            break
        if (later.kind in kinds and later.guard == anchor.guard
                and later.event.in_window_loop == anchor.event.in_window_loop
                and switches_of(later.event) == switches_of(anchor.event)):
            found.append(later)
    return found


def backpropagated_names(loop: TrainingLoop, graph) -> set[str]:
    """Names whose values reach a backward of the loop (gacclint/loops/graphs.py's GraphFlow
    `graph`), through the definitions in between, or a backward after the loop."""
    reached: set[str] = set()
    pending = [name for event in loop.events if event.kind is EventKind.BACKWARD and event.loss is not None
               for name in graph.reads(event.loss)] + list(loop.backpropagated_after)
    while pending:
        name = pending.pop()
        if name not in reached:
            reached.add(name)
            for definition in graph.all_definitions(name):
                pending.extend(graph.reads(definition.value))
            for value in graph.put_into(name):  # `losses[t] = pred_losses[t]`, then `sum(losses).backward()`
                pending.extend(graph.reads(value))
    return reached


def clear_text(event: Event) -> str:
    """How a message names a clear: `opt.zero_grad()`, or the code that clears (`reset(opt)`, `p.grad = None`)."""
    if event.by_helper or event.receiver == "params":  # `reset(opt)`, `p.grad = None`
        return code_of(event.node)
    return f"{event.receiver}.zero_grad()"


def within(module: str, ancestor: str) -> bool:
    """`module` is `ancestor` or one of its submodules (`generator.module.style` within `generator`):
    a clear of `ancestor` clears its parameters."""
    return module == ancestor or module.startswith(ancestor + ".")
