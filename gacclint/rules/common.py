"""Small helpers shared by rules: spelling code and choosing what a fix may touch."""

from __future__ import annotations

import libcst as cst

from gacclint.loops.model import Boundary, Event, EventKind, LoopVariant, ResolvedEvent, TrainingLoop
from gacclint.loops.vocabulary import code_of



def alone_on_its_line(event: Event) -> bool:
    """The event's statement can be moved or removed as a whole."""
    statement = event.statement
    return event.editable and isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1


def atom(node: cst.BaseExpression) -> str:
    """Source text safe to put next to an operator (parenthesised unless atomic)."""
    text = code_of(node)
    if isinstance(node, (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float)) or node.lpar:
        return text
    return f"({text})"


def divides_evenly(loop: TrainingLoop, boundary: Boundary, facts) -> bool:
    """`len(loader) % k == 0`, provable from literals in the module."""
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


def looks_like_accumulation_count(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in ("accum", "accumulation", "grad_acc", "gradient_acc", "micro"))
