"""Rewrite a module's training loops, in memory, so that a probe can watch them.

Why instrument the user's own loop instead of recording each micro-batch's
inputs and recomputing the large batch on a copy of the model: the loss of a
real loop is arbitrary code (several criteria, auxiliary terms, masks, label
smoothing, a model that returns its own loss), which a replay would have to
guess; dropout and other randomness would draw different masks in a replay;
and a copy of a large model on the GPU may not fit. Taking the gradient of the
loop's own *raw* loss, on its own graph, before its own backward, has none of
these problems: the reference is exactly what that micro-batch contributes to
the large-batch gradient, whatever the loss is.

The rewrite changes expressions only, never adds statements, so every line of
the rewritten module keeps its number (tracebacks point at the user's code):

* the micro-batch loop's iterable `loader` becomes `P.iterate(site, loader)`
  (a `while` test becomes `P.tick(site, test)`): each item starts a
  micro-batch, whose sample count is the leading dimension of the item's
  first tensor, and each pass over the iterable is counted;
* the backward's loss `X` (in `X.backward()`, `scaler.scale(X).backward()`,
  `torch.autograd.backward(X)`) becomes `P.backward_loss(site, X, scaler)`,
  which takes `torch.autograd.grad` of the raw loss with `retain_graph=True`
  before the user's backward runs;
* each step call `opt.step()` / `scaler.step(opt)` becomes
  `P.stepped(P.stepping(site, lambda: opt, lambda: k) or opt.step())`, so a
  step the GradScaler skips is seen too, and `--steps N` can stop after it;
* a clip call `clip_grad_norm_(...)` becomes `P.clipping(site) or clip_...(...)`:
  clipping changes `.grad` exactly as it would change the large batch's, so
  the gradients are compared as they reach the clip;
* divisions and multiplications by *accumulation factors* (`loss / k`,
  `loss / window`, `loss * x.size(0) / window_samples`) become
  `P.div(site, a, b)` / `P.mul(site, a, b, mask)`: they compute the same value
  and remember its numerator, so that the probe can walk back from the backward
  loss to the raw loss before the accumulation scaling, even when that scaling
  is wrong (which is what verify must detect). Any other arithmetic (a
  temperature, `(l1 + l2) / 2`, a loss weight) is part of the user's loss.

A factor is an accumulation factor when it mentions the step boundary's `k`,
a name that looks like an accumulation count (`accum`, `grad_acc`, ...), or a
name bound from such an expression (`window = min(k, ...)`); a multiplier may
also be a sample count (`x.size(0)`, `len(batch)`, `.shape[0]`). Names are not
values: the probe still checks at run time that the factor side does not
require grad and the other side does.

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
from gacclint.rules.common import looks_like_accumulation_count
from gacclint.runtime.errors import CannotVerify

PROBE = "__gacclint_probe__"
"""The global name the rewritten code calls; the runner binds it to the probe."""

LEFT, RIGHT = 1, 2
"""`P.mul` mask bits: which operand may be a scaling factor."""

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
    model = build_model(module)
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
    if loop.framework_managed:
        frameworks = ", ".join(sorted(loop.frameworks))
        return (f"framework-managed loop ({frameworks}): the framework scales, steps and clears; "
                "verify checks plain PyTorch loops")
    if isinstance(loop.node, cst.For) and loop.node.asynchronous is not None:
        return "`async for` loops are not supported"
    if not any(event.kind is EventKind.BACKWARD and event.loss is not None for event in loop.events):
        return "no backward whose loss gacclint can see"
    return None


# --------------------------------------------------------------------------
# Accumulation factors
# --------------------------------------------------------------------------


class _Factors:
    """Which expressions are accumulation factors or sample counts (by the names they read)."""

    def __init__(self, facts: ModuleFacts, base: set[str]) -> None:
        self.facts = facts
        self.accumulation = self._closure(base, self._mentions_accumulation)
        self.samples = self._closure(set(), self._counts_samples)

    def _names(self, node: cst.CSTNode) -> set[str]:
        found: set[str] = set()
        for inner in self.facts.tree.find(node, cst.Name, cst.Attribute, enter_scopes=False):
            text = dotted_name(inner)  # type: ignore[arg-type]
            if text:
                found.add(text)
        return found

    def _closure(self, names: set[str], test: Callable[[cst.CSTNode, set[str]], bool]) -> set[str]:
        """`names`, plus every name bound (anywhere in the module) from an expression passing `test`."""
        names = set(names)
        for _ in range(_MAX_CLOSURE_ROUNDS):
            grown = {name for name, bindings in self.facts.bindings.items() if name not in names
                     and any(b.tuple_index is None and test(b.value, names) for b in bindings)}
            if not grown:
                break
            names |= grown
        return names

    def _mentions_accumulation(self, node: cst.CSTNode, names: set[str]) -> bool:
        return any(name in names or looks_like_accumulation_count(name) for name in self._names(node))

    def _counts_samples(self, node: cst.CSTNode, names: set[str]) -> bool:
        for inner in self.facts.tree.find(node, cst.Call, cst.Subscript, cst.Attribute, cst.Name, enter_scopes=False):
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
            elif isinstance(inner, cst.Name) and inner.value in names:
                return True
        return False

    def is_accumulation(self, node: cst.CSTNode) -> bool:
        return self._mentions_accumulation(node, self.accumulation)

    def is_multiplier(self, node: cst.CSTNode) -> bool:
        return self.is_accumulation(node) or self._counts_samples(node, self.samples)


def _boundary_names(loop: TrainingLoop, facts: ModuleFacts) -> set[str]:
    """The names that spell the loop's `k`: the boundary's, the micro-step range's."""
    names: set[str] = set()

    def add(node: cst.CSTNode | None) -> None:
        if node is None:
            return
        for inner in facts.tree.find(node, cst.Name, cst.Attribute, enter_scopes=False):
            text = dotted_name(inner)  # type: ignore[arg-type]
            if text:
                names.add(text)
        text = dotted_name(node) if isinstance(node, (cst.Name, cst.Attribute)) else None
        if text:
            names.add(text)

    for event in loop.events:
        for condition in event.conditions:
            if condition.kind is ConditionKind.BOUNDARY and condition.boundary is not None:
                add(condition.boundary.k)
    add(loop.window_k)
    if loop.shape is Shape.INNER_WINDOW and isinstance(loop.node, cst.For):
        add(loop.node.iter)
    return names


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
        factors = _Factors(self.facts, _boundary_names(loop, self.facts))
        self._scaling(loop.window_loop or loop.node, factors)

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

        def wrap(call: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(call, cst.BaseExpression)
            before = _probe("stepping", literal, receiver, _thunk(k))
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

    def _scaling(self, container: cst.CSTNode, factors: _Factors) -> None:
        for node in self.facts.tree.find(container, cst.BinaryOperation, cst.AugAssign, enter_scopes=False):
            if isinstance(node, cst.BinaryOperation):
                if isinstance(node.operator, cst.Divide) and factors.is_accumulation(node.right):
                    self._divide(node)
                elif isinstance(node.operator, cst.Multiply):
                    mask = (LEFT if factors.is_multiplier(node.left) else 0) | (
                        RIGHT if factors.is_multiplier(node.right) else 0)
                    if mask:
                        self._multiply(node, mask)
            elif isinstance(node.target, (cst.Name, cst.Attribute)):
                if isinstance(node.operator, cst.DivideAssign) and factors.is_accumulation(node.value):
                    self._in_place(node, "div", None)
                elif isinstance(node.operator, cst.MultiplyAssign) and factors.is_multiplier(node.value):
                    self._in_place(node, "mul", RIGHT)

    def _divide(self, node: cst.BinaryOperation) -> None:
        site = self._site("scale", node)
        if site is None:
            return
        literal = cst.Integer(str(site))

        def wrap(updated: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(updated, cst.BinaryOperation)
            return _probe("div", literal, updated.left, updated.right)

        self._wrap(node, wrap, order=0)

    def _multiply(self, node: cst.BinaryOperation, mask: int) -> None:
        site = self._site("scale", node)
        if site is None:
            return
        literal = cst.Integer(str(site))

        def wrap(updated: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(updated, cst.BinaryOperation)
            return _probe("mul", literal, updated.left, updated.right, cst.Integer(str(mask)))

        self._wrap(node, wrap, order=0)

    def _in_place(self, node: cst.AugAssign, method: str, mask: int | None) -> None:
        """`loss /= k` -> `loss = P.div(site, loss, k)` (same line, same value)."""
        site = self._site("scale", node)
        if site is None:
            return
        literal = cst.Integer(str(site))

        def wrap(updated: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(updated, cst.AugAssign)
            args: list[cst.BaseExpression] = [literal, updated.target.deep_clone(), updated.value]
            if mask is not None:
                args.append(cst.Integer(str(mask)))
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
