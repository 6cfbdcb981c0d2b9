"""Reading `if` tests: configuration switch, accumulation boundary, or opaque.

A boundary is recognisably "every k-th micro-batch" (RULES.md, *guard*). A
switch is a test nothing in the loop changes. Everything else is opaque and
no finding is ever built on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import libcst as cst

from gacclint.loops.model import Boundary, Condition, ConditionKind, Counter
from gacclint.loops.tree import Tree
from gacclint.loops.vocabulary import PURE_CALLS, call_name, code_of, dotted_name, integer_value

_END_OF_DATA_WORDS = re.compile(r"(^|_)(last|end|final|is_last|end_of)(_|$)|last|end_of_data|end_of_dataloader")


@dataclass
class GuardContext:
    """What a test is read against: the loop's counters and what it changes."""

    counters: dict[str, Counter]
    varying: set[str]  # names and dotted names assigned inside the loop
    tree: Tree
    aliases: dict[str, cst.BaseExpression] = field(default_factory=dict)  # should_step = <expr>

    def is_varying(self, text: str) -> bool:
        if text in self.varying:
            return True
        # `batch.size` varies when `batch` does; `self.step` when `self.step` is assigned.
        parts = text.split(".")
        return any(".".join(parts[:i]) in self.varying for i in range(1, len(parts)))


def classify(expression: cst.BaseExpression, polarity: bool, context: GuardContext) -> list[Condition]:
    """Classify one test into conditions (an `and` under True splits in two)."""
    text = code_of(expression)
    inner = expression  # libcst keeps parentheses on the node itself
    if isinstance(inner, cst.UnaryOperation) and isinstance(inner.operator, cst.Not):
        # A switch keeps its own text, so that `if x:` and `if not x:` are one switch in two
        # positions; a boundary is shown as written.
        return [c if c.kind is ConditionKind.SWITCH else _with_text(c, text)
                for c in classify(inner.expression, not polarity, context)]
    if isinstance(inner, cst.BooleanOperation) and isinstance(inner.operator, cst.And) and polarity:
        return classify(inner.left, True, context) + classify(inner.right, True, context)
    if isinstance(inner, cst.Name) and inner.value in context.aliases:
        aliased = context.aliases[inner.value]
        found = classify(aliased, polarity, context)
        if len(found) == 1 and found[0].kind is ConditionKind.BOUNDARY:
            return [_with_text(found[0], text)]
        if len(found) == 1 and found[0].kind is ConditionKind.SWITCH:
            return [Condition(expression, text, polarity, ConditionKind.SWITCH)]
        return [Condition(expression, text, polarity, ConditionKind.OPAQUE)]
    boundary, negated = read_boundary(inner, context)
    if boundary is not None:
        return [Condition(expression, text, polarity != negated, ConditionKind.BOUNDARY, boundary)]
    # `not args.accumulate or (i + 1) % k == 0`, `(args.accum and (i + 1) % k == 0) or not args.accum`:
    # a boundary in the variants where the switches let it decide, every micro-batch (or never)
    # in the others.
    switches: list[cst.BaseExpression] = []
    rest: list[cst.BaseExpression] = []
    for term in _or_terms(inner):
        parts = _and_terms(term)
        # Not a test of the data's length (`len(dl) <= k and ...`): the sampled lengths decide it.
        switched = [part for part in parts if is_switch(part, context)
                    and not any(isinstance(found, cst.Call) for found in context.tree.walk(part))]
        switches += switched
        deciding = [part for part in parts if not any(part is switch for switch in switched)]
        if switched and deciding and (len(deciding) > 1 or _read_modulo_test(deciding[0], context) is None):
            # `epoch >= 0 and i + 1 == len(dl)`: only a switch beside the modulo test splits
            # the loop; one beside an end-of-data clause stays part of it
            switches = switches[:len(switches) - len(switched)]
            rest.append(term)
        elif deciding:
            rest.append(deciding[0])
    if switches and rest and not any(isinstance(term, cst.BooleanOperation) and isinstance(term.operator, cst.And)
                                     for term in rest):
        found, negated = read_boundary(rest[0], context) if len(rest) == 1 else _read_or_terms(rest, inner, context)
        if found is not None and not negated:
            bases = []
            for switch in switches:
                while isinstance(switch, cst.UnaryOperation) and isinstance(switch.operator, cst.Not):
                    switch = switch.expression  # `not x` and `x` are one switch
                bases.append(switch)
            return [Condition(expression, text, polarity, ConditionKind.BOUNDARY,
                              _replace(found, expression=inner), tuple(bases))]
    if is_switch(inner, context):
        return [Condition(expression, text, polarity, ConditionKind.SWITCH)]
    return [Condition(expression, text, polarity, ConditionKind.OPAQUE)]


def _with_text(condition: Condition, text: str) -> Condition:
    return Condition(condition.expression, text, condition.polarity, condition.kind, condition.boundary)


def is_switch(node: cst.BaseExpression, context: GuardContext) -> bool:
    """True when nothing the loop does can change the test's value."""
    for found in context.tree.walk(node):
        if isinstance(found, cst.Call):
            name = call_name(found) or ""
            if name.rsplit(".", 1)[-1] not in PURE_CALLS:
                return False
        elif isinstance(found, (cst.Yield, cst.Await, cst.NamedExpr)):
            return False
    return not any(context.is_varying(text) or text in context.counters for text in context.tree.names_read(node))


def is_framework_boundary(node: cst.BaseExpression) -> bool:
    """`accelerator.sync_gradients`: true on the micro-batches where accelerate's `accumulate()` steps."""
    return type(node) is cst.Attribute and node.attr.value == "sync_gradients"


def read_boundary(node: cst.BaseExpression, context: GuardContext) -> tuple[Boundary | None, bool]:
    """Read `(i + 1) % k == 0 [or end-of-data]`; returns (boundary, negated)."""
    if is_framework_boundary(node):
        return Boundary(k=node, k_text="", k_literal=None, counter=None, test=None, modulo=None,
                        offset=0, remainder=0, end_of_data=None, expression=node, framework=True), False
    terms = _or_terms(node)
    if len(terms) > 1:
        return _read_or_terms(terms, node, context)
    read = _read_modulo_test(node, context)
    if read is None:
        return None, False
    return _replace(read[0], expression=node, negated=read[1]), read[1]


def _read_or_terms(terms: list[cst.BaseExpression], node: cst.BaseExpression,
                   context: GuardContext) -> tuple[Boundary | None, bool]:
    """A boundary `or` its end-of-data clause, spread over `terms` (`node` is the whole test)."""
    found: tuple[Boundary, bool] | None = None
    end_of_data: cst.BaseExpression | None = None
    for term in terms:
        read = _read_modulo_test(term, context)
        if read is not None and found is None:
            found = read
        elif end_of_data is None and _is_end_of_data(term, context):
            end_of_data = term
        else:
            return None, False
    if found is None or end_of_data is None or found[1]:
        return None, False
    return _replace(found[0], end_of_data=end_of_data, expression=node), False


def _replace(boundary: Boundary, **changes) -> Boundary:
    values = dict(boundary.__dict__)
    values.update(changes)
    return Boundary(**values)


def _and_terms(node: cst.BaseExpression) -> list[cst.BaseExpression]:
    if isinstance(node, cst.BooleanOperation) and isinstance(node.operator, cst.And):
        return _and_terms(node.left) + _and_terms(node.right)
    return [node]


def _or_terms(node: cst.BaseExpression) -> list[cst.BaseExpression]:
    if isinstance(node, cst.BooleanOperation) and isinstance(node.operator, cst.Or):
        return _or_terms(node.left) + _or_terms(node.right)
    return [node]


def _read_modulo_test(node: cst.BaseExpression, context: GuardContext) -> tuple[Boundary, bool] | None:
    """`(c + a) % k == r`, `not (c + a) % k`, `(c + a) % k` (truthy: negated), `!= r`."""
    negated = False
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Not):
        read = _read_modulo(node.expression, context)
        if read is None:
            return None
        return _make(read, 0, node, context), False
    if isinstance(node, cst.BinaryOperation):
        read = _read_modulo(node, context)
        if read is None:
            return None
        return _make(read, 0, node, context), True  # truthy remainder: not a boundary
    if not isinstance(node, cst.Comparison) or len(node.comparisons) != 1:
        return None
    target = node.comparisons[0]
    if isinstance(target.operator, cst.Equal):
        negated = False
    elif isinstance(target.operator, cst.NotEqual):
        negated = True
    else:
        return None
    left, right = node.left, target.comparator
    read = _read_modulo(left, context)
    other = right
    if read is None:
        read = _read_modulo(right, context)
        other = left
    if read is None:
        return None
    remainder = _read_remainder(other, read[2])
    if remainder is None:
        return None
    return _make(read, remainder, node, context), negated


def _read_remainder(node: cst.BaseExpression, k_text: str) -> int | None:
    if isinstance(node, cst.Integer) and integer_value(node) == 0:
        return 0
    # `k - 1`
    if (isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Subtract)
            and isinstance(node.right, cst.Integer) and integer_value(node.right) == 1
            and code_of(node.left) == k_text):
        return -1
    return None


def _read_modulo(node: cst.BaseExpression, context: GuardContext) -> tuple[Counter, int, str, cst.BaseExpression, cst.BinaryOperation] | None:
    """`(c + a) % k` -> (counter, a, k text, k node, modulo node)."""
    if not (isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Modulo)):
        return None
    counted = _read_counter(node.left, context)
    if counted is None:
        return None
    k = node.right
    k_text = code_of(k)
    if not is_switch(k, context):
        return None
    return counted[0], counted[1], k_text, k, node


def _read_counter(node: cst.BaseExpression, context: GuardContext) -> tuple[Counter, int] | None:
    text = dotted_name(node)
    if text is not None:
        counter = context.counters.get(text)
        return (counter, 0) if counter is not None else None
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Add, cst.Subtract)):
        if isinstance(node.right, cst.Integer):
            inner = _read_counter(node.left, context)
            if inner is None:
                return None
            amount = integer_value(node.right)
            return inner[0], inner[1] + (amount if isinstance(node.operator, cst.Add) else -amount)
        if isinstance(node.left, cst.Integer) and isinstance(node.operator, cst.Add):
            inner = _read_counter(node.right, context)
            if inner is None:
                return None
            return inner[0], inner[1] + integer_value(node.left)
    return None


def _make(read, remainder: int, test: cst.BaseExpression, context: GuardContext) -> Boundary:
    counter, offset, k_text, k, modulo = read
    k_literal = integer_value(k) if isinstance(k, cst.Integer) else None
    return Boundary(k=k, k_text=k_text, k_literal=k_literal, counter=counter, test=test, modulo=modulo,
                    offset=offset, remainder=remainder, end_of_data=None, expression=test)


def _is_end_of_data(node: cst.BaseExpression, context: GuardContext) -> bool:
    """`(i + 1) == len(loader)`, `i == n - 1`, `is_last_batch`, `step + 1 >= steps_per_epoch`.

    A compound term (`len(it) <= k and i + 1 == len(it)`) steps the tail only
    sometimes: it is not an end-of-data clause, and the guard is opaque.
    """
    if isinstance(node, (cst.BooleanOperation, cst.UnaryOperation)):
        return False
    for found in context.tree.walk(node):
        if isinstance(found, cst.Comparison):
            sides = [found.left] + [c.comparator for c in found.comparisons]
            operators = [c.operator for c in found.comparisons]
            if not all(isinstance(op, (cst.Equal, cst.GreaterThanEqual, cst.GreaterThan, cst.LessThanEqual, cst.LessThan)) for op in operators):
                continue
            if any(_read_counter(side, context) is not None for side in sides):
                return True
        if isinstance(found, (cst.Name, cst.Attribute)):
            text = dotted_name(found) or ""
            if _END_OF_DATA_WORDS.search(text.rsplit(".", 1)[-1].lower()):
                return True
    return False
