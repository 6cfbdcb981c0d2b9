from __future__ import annotations

from typing import Iterator

import libcst as cst

from gacclint.fixes.edits import Edit, Remove, Replace
from gacclint.loops.model import ConditionKind, Division, DivisionForm, Event, EventKind, TrainingLoop
from gacclint.loops.vocabulary import code_of, dotted_name
from gacclint.rules.base import Applicability, Finding, Fix, Invalid, Rule, Valid
from gacclint.rules.common import read_after_the_backward


class DoubleScaledLoss(Rule):
    """
    ## What it does
    Checks for a loss divided by the accumulation count by hand and then
    handed to a framework that divides it again: `accelerator.backward` with
    gradient accumulation on (inside `accumulate()`, or an `Accelerator` built
    with `gradient_accumulation_steps`), or a DeepSpeed engine's `backward`.
    The divisor must visibly be that framework's count (the value handed to
    `Accelerator(gradient_accumulation_steps=...)`, the accelerator's own
    `gradient_accumulation_steps` (which its `backward` divides by, wherever
    it was set, so any accelerator division by it counts), a DeepSpeed config's
    `"gradient_accumulation_steps"` or that entry read back from the
    configuration the engine was built with, the engine's own
    `gradient_accumulation_steps()`, also behind accelerate) or the loop's own
    boundary count; a divisor the module cannot tie to it is left alone, and so
    is an engine's `backward(..., scale_wrt_gas=False)`, which does not divide.

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
    accumulation count are touched. A division inside a function of the
    module that makes the loss is reported at the call, without a fix: its
    other callers would change too.
    """

    code = "GA204"
    name = "double-scaled-loss"

    VALID = [
        Valid("""
accelerator = Accelerator()
model, optimizer = accelerator.prepare(model, optimizer)
k = accelerator.gradient_accumulation_steps
for it in range(max_iters):
    for micro_step in range(k):
        x, y = get_batch("train")
        loss = model(x, y) / k
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
""", "the accelerator's count, but the tensor's own backward: the manual division is the only one"),
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
        Valid("""
model_engine, optimizer, _, _ = deepspeed.initialize(model=model, config=args.deepspeed_config)
for batch in loader:
    loss = model_engine(batch) / args.gradient_accumulation_steps
    model_engine.backward(loss)
    model_engine.step()
""", "the engine's accumulation count is not visible: whether the division repeats it is unknown"),
        Valid("""
ds_config = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 4}
model_engine, optimizer, _, _ = deepspeed.initialize(model=model, config=ds_config)
for batch in loader:
    loss = model_engine(batch) / ds_config["gradient_accumulation_steps"]
    model_engine.backward(loss, scale_wrt_gas=False)
    model_engine.step()
""", "`scale_wrt_gas=False`: the engine leaves the loss as it is, the manual division is the only one"),
    ]
    INVALID = [
        Invalid("""
accelerator = Accelerator()
if accelerator.state.deepspeed_plugin is not None:
    args.accum = accelerator.state.deepspeed_plugin.deepspeed_config["gradient_accumulation_steps"]
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for step, batch in enumerate(loader):
    loss = model(**batch).loss / args.accum
    accelerator.backward(loss)
    if (step + 1) % args.accum == 0 or step == len(loader) - 1:
        optimizer.step()
        optimizer.zero_grad()
""", fixed=None, applicability=None,
            why="the count is DeepSpeed's only when the plugin is set: without it the division is the only one, so "
                "removing it would be wrong there"),
        Invalid("""
def train(accelerator, model, optimizer, loader):
    for batch in loader:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            loss = loss / accelerator.gradient_accumulation_steps
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
""", fixed="""
def train(accelerator, model, optimizer, loader):
    for batch in loader:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
""", why="the accelerator's own count, asked of the object whose backward divides by it"),
        Invalid("""
accelerator = Accelerator()
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for batch in loader:
    loss = model(**batch).loss
    accelerator.backward(loss / accelerator.gradient_accumulation_steps)
    optimizer.step()
    optimizer.zero_grad()
""", fixed="""
accelerator = Accelerator()
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for batch in loader:
    loss = model(**batch).loss
    accelerator.backward(loss)
    optimizer.step()
    optimizer.zero_grad()
""", why="`accelerator.backward` divides by the accelerator's count wherever it was set (a config file, the environment)"),
        Invalid("""
accelerator = Accelerator(gradient_accumulation_steps=gradient_accumulation_steps)
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss / gradient_accumulation_steps)
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
accelerator = Accelerator(gradient_accumulation_steps=gradient_accumulation_steps)
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
"""),
        Invalid("""
k = accelerator.state.deepspeed_plugin.deepspeed_config["gradient_accumulation_steps"]
for step, batch in enumerate(loader):
    loss = model(**batch).loss
    loss = loss / k
    accelerator.backward(loss)
    if (step + 1) % k == 0 or step == len(loader) - 1:
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
k = accelerator.state.deepspeed_plugin.deepspeed_config["gradient_accumulation_steps"]
for step, batch in enumerate(loader):
    loss = model(**batch).loss
    accelerator.backward(loss)
    if (step + 1) % k == 0 or step == len(loader) - 1:
        optimizer.step()
        optimizer.zero_grad()
""", why="the count is DeepSpeed's own, behind accelerate: its engine divides too"),
        Invalid("""
cfg = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": args.gradient_accumulation_steps}
model_engine, optimizer, _, _ = deepspeed.initialize(model=model, config=cfg)
for batch in loader:
    loss = model_engine(batch)
    loss = loss / args.gradient_accumulation_steps  # average
    model_engine.backward(loss)
    model_engine.step()
""", fixed="""
cfg = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": args.gradient_accumulation_steps}
model_engine, optimizer, _, _ = deepspeed.initialize(model=model, config=cfg)
for batch in loader:
    loss = model_engine(batch)
    model_engine.backward(loss)
    model_engine.step()
"""),
        Invalid("""
model_engine, optimizer, _, _ = deepspeed.initialize(args=args, model=model, model_parameters=params)
k = model_engine.gradient_accumulation_steps()
for batch in loader:
    loss = model_engine(batch)
    loss = loss / k
    model_engine.backward(loss)
    model_engine.step()
""", fixed="""
model_engine, optimizer, _, _ = deepspeed.initialize(args=args, model=model, model_parameters=params)
k = model_engine.gradient_accumulation_steps()
for batch in loader:
    loss = model_engine(batch)
    model_engine.backward(loss)
    model_engine.step()
""", why="the engine's own count, asked of it: its backward divides by the same"),
        Invalid("""
ds_config = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 4}
model_engine, optimizer, _, _ = deepspeed.initialize(model=model, config=ds_config)
for batch in loader:
    loss = model_engine(batch)
    model_engine.backward(loss / ds_config["gradient_accumulation_steps"])
    model_engine.step()
""", fixed="""
ds_config = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 4}
model_engine, optimizer, _, _ = deepspeed.initialize(model=model, config=ds_config)
for batch in loader:
    loss = model_engine(batch)
    model_engine.backward(loss)
    model_engine.step()
""", why="the count read back from the configuration the engine was built with"),
        Invalid("""
def forward_pass(model, batch, args):
    return model(batch).loss / args.accum


def train(model, loader, optimizer, args):
    accelerator = Accelerator(gradient_accumulation_steps=args.accum)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for batch in loader:
        with accelerator.accumulate(model):
            loss = forward_pass(model, batch, args)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
""", why="the function that makes the loss divides it by the count accelerate divides by too; removed "
            "there, its other callers would change too"),
        Invalid("""
accelerator = Accelerator(gradient_accumulation_steps=4)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(batch)
        accelerator.backward(loss.div(4))
        optimizer.step()
        optimizer.zero_grad()
""", fixed="""
accelerator = Accelerator(gradient_accumulation_steps=4)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for batch in loader:
    with accelerator.accumulate(model):
        loss = model(batch)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
""", why="`loss.div(4)` divides as `/ 4` does"),
        Invalid("""
accelerator = Accelerator(gradient_accumulation_steps=k)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
history = []
for step, (x, y) in enumerate(loader):
    loss = F.mse_loss(model(x), y) / k
    accelerator.backward(loss)
    if (step + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
    history.append(loss.item() * k)
""", fixed="""
accelerator = Accelerator(gradient_accumulation_steps=k)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
history = []
for step, (x, y) in enumerate(loader):
    loss = F.mse_loss(model(x), y)
    accelerator.backward(loss)
    if (step + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
    history.append(loss.item() * k)
""", applicability=Applicability.UNSAFE,
            why="divided twice; the fix is unsafe: the loop logs `loss` after the backward, and without the division "
                "it logs `k` times what it did"),
        Invalid("""
def train_one_epoch(model, loader, opt, accum_steps, accelerator):
    for x in loader:
        with accelerator.accumulate(model):
            loss = model(x).pow(2).mean() / accum_steps
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad()


def main(args):
    accelerator = Accelerator(gradient_accumulation_steps=args.accum)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    for epoch in range(3):
        train_one_epoch(model, loader, opt, args.accum, accelerator)
""", fixed="""
def train_one_epoch(model, loader, opt, accum_steps, accelerator):
    for x in loader:
        with accelerator.accumulate(model):
            loss = model(x).pow(2).mean()
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad()


def main(args):
    accelerator = Accelerator(gradient_accumulation_steps=args.accum)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    for epoch in range(3):
        train_one_epoch(model, loader, opt, args.accum, accelerator)
""", why="the parameter is handed accelerate's count at the one call site (RULES.md, facts along calls)"),
    ]

    def check(self, loop: TrainingLoop, model) -> Iterator[Finding]:
        for event in loop.events:
            if event.kind is not EventKind.BACKWARD or event.loss_flow is None:
                continue
            framework = _dividing_framework(event, loop, model.facts)
            if framework is None:
                continue
            counts = {code_of(b.k).strip() for _, b in _boundaries(loop)}
            for division in event.loss_flow.divisions:
                # the framework's own count, or the loop's boundary count (the same window)
                if (model.facts.framework_count(division.divisor) is None and not _owners_count(division.divisor, event)
                        and division.divisor_text.strip() not in counts
                        and division.divisor_text.strip() not in loop.framework_counts_handed):
                    continue
                # A count that is the framework's only under a test: without it, the division is the only one.
                switched = model.facts.count_set_under_test(division.divisor_text.strip())
                yield self.finding(
                    f"the loss is divided by `{division.divisor_text}` by hand and again by {framework}: "
                    "gradients end up that many times too small",
                    division.operation, None if switched else _fix(division, read_after_the_backward(loop, division)))
            for helper in event.loss_flow.helper_divisions:
                if helper.divisor_text not in model.facts.framework_counts and helper.divisor_text not in counts:
                    continue
                # Removed there, the division would be gone for every other caller of the function too.
                yield self.finding(
                    f"the loss is divided by `{helper.divisor_text}` by hand (in `{helper.function}`) and again by "
                    f"{framework}: gradients end up that many times too small", helper.call, None)


def _boundaries(loop: TrainingLoop):
    for variant in loop.variants:
        for step in variant.steps:
            if step.guard.boundary is not None and not step.guard.boundary.framework:
                yield variant, step.guard.boundary


def _dividing_framework(event: Event, loop: TrainingLoop, facts) -> str | None:
    divisors = [d.divisor for d in (event.loss_flow.divisions if event.loss_flow else ())]
    if event.framework in {"accelerate", "deepspeed"} and any(facts.framework_count(d) == "deepspeed" for d in divisors):
        return "the DeepSpeed engine"
    if event.framework == "accelerate":
        if facts.accelerator_gas or event.accumulate_context is not None or any(
                facts.framework_count(d) == "accelerate" or _owners_count(d, event)
                or code_of(d).strip() in loop.framework_counts_handed for d in divisors):
            return "`accelerator.backward`"
        return None
    if event.framework == "deepspeed":
        # A step the user guards by hand means DeepSpeed is not accumulating
        # (its accumulation count is 1) and the manual division is the only one.
        engine_steps = [e for e in loop.events if e.kind is EventKind.STEP and e.framework == "deepspeed"]
        if engine_steps and all(c.kind is ConditionKind.SWITCH for e in engine_steps for c in e.conditions):
            return "the DeepSpeed engine"
    return None


def _owners_count(divisor: cst.BaseExpression, event: Event) -> bool:
    """`accelerator.backward(loss / accelerator.gradient_accumulation_steps)`: the count of the very
    object whose backward divides by it, however that object was made."""
    call = event.node
    return (type(divisor) is cst.Attribute and divisor.attr.value == "gradient_accumulation_steps"
            and isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute)
            and dotted_name(divisor.value) is not None and dotted_name(divisor.value) == dotted_name(call.func.value))


def _fix(division: Division, read_later: str | None) -> Fix | None:
    edits: tuple[Edit, ...]
    statement = division.statement
    alone = isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1
    if division.form is DivisionForm.AUGASSIGN or (division.form is DivisionForm.ASSIGN and division.self_assignment):
        if not alone:
            return None
        edits = (Remove(statement),)
    else:
        operation = division.operation
        if isinstance(operation, cst.Call):  # `loss.div(k)` -> `loss`, `torch.div(loss, k)` -> `loss`
            func = operation.func
            dividend = operation.args[0].value if len(operation.args) == 2 else func.value  # type: ignore[attr-defined]
            edits = (Replace(operation, dividend),)
        else:
            assert isinstance(operation, cst.BinaryOperation)
            edits = (Replace(operation, operation.left.with_changes(lpar=operation.lpar, rpar=operation.rpar)
                             if not operation.left.lpar else operation.left),)
    if read_later is not None:
        return Fix(Applicability.UNSAFE, f"Remove the division by `{division.divisor_text}`; unsafe: `{read_later}` "
                   "is read elsewhere in the loop too, and what it holds there changes", edits)
    return Fix(Applicability.SAFE, f"Remove the division by `{division.divisor_text}`", edits)
