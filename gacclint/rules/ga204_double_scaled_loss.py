from __future__ import annotations

from typing import Iterator

import libcst as cst

from gacclint.fixes.edits import Edit, Remove, Replace
from gacclint.loops.model import ConditionKind, Division, DivisionForm, Event, EventKind, TrainingLoop
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import looks_like_accumulation_count


class DoubleScaledLoss(Rule):
    """
    ## What it does
    Checks for a loss divided by the accumulation count by hand and then
    handed to a framework that divides it again: `accelerator.backward` with
    gradient accumulation on (inside `accumulate()`, or an `Accelerator` built
    with `gradient_accumulation_steps`), or a DeepSpeed engine's `backward`.

    ## Why is this bad?
    The framework already divides by the accumulation count, so the
    gradients end up `k` times too small: the same as a learning rate `k`
    times smaller.

    ## Example
    ```python
    accelerator = Accelerator(gradient_accumulation_steps=4)
    for batch in loader:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss / 4)
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    accelerator = Accelerator(gradient_accumulation_steps=4)
    for batch in loader:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Fix safety
    Safe: the manual division is removed (the whole `loss = loss / k` line,
    or just `/ k` inside an expression). Only divisors that name the
    accumulation count are touched.
    """

    code = "GA204"
    name = "double-scaled-loss"

    VALID = [
        Valid("""
accelerator = Accelerator()
for step, batch in enumerate(loader):
    loss = model(**batch).loss / args.gradient_accumulation_steps
    accelerator.backward(loss)
    if (step + 1) % args.gradient_accumulation_steps == 0 or step == len(loader) - 1:
        optimizer.step()
        optimizer.zero_grad()
""", "accelerate without gradient accumulation divides nothing: the manual division is the only one"),
        Valid("""
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(**batch).loss / temperature
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
""", "a divisor that is not the accumulation count"),
    ]
    INVALID = [
        Invalid("""
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss / gradient_accumulation_steps)
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
"""),
        Invalid("""
model_engine, optimizer, _, _ = deepspeed.initialize(model=model, config=cfg)
for batch in loader:
    loss = model_engine(batch)
    loss = loss / args.gradient_accumulation_steps  # average
    model_engine.backward(loss)
    model_engine.step()
""", fixed="""
model_engine, optimizer, _, _ = deepspeed.initialize(model=model, config=cfg)
for batch in loader:
    loss = model_engine(batch)
    model_engine.backward(loss)
    model_engine.step()
"""),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        for event in loop.events:
            if event.kind is not EventKind.BACKWARD or event.loss_flow is None:
                continue
            framework = _dividing_framework(event, loop, model.facts.accelerator_gas)
            if framework is None:
                continue
            for division in event.loss_flow.divisions:
                if not looks_like_accumulation_count(division.divisor_text):
                    continue
                yield self.finding(
                    f"the loss is divided by `{division.divisor_text}` by hand and again by {framework}: "
                    "gradients end up that many times too small",
                    division.operation, _fix(division))


def _dividing_framework(event: Event, loop: TrainingLoop, accelerator_gas: bool) -> str | None:
    if event.framework == "accelerate":
        if accelerator_gas or any(".accumulate(" in context for context in event.contexts):
            return "`accelerator.backward`"
        return None
    if event.framework == "deepspeed":
        # A step the user guards by hand means DeepSpeed is not accumulating
        # (its accumulation count is 1) and the manual division is the only one.
        engine_steps = [e for e in loop.events if e.kind is EventKind.STEP and e.framework == "deepspeed"]
        if engine_steps and all(c.kind is ConditionKind.SWITCH for e in engine_steps for c in e.conditions):
            return "the DeepSpeed engine"
    return None


def _fix(division: Division) -> Fix | None:
    edits: tuple[Edit, ...]
    statement = division.statement
    alone = isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1
    if division.form is DivisionForm.AUGASSIGN or (division.form is DivisionForm.ASSIGN and division.self_assignment):
        if not alone:
            return None
        edits = (Remove(statement),)
    else:
        operation = division.operation
        assert isinstance(operation, cst.BinaryOperation)
        edits = (Replace(operation, operation.left.with_changes(lpar=operation.lpar, rpar=operation.rpar)
                         if not operation.left.lpar else operation.left),)
    return Fix(Applicability.SAFE, f"Remove the division by `{division.divisor_text}`", edits)
