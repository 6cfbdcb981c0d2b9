"""Where the loss that reaches a backward came from, and how it was scaled.

Only the arithmetic at the top of an expression counts as scaling the loss:
`criterion(out / T, y)` divides logits by a temperature, not the loss.
Any division or multiplication of the loss on any path makes it "scaled"
(RULES.md GA201: do not second-guess a divisor).
"""

from __future__ import annotations

from typing import Sequence

import libcst as cst

from gacclint.loops.facts import ModuleFacts
from gacclint.loops.model import Division, DivisionForm, HelperDivision, LossFlow, Scaling
from gacclint.loops.vocabulary import (
    assignment_targets,
    call_name,
    code_of,
    dotted_name,
    function_statements,
    handed_argument,
    is_sum_reduction,
    own_function_name,
)

_MAX_DEPTH = 5
# Calls of these make a loss from what they are handed, and read no accumulation count.
_LIBRARY_CALLS = frozenset({"torch", "F", "nn", "np", "numpy", "math"})
_SCALING_METHODS = {"mul", "div", "mul_", "div_", "true_divide", "divide", "multiply"}
# `loss.div_(k)` as a statement of its own: the loss is scaled in place.
_IN_PLACE_SCALING = {"mul_", "div_", "true_divide_", "divide_", "multiply_"}
_PRECEDENCE = [Scaling.SCALED, Scaling.SUM_REDUCED, Scaling.UNKNOWN, Scaling.UNSCALED]


# Calls that draw random numbers: what they give cannot hold the accumulation count.
_RANDOM_DRAWS = ("np.random.", "numpy.random.", "random.", "torch.rand", "torch.distributions.")


def _combine(found: list[Scaling]) -> Scaling:
    for scaling in _PRECEDENCE:
        if scaling in found:
            return scaling
    return Scaling.UNSCALED


class _Flow:
    def __init__(self, statements: Sequence[cst.CSTNode], at: cst.CSTNode, facts: ModuleFacts,
                 function: cst.FunctionDef | None, window_caches: frozenset[str] = frozenset(),
                 dominating: frozenset[int] = frozenset()) -> None:
        self.facts = facts
        self.at = at  # the backward's statement
        self.dominating = dominating
        self.window_caches = window_caches
        self.function = function
        self.divisions: list[Division] = []
        self.handed: set[str] = set()
        self.forward_divides = False
        self.helper_divisions: list[HelperDivision] = []
        self.visited: set[tuple[str, int]] = set()
        self.binding: str | None = None  # the name the assignment being read binds
        self.data: frozenset[str] = frozenset()  # the names the loop binds to its items
        position = next((i for i, s in enumerate(statements) if s is at), len(statements))
        self.before = list(statements[:position])
        # A name read in a definition refers to what was bound before that definition.
        self.limit = len(self.before)

    def _bound(self, name: str, value: cst.BaseExpression, statement: cst.CSTNode, target: str | None,
               depth: int) -> Scaling:
        """The scaling of `value`, which the statement binds to `name` (its divisions bind it too)."""
        outer, self.binding = self.binding, name
        try:
            return self.expression(value, statement, DivisionForm.ASSIGN, target, depth)
        finally:
            self.binding = outer

    def expression(self, node: cst.BaseExpression, statement: cst.CSTNode, form: DivisionForm,
                   target: str | None, depth: int) -> Scaling:
        if isinstance(node, cst.BinaryOperation):
            if isinstance(node.operator, cst.Divide):
                self.divisions.append(Division(
                    statement=statement, operation=node, divisor=node.right, divisor_text=code_of(node.right),
                    form=form, self_assignment=target is not None and dotted_name(node.left) == target,
                    binds=self.binding if form is not DivisionForm.INLINE else None,
                ))
                self.expression(node.left, statement, form, None, depth)
                return Scaling.SCALED
            if isinstance(node.operator, cst.Multiply):
                # `crit(out, y) * lam` with `lam` an item of the data or a random draw: a weight the
                # accumulation count cannot reach (RULES.md, *what can scale a loss*)
                for weight, other in ((node.left, node.right), (node.right, node.left)):
                    if self._drawn_weight(weight) and not self._drawn_weight(other):
                        return self.expression(other, statement, form, None, depth)
                # `(loss / k) * w`: a weight; divisions on the way are still recorded
                for side in (node.left, node.right):
                    if isinstance(side, (cst.Name, cst.BinaryOperation)):
                        self.expression(side, statement, form, None, depth)
                return Scaling.SCALED
            return _combine([self.expression(node.left, statement, form, None, depth),
                             self.expression(node.right, statement, form, None, depth)])
        if isinstance(node, cst.UnaryOperation):
            return self.expression(node.expression, statement, form, None, depth)
        if isinstance(node, cst.IfExp):
            # `criterion(out, y) if mask is None else criterion(out, y, mask)`: either arm may be
            # the loss (scaled on any path is scaled); a division in one arm is not rewritten.
            arms = [self.expression(arm, statement, form, None, depth) for arm in (node.body, node.orelse)]
            return _combine(arms)
        if isinstance(node, cst.Name):
            return self.name(node.value, depth + 1)
        if isinstance(node, cst.Call):
            divided = _divided_by(node)
            if divided is not None:  # `loss.div(k)`, `torch.div(loss, k)`: a division spelled as a call
                dividend, divisor = divided
                self.divisions.append(Division(
                    statement=statement, operation=node, divisor=divisor, divisor_text=code_of(divisor), form=form,
                    self_assignment=target is not None and dotted_name(dividend) == target,
                    binds=self.binding if form is not DivisionForm.INLINE else None))
                self.expression(dividend, statement, form, None, depth)
                return Scaling.SCALED
            return self.call(node, depth)
        if isinstance(node, (cst.Attribute, cst.Subscript)):
            # `out["loss"] = out["loss"] / k` then `out["loss"].backward()`: read its assignments
            found = self.name(code_of(node), depth + 1)
            if found is Scaling.UNKNOWN and isinstance(node.value, (cst.Name, cst.Attribute)):
                # `losses = compute_loss(batch) / k` then `losses.total.backward()`: a part of the
                # divided value
                whole = self.name(code_of(node.value), depth + 1)
                if whole is Scaling.SCALED:
                    return whole
            return Scaling.UNSCALED if found is Scaling.UNKNOWN else found
        return Scaling.UNKNOWN

    def _drawn_weight(self, node: cst.BaseExpression) -> bool:
        """A number read from the loop's items or drawn at random (`lam`, `1.0 - lam`, with `lam`
        an item of the batch or `lam = np.random.beta(a, a)` in the loop), with no call of its own:
        it cannot hold the accumulation count. A literal alone (`loss * 0.25`) may be one."""
        tree = self.facts.tree
        if any(True for _ in tree.find(node, cst.Call)):
            return False
        names = tree.names_read(node)
        return bool(names) and all(name.split(".")[0] in self.data or self._drawn(name) for name in names)

    def _drawn(self, name: str) -> bool:
        """Every binding the loop makes of `name` is a random draw (`np.random.beta(a, a)`)."""
        found = [small for statement in self.before for small in getattr(statement, "body", ())
                 if name in {dotted_name(t) for t in assignment_targets(small)}]
        return bool(found) and all(
            type(small) is cst.Assign and type(small.value) is cst.Call
            and (call_name(small.value) or "").startswith(_RANDOM_DRAWS) for small in found)

    def call(self, node: cst.Call, depth: int) -> Scaling:
        if is_sum_reduction(node):
            return Scaling.SUM_REDUCED
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value in _SCALING_METHODS:
            return Scaling.SCALED  # `loss.sum().mul(scale / total)`, `loss.div(k)`
        if isinstance(func, cst.Attribute):
            if func.attr.value in {"sum", "nansum"}:
                return Scaling.SUM_REDUCED
            if func.attr.value == "mean" and dotted_name(func.value) in ("torch", "th") and node.args:
                # `torch.mean(loss.float().view(-1), 0)`: the mean of its first argument
                return self.expression(node.args[0].value, self.at, DivisionForm.INLINE, None, depth)
            if func.attr.value in {"mean", "float", "to", "squeeze", "contiguous", "double", "half", "cuda"}:
                return self.name(func.value.value, depth + 1) if isinstance(func.value, cst.Name) else Scaling.UNSCALED
        name = call_name(node) or ""
        owner, _, method = name.rpartition(".")
        if method == "scale" and len(node.args) == 1 and owner and self.facts.is_scaler(owner):
            # `scaled = scaler.scale(loss)`: AMP's loss scale, undone before the step; the loss's
            # own scaling is what it was handed
            return self.expression(node.args[0].value, self.at, DivisionForm.INLINE, None, depth)
        if name in self.facts.sum_reduced_losses:
            return Scaling.SUM_REDUCED
        if self.window_caches and any(
                (dotted_name(found) or "") in self.window_caches
                for arg in node.args for found in self.facts.tree.find(arg.value, cst.Name, cst.Attribute)):
            # Recomputed against features gathered over the window (contrastive accumulation):
            # the loss already spans the window (RULES.md GA201).
            return Scaling.SCALED
        if name == "sum":  # sum([...]) of several losses: read each
            return Scaling.UNSCALED
        # The call is handed the accumulation count: it normalises inside.
        if any("accum" in code_of(arg.value).lower() for arg in node.args):
            return Scaling.SCALED
        bodies: list[cst.FunctionDef] = []
        own = own_function_name(node)
        if own:
            # The module's function, or every override of the method (one that only raises aside).
            bodies = [f for f in self.facts.functions.get(own, ()) if not _only_raises(f)]
            if bodies and all(_divides(body, self.facts) for body in bodies):
                if len(bodies) == 1:
                    self._helper_divisions(node, name, bodies[0])
                return Scaling.SCALED
            if len(bodies) > 1 and any(_divides(body, self.facts) for body in bodies):
                return Scaling.UNKNOWN  # which override runs is not visible
        if not bodies and name in self.facts.modules_with_parameters and any(
                _divides(body, self.facts) for body in self.facts.functions.get("forward", ())):
            self.forward_divides = True  # `model(x, y)` with a `forward` here returning `loss / k`
        if not bodies and name in self.facts.modules_with_parameters:
            forwards = self.facts.instance_methods(name, "forward")
            if forwards and all(_returns_a_sum(body, self.facts) for body in forwards):
                return Scaling.SUM_REDUCED  # its class's forward returns `cross_entropy(..., reduction="sum")`
        if not bodies and name not in self.facts.modules_with_parameters and name.split(".")[0] not in _LIBRARY_CALLS:
            # Not visible, and not a trained module's forward: what it was handed may hold the count.
            for argument in node.args:
                handed = dotted_name(argument.value)  # `self.device` hands a device, not `self`
                if handed:
                    self.handed.add(handed)
            if name.startswith("self.") and name.count(".") == 1 and name not in self.facts.bindings:
                self.handed.add("self")  # an inherited method (not an object the class holds): it reads self
        return Scaling.UNSCALED

    def _helper_divisions(self, call: cst.Call, name: str, function: cst.FunctionDef) -> None:
        found: list[cst.BinaryOperation] = []
        for returned in self.facts.tree.find(function.body, cst.Return, enter_scopes=False):
            if returned.value is not None:
                _division_nodes(returned.value, function, self.facts, 0, found)
        for operation in found:
            text = _in_caller_terms(operation.right, function, call, name, self.facts)
            if text is not None:
                self.helper_divisions.append(HelperDivision(call, operation, text, function.name.value))

    def name(self, name: str, depth: int) -> Scaling:
        key = (name, self.limit)
        if depth > _MAX_DEPTH or key in self.visited:
            return Scaling.UNKNOWN
        self.visited.add(key)
        found: list[Scaling] = []
        limit = self.limit
        first = self._last_made(name, limit)
        for index, statement in enumerate(self.before[first:limit], first):
            for small in getattr(statement, "body", ()):
                self.limit = index
                found.extend(self._definition(small, statement, name, depth))
                self.limit = limit
        self.visited.discard(key)
        if not found:
            return Scaling.UNKNOWN
        return _combine(found)

    def _last_made(self, name: str, limit: int) -> int:
        """The place of the last statement before `limit` that runs on every path and binds
        `name` anew (`loss = attack(batch)`, not `loss = loss / k`): earlier values are gone."""
        for index in range(limit - 1, -1, -1):
            statement = self.before[index]
            if id(statement) not in self.dominating:
                continue
            for small in getattr(statement, "body", ()):
                if type(small) is cst.Assign and len(small.targets) == 1 and \
                        dotted_name(small.targets[0].target) == name and not any(
                        dotted_name(n) == name for n in self.facts.tree.find(small.value, cst.Name, cst.Attribute)):
                    return index
        return 0

    def _definition(self, small: cst.CSTNode, statement: cst.CSTNode, name: str, depth: int) -> list[Scaling]:
        # Asked of every statement before the loss, for each name it reads: exact types spare
        # a failing `isinstance` on libcst's ABCs (none of these classes has subclasses).
        small_type = type(small)
        if small_type is cst.Assign:
            for target in small.targets:
                target_type = type(target.target)
                if dotted_name(target.target) == name or (
                        target_type is cst.Subscript and code_of(target.target) == name):
                    return [self._bound(name, small.value, statement, name, depth)]
                if (target_type is cst.Tuple or target_type is cst.List) and any(
                        dotted_name(el.value) == name for el in target.target.elements):
                    # `loss, acc = f(...)`: the call's result decides (not a division of it)
                    found = self.call(small.value, depth) if isinstance(small.value, cst.Call) else Scaling.UNSCALED
                    return [found if found is not Scaling.SUM_REDUCED else Scaling.UNSCALED]
        if small_type is cst.AnnAssign and small.value is not None and dotted_name(small.target) == name:
            return [self._bound(name, small.value, statement, name, depth)]
        if small_type is cst.AugAssign and (dotted_name(small.target) == name or code_of(small.target) == name):
            if isinstance(small.operator, cst.DivideAssign):
                self.divisions.append(Division(statement=statement, operation=small, divisor=small.value,
                                               divisor_text=code_of(small.value), form=DivisionForm.AUGASSIGN,
                                               binds=name))
                return [Scaling.SCALED]
            if isinstance(small.operator, cst.MultiplyAssign):
                return [Scaling.SCALED]
            return [self._bound(name, small.value, statement, None, depth)]
        if small_type is cst.Expr and type(small.value) is cst.Call:
            func = small.value.func
            if type(func) is cst.Attribute and func.attr.value in _IN_PLACE_SCALING and dotted_name(func.value) == name:
                return [Scaling.SCALED]
        return []


_DIVIDING_CALLS = frozenset({"div", "divide", "true_divide"})


def _divided_by(call: cst.Call) -> tuple[cst.BaseExpression, cst.BaseExpression] | None:
    """(dividend, divisor) of `x.div(k)` or `torch.div(x, k)` (no rounding mode: a true division)."""
    if any(a.keyword is not None or a.star for a in call.args):
        return None
    func = call.func
    if not isinstance(func, cst.Attribute) or func.attr.value not in _DIVIDING_CALLS:
        return None
    owner = dotted_name(func.value)
    if owner in ("torch", "th"):
        return (call.args[0].value, call.args[1].value) if len(call.args) == 2 else None
    return (func.value, call.args[0].value) if len(call.args) == 1 else None


def _only_raises(function: cst.FunctionDef) -> bool:
    """`def forward_propagation(...): raise NotImplementedError`: a base class's placeholder."""
    body = function_statements(function)
    if len(body) != 1 or not isinstance(body[0], (cst.SimpleStatementLine, cst.SimpleStatementSuite)):
        return False
    line = body[0].body  # type: ignore[attr-defined]
    return isinstance(line[0], cst.Raise) and (isinstance(body[0], cst.SimpleStatementLine) or len(line) == 1)


def _returns_a_sum(function: cst.FunctionDef, facts: ModuleFacts) -> bool:
    """Every return of `function` is a visibly sum-reduced loss (`F.cross_entropy(...,
    reduction="sum")`, `losses.sum()`)."""
    returned = [r.value for r in facts.tree.find(function.body, cst.Return, enter_scopes=False)]
    return bool(returned) and all(
        type(value) is cst.Call and (is_sum_reduction(value) or (
            type(value.func) is cst.Attribute and value.func.attr.value in {"sum", "nansum"} and not value.args))
        for value in returned)


def _divides(function: cst.FunctionDef, facts: ModuleFacts) -> bool:
    """A same-module helper that returns a divided value (`return loss / cfg.accum`, or a name
    it binds to one, or divides in place): a division on the path of what it returns. One
    inside a call's arguments (`model(x / 255.0)`, `F.mse_loss(pred, y / scale)`) shapes an
    input, not the loss."""
    divided_in_place = {dotted_name(node.target.value if isinstance(node.target, cst.Subscript) else node.target)
                        for node in facts.tree.find(function.body, cst.AugAssign)
                        if isinstance(node.operator, cst.DivideAssign)}
    for node in facts.tree.find(function.body, cst.Assign):  # `out["loss"] = out["loss"] / k`, then `return out`
        for target in node.targets:
            if isinstance(target.target, cst.Subscript) and isinstance(node.value, cst.BinaryOperation) \
                    and isinstance(node.value.operator, cst.Divide):
                divided_in_place.add(dotted_name(target.target.value))
    return any(r.value is not None and _divided(r.value, function, facts, divided_in_place, 0)
               for r in facts.tree.find(function.body, cst.Return, enter_scopes=False))


def _division_nodes(node: cst.BaseExpression, function: cst.FunctionDef, facts: ModuleFacts, depth: int,
                    found: list[cst.BinaryOperation]) -> None:
    """The divisions on the path of what `function` returns (as `_divided` reads it)."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(node, cst.BinaryOperation):
        if isinstance(node.operator, cst.Divide):
            found.append(node)
            return
        for side in (node.left, node.right):
            _division_nodes(side, function, facts, depth + 1, found)
    elif isinstance(node, cst.UnaryOperation):
        _division_nodes(node.expression, function, facts, depth + 1, found)
    elif isinstance(node, cst.IfExp):
        for side in (node.body, node.orelse):
            _division_nodes(side, function, facts, depth + 1, found)
    elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
        _division_nodes(node.func.value, function, facts, depth + 1, found)
    elif isinstance(node, cst.Name):
        for binding in facts.bindings.get(node.value, ()):
            if binding.scope is function and binding.tuple_index is None:
                _division_nodes(binding.value, function, facts, depth + 1, found)


def _in_caller_terms(divisor: cst.BaseExpression, function: cst.FunctionDef, call: cst.Call, name: str,
                     facts: ModuleFacts) -> str | None:
    """The divisor as the caller would write it: a parameter replaced by what the call hands it
    (`cfg.accum` in `def f(batch, cfg)` called as `f(b, args)` is `args.accum`); None when it
    reads a name bound in the function, or one the call does not hand."""
    text = dotted_name(divisor)
    if text is None:
        return None
    root, _, rest = text.partition(".")
    parameters = [p.name.value for p in (*function.params.posonly_params, *function.params.params)]
    method = name.startswith("self.") and parameters[:1] == ["self"]
    if root == "self":
        return text if method else None
    if root in parameters or root in {p.name.value for p in function.params.kwonly_params}:
        handed = handed_argument(call, function, root, 1 if method else 0)
        handed_text = dotted_name(handed) if handed is not None else None
        if handed_text is None:
            return None
        return handed_text + ("." + rest if rest else "")
    if any(b.scope is function for b in facts.bindings.get(root, ())):
        return None
    return text


def _divided(node: cst.BaseExpression, function: cst.FunctionDef, facts: ModuleFacts,
             divided_in_place: set[str | None], depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if isinstance(node, cst.BinaryOperation):
        return isinstance(node.operator, cst.Divide) or any(
            _divided(side, function, facts, divided_in_place, depth + 1) for side in (node.left, node.right))
    if isinstance(node, cst.UnaryOperation):
        return _divided(node.expression, function, facts, divided_in_place, depth + 1)
    if isinstance(node, (cst.Tuple, cst.List)):
        return any(isinstance(e, cst.Element) and _divided(e.value, function, facts, divided_in_place, depth + 1)
                   for e in node.elements)
    if isinstance(node, cst.Dict):
        return any(isinstance(e, cst.DictElement) and _divided(e.value, function, facts, divided_in_place, depth + 1)
                   for e in node.elements)
    if isinstance(node, cst.IfExp):
        return any(_divided(side, function, facts, divided_in_place, depth + 1) for side in (node.body, node.orelse))
    if isinstance(node, cst.Subscript):
        return _divided(node.value, function, facts, divided_in_place, depth + 1)
    if isinstance(node, cst.Call):
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value in _SCALING_METHODS:
            return True
        # A method of the value (`(loss / k).mean()`) keeps the division; any other call's
        # arguments are its inputs.
        return isinstance(func, cst.Attribute) and _divided(func.value, function, facts, divided_in_place, depth + 1)
    if isinstance(node, (cst.Name, cst.Attribute)):
        text = dotted_name(node)
        if text is None:
            return False
        if text in divided_in_place:
            return True
        return any(b.tuple_index is None and _divided(b.value, function, facts, divided_in_place, depth + 1)
                   for b in facts.bindings.get(text, ()) if b.scope is function)
    return False


def loss_flow(loss: cst.BaseExpression, at: cst.CSTNode, statements: Sequence[cst.CSTNode],
              facts: ModuleFacts, function: cst.FunctionDef | None,
              window_caches: frozenset[str] = frozenset(), dominating: frozenset[int] = frozenset(),
              data: frozenset[str] = frozenset()) -> LossFlow:
    """How `loss` (the backward's argument or receiver) was scaled since it was computed.
    `window_caches`: values that grow over the micro-batches of a window. `dominating`: the
    statements (ids) that run whenever a later one does: a plain assignment there is where a
    name's value was last made, on every path. `data`: the names the loop binds to its items."""
    flow = _Flow(statements, at, facts, function, window_caches, dominating)
    flow.data = data
    scaling = flow.expression(loss, at, DivisionForm.INLINE, None, 0)
    return LossFlow(scaling=scaling, divisions=tuple(flow.divisions), name=dotted_name(loss) if isinstance(loss, cst.Name) else None,
                    handed=frozenset(flow.handed), forward_divides=flow.forward_divides,
                    helper_divisions=tuple(flow.helper_divisions))
