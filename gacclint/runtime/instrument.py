"""Rewrite a module's training loops, in memory, so that a probe can watch them.

The measurement itself needs no rewrite: while the code runs, the probe
(:mod:`gacclint.runtime.probe`) wraps `torch.autograd.backward`, so it sees the
tensor every backward starts from (the user's, or the one a framework such as
accelerate builds), hooks the parameters' gradients, and compares at each
optimizer step. The rewrite adds what only the source knows, changing
expressions only, never adding statements, so every line keeps its number
(tracebacks point at the user's code):

* the micro-batch loop's iterable `loader` becomes `P.iterate(site, loader)`
  (a `while` test becomes `P.tick(site, test)`): each item starts a
  micro-batch, whose sample count is the leading dimension of the item's
  first tensor, and each pass over the iterable is counted;
* the backward's loss `X` (in `X.backward()`, `scaler.scale(X).backward()`,
  `accelerator.backward(X)`) becomes `P.backward_loss(site, X)`, which names
  the line of the backward that follows;
* each step call `opt.step()` / `scaler.step(opt)` becomes
  `P.stepped(P.stepping(site, lambda: opt, lambda: k, through_scaler) or opt.step())`,
  so a step the GradScaler skips is seen too, and `--steps N` can stop after it;
* a clip call `clip_grad_norm_(...)` becomes `P.clipping(site) or clip_...(...)`;
* every `a / b` and `a * b` in the loop becomes `P.div(site, a, b, class)` /
  `P.mul(site, a, b, class_a, class_b)`: the same value, whose autograd node
  the probe tags with what the source says about the factor (see `SCHEDULE`,
  `LITERAL`, `OPAQUE`): derived from the step schedule by data flow, a
  number, or something only its run-time value can explain. Names are never
  read for meaning.

This module does not import PyTorch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from gacclint.engine import SourceError, parse
from gacclint.loops.facts import ModuleFacts
from gacclint.loops.find import build_model
from gacclint.loops.model import ConditionKind, Event, EventKind, Shape, TrainingLoop
from gacclint.loops.vocabulary import code_of, dotted_name
from gacclint.runtime.errors import CannotVerify

PROBE = "__gacclint_probe__"
"""The global name the rewritten code calls; the runner binds it to the probe."""

_SIMPLE_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*(\[\s*-?\d+\s*\])?$")
_MAX_CLOSURE_ROUNDS = 10


@dataclass(frozen=True)
class Site:
    """A place in the source that the rewrite instruments."""

    index: int
    kind: str
    """`loop`, `backward`, `step`, `clip` or `scale`."""
    line: int
    text: str
    """The source line it is on, stripped."""
    code: str
    """The instrumented code itself (its first line): `loss / k`, `optimizer.step()`."""


@dataclass(frozen=True)
class Instrumented:
    """Rewritten code, ready to compile."""

    code: str
    """The whole module rewritten; for one function, its `def` alone (without
    decorators) padded with blank lines. Every line keeps its number."""
    sites: tuple[Site, ...]
    skipped: tuple[str, ...]
    """Training loops left as they are, each with why (framework-managed, async)."""
    function_name: str | None = None


def instrument(source: bytes | str, function: str | None = None) -> Instrumented:
    """Rewrite the training loops of `source` (those of `function` only, when given).

    `function` is a module-level function name or `Class.method`. Raises
    :class:`CannotVerify` when there is nothing gacclint can instrument.
    """
    try:
        module = parse(source.encode("utf-8") if isinstance(source, str) else source)
    except SourceError as error:
        raise CannotVerify(f"cannot parse: {error}") from None
    target = _find_function(module, function) if function is not None else None
    try:
        model = build_model(module)
    except RecursionError:
        raise CannotVerify("the file nests too deeply for gacclint's loop model") from None
    except Exception as error:  # noqa: BLE001 - the loop model's own failure: could not verify
        raise CannotVerify(f"gacclint's loop model failed on this file ({type(error).__name__}: {error})") from None
    loops = [loop for loop in model.loops if target is None or _inside(loop, target, model.facts)]
    if not loops:
        where = f"function `{function}`" if function else "this file"
        raise CannotVerify(
            f"no training loop in {where} that gacclint can read (a `for`/`while` loop whose body calls "
            "backward); point verify at the file that holds the loop, or at `file.py::function`")
    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    builder = _Builder(module, model.facts, positions)
    skipped: list[str] = []
    for loop in loops:
        why = _unsupported(loop)
        if why:
            skipped.append(f"line {builder.line_of(loop.node)}: {why}")
            continue
        builder.add_loop(loop)
    if not builder.sites:
        raise CannotVerify("no training loop gacclint can verify: " + "; ".join(skipped))
    rewriter = _Rewriter(builder.wrappers)
    if target is None:
        return Instrumented(code=module.visit(rewriter).code, sites=tuple(builder.sites), skipped=tuple(skipped))
    rewritten = target.visit(rewriter)
    assert isinstance(rewritten, cst.FunctionDef)
    alone = module.with_changes(header=(), footer=(),
                                body=[rewritten.with_changes(decorators=(), leading_lines=())]).code
    return Instrumented(code="\n" * (positions[target.name].start.line - 1) + alone, sites=tuple(builder.sites),
                        skipped=tuple(skipped), function_name=target.name.value)


# --------------------------------------------------------------------------
# Which loops
# --------------------------------------------------------------------------


def _find_function(module: cst.Module, qualified: str) -> cst.FunctionDef:
    body: tuple[cst.CSTNode, ...] = tuple(module.body)
    parts = qualified.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        wanted = cst.FunctionDef if last else cst.ClassDef
        found = [node for node in body if isinstance(node, wanted) and node.name.value == part]
        if not found:
            kind = "function" if last else "class"
            raise CannotVerify(f"no {kind} `{part}` at the top level of {'.'.join(parts[:depth]) or 'the file'}")
        node = found[-1]  # a later definition replaces an earlier one at run time
        if last:
            assert isinstance(node, cst.FunctionDef)
            return node
        assert isinstance(node, cst.ClassDef)
        body = tuple(node.body.body) if isinstance(node.body, cst.IndentedBlock) else ()
    raise CannotVerify(f"no function `{qualified}`")


def _inside(loop: TrainingLoop, function: cst.FunctionDef, facts: ModuleFacts) -> bool:
    return any(node is loop.node for node in facts.tree.walk(function.body, enter_scopes=False))


def _unsupported(loop: TrainingLoop) -> str | None:
    if isinstance(loop.node, cst.For) and loop.node.asynchronous is not None:
        return "`async for` loops are not supported"
    return None


# --------------------------------------------------------------------------
# Scaling factors: what the source says about each one (never its name)
# --------------------------------------------------------------------------

OPAQUE, SCHEDULE, LITERAL = 0, 1, 2
"""Static classes of a factor that multiplies or divides a value in the loop.

`SCHEDULE`: the expression reads the step schedule (the boundary's `k`, the
micro-step loop's range, or a value computed from them, followed through
assignments), or is a sample count used as a multiplier (`x.size(0)`,
`len(batch)`, `.shape[0]`): an accumulation factor. `LITERAL`: numbers only
(a task average `/ 2`, a loss weight `* 0.5`): part of the loss, unless the
number is the boundary's literal `k`. `OPAQUE`: anything else (a method's
result, a token budget, a helper's count): the probe decides at run time, by
value, whether it is the window's size or the window's sample or token count
(an accumulation factor) or a constant of the loss."""


class _Factors:
    """Classify scaling factors by data flow from the step schedule."""

    def __init__(self, facts: ModuleFacts, schedule: set[str], k_literal: int | None) -> None:
        self.facts = facts
        self.k_literal = k_literal
        self._cache: dict[int, set[str]] = {}
        self.schedule = self._closure(schedule) if schedule else set()

    def _names(self, node: cst.CSTNode) -> set[str]:
        cached = self._cache.get(id(node))
        if cached is not None:
            return cached
        found: set[str] = set()
        for inner in self.facts.tree.find(node, cst.Name, cst.Attribute, enter_scopes=False):
            text = dotted_name(inner)  # type: ignore[arg-type]
            if text:
                found.add(text)
        self._cache[id(node)] = found
        return found

    def _closure(self, names: set[str]) -> set[str]:
        """`names`, plus every name bound (anywhere in the module) from an expression reading them."""
        names = set(names)
        for _ in range(_MAX_CLOSURE_ROUNDS):
            grown = {name for name, bindings in self.facts.bindings.items() if name not in names
                     and any(b.tuple_index is None and self._names(b.value) & names for b in bindings)}
            if not grown:
                break
            names |= grown
        return names

    def classify(self, node: cst.CSTNode) -> int:
        if self._names(node) & self.schedule:
            return SCHEDULE
        literal = _literal_value(node)
        if literal is not None:
            return SCHEDULE if self.k_literal is not None and literal == self.k_literal else LITERAL
        return OPAQUE

    def classify_multiplier(self, node: cst.CSTNode) -> int:
        found = self.classify(node)
        if found == OPAQUE and _counts_samples(node, self.facts):
            return SCHEDULE
        return found


_DIVIDING_FRAMEWORKS = {"accelerate", "deepspeed"}


def _literal_value(node: cst.CSTNode) -> float | None:
    """The value of an expression made of numbers only (`2`, `0.5`, `1 / 4`, `-3`)."""
    if isinstance(node, (cst.Integer, cst.Float)):
        try:
            return float(node.evaluated_value)
        except (ValueError, OverflowError):
            return None
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, (cst.Minus, cst.Plus)):
        value = _literal_value(node.expression)
        return None if value is None else (-value if isinstance(node.operator, cst.Minus) else value)
    if isinstance(node, cst.BinaryOperation):
        left, right = _literal_value(node.left), _literal_value(node.right)
        if left is None or right is None:
            return None
        operator = node.operator
        if isinstance(operator, cst.Add):
            return left + right
        if isinstance(operator, cst.Subtract):
            return left - right
        if isinstance(operator, cst.Multiply):
            return left * right
        if isinstance(operator, cst.Divide) and right != 0:
            return left / right
    return None


def _counts_samples(node: cst.CSTNode, facts: ModuleFacts) -> bool:
    """`x.size(0)`, `len(batch)`, `x.shape[0]`, `loader.batch_size`."""
    for inner in facts.tree.find(node, cst.Call, cst.Subscript, cst.Attribute, enter_scopes=False):
        if isinstance(inner, cst.Call):
            func = inner.func
            if isinstance(func, cst.Attribute) and func.attr.value == "size":
                return True
            if isinstance(func, cst.Name) and func.value == "len":
                return True
        elif isinstance(inner, cst.Subscript):
            if isinstance(inner.value, cst.Attribute) and inner.value.attr.value == "shape":
                return True
        elif isinstance(inner, cst.Attribute) and inner.attr.value == "batch_size":
            return True
    return False


def _schedule(loop: TrainingLoop, facts: ModuleFacts) -> tuple[set[str], int | None]:
    """The names that spell the loop's `k` (the boundary's, the micro-step range's), and a literal `k`."""
    names: set[str] = set()
    literal: int | None = None

    def add(node: cst.CSTNode | None) -> None:
        nonlocal literal
        if node is None:
            return
        for inner in facts.tree.find(node, cst.Name, cst.Attribute, enter_scopes=False):
            text = dotted_name(inner)  # type: ignore[arg-type]
            if text:
                names.add(text)
        text = dotted_name(node) if isinstance(node, (cst.Name, cst.Attribute)) else None
        if text:
            names.add(text)
        value = _literal_value(node)
        if value is not None and value.is_integer() and value > 1:
            literal = int(value)

    for event in loop.events:
        for condition in event.conditions:
            if condition.kind is ConditionKind.BOUNDARY and condition.boundary is not None \
                    and not condition.boundary.framework:
                add(condition.boundary.k)
    add(loop.window_k)
    if loop.shape is Shape.INNER_WINDOW and isinstance(loop.node, cst.For):
        iterable = loop.node.iter
        if isinstance(iterable, cst.Call) and call_name_of(iterable) == "range":
            for arg in iterable.args:
                add(arg.value)
        else:
            add(iterable)
    # Names of the loop's own variables are never `k` (`range` excluded above).
    names -= {"range", "len", "min", "max"}
    return names, literal


def call_name_of(node: cst.Call) -> str | None:
    return dotted_name(node.func) if isinstance(node.func, (cst.Name, cst.Attribute)) else None


# --------------------------------------------------------------------------
# Building the rewrite
# --------------------------------------------------------------------------

Wrap = Callable[[cst.CSTNode], cst.CSTNode]


def _probe(method: str, *args: cst.BaseExpression) -> cst.Call:
    return cst.Call(func=cst.Attribute(value=cst.Name(PROBE), attr=cst.Name(method)),
                    args=[cst.Arg(value=arg) for arg in args])


def _thunk(text: str | None) -> cst.BaseExpression:
    """`lambda: <text>`: evaluated by the probe, which survives a NameError."""
    if text is None:
        return cst.Name("None")
    try:
        body = cst.parse_expression(text)
    except cst.ParserSyntaxError:
        return cst.Name("None")
    return cst.Lambda(params=cst.Parameters(), body=body)


def _reference(text: str | None) -> cst.BaseExpression:
    """The object a step or scaler names, when it is a plain reference (`opt`, `self.opts[0]`)."""
    if text is None or not _SIMPLE_REFERENCE.match(text):
        return cst.Name("None")
    return _thunk(text)


class _Builder:
    def __init__(self, module: cst.Module, facts: ModuleFacts, positions) -> None:
        self.module = module
        self.facts = facts
        self.positions = positions
        self.lines = module.code.splitlines()
        self.sites: list[Site] = []
        self.wrappers: dict[int, list[tuple[int, Wrap]]] = {}
        self.claimed: set[tuple[int, str]] = set()

    def _site(self, kind: str, node: cst.CSTNode) -> int | None:
        """A new site for `node`, or None when another loop already instruments it."""
        if (id(node), kind) in self.claimed:
            return None
        self.claimed.add((id(node), kind))
        line = self.line_of(node)
        anchor = _anchor(node)
        text = self.lines[line - 1].strip() if line <= len(self.lines) else ""
        position = self.positions[anchor]
        if position.start.line == position.end.line and position.start.line <= len(self.lines):
            code = [self.lines[position.start.line - 1][position.start.column:position.end.column]]
        else:
            code = self.module.code_for_node(anchor).strip().splitlines()
        self.sites.append(Site(len(self.sites), kind, line, text, code[0] if code else text))
        return len(self.sites) - 1

    def line_of(self, node: cst.CSTNode) -> int:
        return int(self.positions[_anchor(node)].start.line)

    def _wrap(self, node: cst.CSTNode, wrap: Wrap, order: int = 1) -> None:
        """Wrappers of one node apply by `order`: the arithmetic first, then what reads its value."""
        self.wrappers.setdefault(id(node), []).append((order, wrap))

    def add_loop(self, loop: TrainingLoop) -> None:
        node = loop.node
        site = self._site("loop", node)
        if site is not None:
            literal = cst.Integer(str(site))
            if isinstance(node, cst.For):
                self._wrap(node.iter, lambda n: _probe("iterate", literal, n))  # type: ignore[arg-type]
            else:
                self._wrap(node.test, lambda n: _probe("tick", literal, n))  # type: ignore[arg-type]
        for event in loop.events:
            if event.kind is EventKind.BACKWARD and event.loss is not None:
                self._backward(event)
            elif event.kind is EventKind.STEP:
                self._step(event, loop)
            elif event.kind is EventKind.CLIP and isinstance(event.node, cst.Call):
                self._clip(event)
        schedule, k_literal = _schedule(loop, self.facts)
        # A division handed to a framework's backward that divides by its own accumulation
        # count (accelerate, DeepSpeed) is an accumulation factor, whatever it is spelled with.
        forced = {id(division.operation) for event in loop.events
                  if event.kind is EventKind.BACKWARD and event.framework in _DIVIDING_FRAMEWORKS
                  and event.loss_flow is not None for division in event.loss_flow.divisions}
        self._scaling(loop.window_loop or loop.node, _Factors(self.facts, schedule, k_literal), forced)

    def _backward(self, event: Event) -> None:
        assert event.loss is not None
        site = self._site("backward", event.node)
        if site is None:
            return
        scaler = _reference(event.via_scaler)
        literal = cst.Integer(str(site))
        self._wrap(event.loss, lambda n: _probe("backward_loss", literal, n, scaler))  # type: ignore[arg-type]

    def _step(self, event: Event, loop: TrainingLoop) -> None:
        site = self._site("step", event.node)
        if site is None:
            return
        k = _step_k(event, loop)
        literal = cst.Integer(str(site))
        receiver = _reference(event.receiver)

        through_scaler = cst.Name("True" if event.via_scaler else "False")

        def wrap(call: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(call, cst.BaseExpression)
            before = _probe("stepping", literal, receiver, _thunk(k), through_scaler)
            return _probe("stepped", cst.BooleanOperation(left=before, operator=cst.Or(), right=call))

        self._wrap(event.node, wrap)

    def _clip(self, event: Event) -> None:
        site = self._site("clip", event.node)
        if site is None:
            return
        literal = cst.Integer(str(site))

        def wrap(call: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(call, cst.BaseExpression)
            return cst.BooleanOperation(left=_probe("clipping", literal), operator=cst.Or(), right=call)

        self._wrap(event.node, wrap)

    def _scaling(self, container: cst.CSTNode, factors: _Factors, forced: set[int]) -> None:
        """Every `*` and `/` in the loop: the probe tags the autograd node it makes with the
        factor's static class, and walks those nodes back from each backward."""
        for node in self.facts.tree.find(container, cst.BinaryOperation, cst.AugAssign, enter_scopes=False):
            if isinstance(node, cst.BinaryOperation):
                if isinstance(node.operator, cst.Divide):
                    self._binary(node, "div", [SCHEDULE if id(node) in forced else factors.classify(node.right)])
                elif isinstance(node.operator, cst.Multiply):
                    self._binary(node, "mul", [factors.classify_multiplier(node.left),
                                               factors.classify_multiplier(node.right)])
            elif isinstance(node.target, (cst.Name, cst.Attribute)):
                if isinstance(node.operator, cst.DivideAssign):
                    self._in_place(node, "div", [SCHEDULE if id(node) in forced else factors.classify(node.value)])
                elif isinstance(node.operator, cst.MultiplyAssign):
                    self._in_place(node, "mul", [OPAQUE, factors.classify_multiplier(node.value)])

    def _binary(self, node: cst.BinaryOperation, method: str, classes: list[int]) -> None:
        site = self._site("scale", node)
        if site is None:
            return
        literal = cst.Integer(str(site))
        tags = [cst.Integer(str(value)) for value in classes]

        def wrap(updated: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(updated, cst.BinaryOperation)
            return _probe(method, literal, updated.left, updated.right, *tags)

        self._wrap(node, wrap, order=0)

    def _in_place(self, node: cst.AugAssign, method: str, classes: list[int]) -> None:
        """`loss /= k` -> `loss = P.div(site, loss, k, class)` (same line, same value)."""
        site = self._site("scale", node)
        if site is None:
            return
        literal = cst.Integer(str(site))
        tags = [cst.Integer(str(value)) for value in classes]

        def wrap(updated: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(updated, cst.AugAssign)
            args: list[cst.BaseExpression] = [literal, updated.target.deep_clone(), updated.value, *tags]
            return cst.Assign(targets=[cst.AssignTarget(target=updated.target)], value=_probe(method, *args))

        self._wrap(node, wrap, order=0)


def _anchor(node: cst.CSTNode) -> cst.CSTNode:
    """A loop's own position starts at the comments above it; its target or test does not."""
    if isinstance(node, cst.For):
        return node.target
    if isinstance(node, cst.While):
        return node.test
    return node


def _step_k(event: Event, loop: TrainingLoop) -> str | None:
    """How the step's `k` is spelled: its boundary's, or the micro-step loop's range."""
    if loop.shape is Shape.INNER_WINDOW:
        return code_of(loop.window_k) if loop.window_k is not None else None
    for condition in event.conditions:
        if condition.kind is ConditionKind.BOUNDARY and condition.boundary is not None:
            return condition.boundary.k_text
    return None


class _Rewriter(cst.CSTTransformer):
    def __init__(self, wrappers: dict[int, list[tuple[int, Wrap]]]) -> None:
        super().__init__()
        self.wrappers = wrappers

    def on_leave(self, original_node: cst.CSTNode, updated_node: cst.CSTNode):  # type: ignore[override]
        result = updated_node
        for _, wrap in sorted(self.wrappers.get(id(original_node), ()), key=lambda pair: pair[0]):
            result = wrap(result)
        return result
