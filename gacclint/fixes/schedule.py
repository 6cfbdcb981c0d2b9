"""A schedule's length when a fix makes its scheduler step once per window.

Moving `scheduler.step()` from every micro-batch to the step boundary makes
the schedule advance `k` times more slowly. A schedule written in optimizer
steps (`T_max=1000`, a warm-up lambda) was meant that way and needs nothing;
one whose length counts micro-batches (`num_training_steps = epochs *
len(loader)`) must be divided by `k`, where the scheduler is built, or its
warm-up and decay last `k` times longer.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from gacclint.fixes.edits import Edit, Replace
from gacclint.loops.tree import Tree
from gacclint.loops.vocabulary import assignment_targets, call_name, code_of, dotted_name, schedule_lengths

@dataclass(frozen=True)
class Schedule:
    """What a fix must do about the schedule of `scheduler`."""

    found: bool  # the scheduler is built in this module
    edits: tuple[Edit, ...] = ()  # lengths divided by k
    adjusted: tuple[str, ...] = ()  # their names, for the message
    problem: str | None = None  # why the fix cannot be safe


def _assignments(tree: Tree, module: cst.Module) -> dict[str, list[cst.BaseExpression]]:
    found: dict[str, list[cst.BaseExpression]] = {}
    for node in tree.find(module, cst.Assign, cst.AnnAssign):
        if node.value is None:
            continue
        for target in assignment_targets(node):
            name = dotted_name(target)
            if name is not None:
                found.setdefault(name, []).append(node.value)
    return found


def _handed_to_parameter(tree: Tree, module: cst.Module, parameter: str) -> list[str]:
    """The names the module's calls hand to a parameter `parameter` of one of its functions, by
    place or by keyword."""
    functions: dict[str, tuple[int, bool]] = {}  # name -> (the parameter's place, a method)
    for function in tree.find(module, cst.FunctionDef):
        names = [p.name.value for p in function.params.params]
        if parameter in names:
            method = names[:1] == ["self"]
            functions[function.name.value] = (names.index(parameter) - (1 if method else 0), method)
    if not functions:
        return []
    handed: list[str] = []
    for call in tree.find(module, cst.Call):
        place = functions.get((call_name(call) or "").rsplit(".", 1)[-1])
        if place is None:
            continue
        positional = [a.value for a in call.args if a.keyword is None and not a.star]
        keyword = next((a.value for a in call.args if a.keyword is not None and a.keyword.value == parameter), None)
        value = keyword if keyword is not None else positional[place[0]] if 0 <= place[0] < len(positional) else None
        name = dotted_name(value) if value is not None else None
        if name is not None and name != parameter:
            handed.append(name)
    return handed


def _returned_values(tree: Tree, module: cst.Module) -> dict[str, list[cst.BaseExpression]]:
    """What each function of the module returns, by its name (a method's too: `self.steps()`)."""
    found: dict[str, list[cst.BaseExpression]] = {}
    for function in tree.find(module, cst.FunctionDef):
        for node in tree.find(function.body, cst.Return, enter_scopes=False):
            if node.value is not None:
                found.setdefault(function.name.value, []).append(node.value)
    return found


def _counts_micro_batches(value: cst.BaseExpression, k_text: str, assigned, depth: int = 0) -> bool | None:
    """True: computed from the data's length and not divided by k (micro-batches);
    False: divided by k already (optimizer steps); None: neither (a literal, unknown)."""
    text = code_of(value)
    compact = "".join(text.split())
    k_compact = "".join(k_text.split())
    if f"/{k_compact}" in compact or f"//{k_compact}" in compact:
        return False
    # From the data's length, or a step count multiplied by k (`max_train_steps * accum`): micro-batches.
    verdict = True if "len(" in compact or f"*{k_compact}" in compact or compact.startswith(f"{k_compact}*") \
        or f"({k_compact}*" in compact else None
    if depth >= 3:
        return verdict
    for node in _names(value):
        name = dotted_name(node)
        for bound in assigned.get(name or "", []):
            inner = _counts_micro_batches(bound, k_text, assigned, depth + 1)
            if inner is False:
                return False
            verdict = verdict or inner
    return verdict


def _names(node: cst.CSTNode) -> list[cst.BaseExpression]:
    found: list[cst.BaseExpression] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, (cst.Name, cst.Attribute)):
            found.append(current)
            if isinstance(current, cst.Attribute):
                continue
        stack.extend(current.children)
    return found


def _function_of(tree: Tree, module: cst.Module, node: cst.CSTNode) -> cst.FunctionDef | None:
    inner = None
    for function in tree.find(module, cst.FunctionDef):
        if any(found is node for found in tree.walk(function)):
            inner = function  # the innermost one comes last
    return inner


def _visible(k: cst.BaseExpression, tree: Tree, module: cst.Module, at: cst.CSTNode) -> bool:
    """`k` can be read where the scheduler is built: a literal, or its first name
    bound in that function (a parameter or an assignment) or at module level."""
    if isinstance(k, (cst.Integer, cst.Float)):
        return True
    root = (dotted_name(k) or "").split(".")[0]
    if not root:
        return False
    function = _function_of(tree, module, at)
    if function is not None:
        if root in {p.name.value for p in (*function.params.params, *function.params.kwonly_params,
                                            *function.params.posonly_params)}:
            return True
        scope: cst.CSTNode = function.body
    else:
        scope = module
    for node in tree.find(scope, cst.Assign, enter_scopes=False):
        if any(dotted_name(t.target) == root for t in node.targets):
            return True
    return root == "self"


def schedule_of(tree: Tree, module: cst.Module, scheduler: str, k: cst.BaseExpression, k_text: str) -> Schedule:
    assigned = _assignments(tree, module)
    builds = [value for value in assigned.get(scheduler, []) if isinstance(value, cst.Call)]
    if not builds and "." in scheduler:  # `self.scheduler`: built as `self.scheduler = ...` elsewhere
        tail = scheduler.rsplit(".", 1)[1]
        builds = [v for name, values in assigned.items() if name.endswith(f".{tail}")
                  for v in values if isinstance(v, cst.Call)]
    if not builds:
        return Schedule(False, problem=f"`{scheduler}` is built outside this file: if its length counts "
                                       f"micro-batches, divide it by `{k_text}`")
    edits: list[Edit] = []
    adjusted: list[str] = []
    for call in builds:
        for name, argument in schedule_lengths(call):
            if _counts_micro_batches(argument.value, k_text, assigned) is not True:
                continue
            if not _visible(k, tree, module, call):
                return Schedule(True, problem=f"`{scheduler}`'s `{name}` counts micro-batches, and `{k_text}` "
                                              "cannot be read where it is built: divide it by the accumulation count")
            value = argument.value
            atom = code_of(value) if isinstance(value, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) \
                else f"({code_of(value)})"
            edits.append(Replace(value, cst.parse_expression(f"{atom} // {k_text}")))
            adjusted.append(name)
    return Schedule(True, tuple(edits), tuple(adjusted))


def floor_counted(tree: Tree, module: cst.Module, scheduler: str) -> str | None:
    """The length of `scheduler` (built in this module) that counts the optimizer steps of a pass
    as a length rounded down (`len(dl) // k`, `int(len(ds) / bs / k)`, the same through names,
    `self.` attributes set in a sibling method, or a function of the module returning it): a fix
    that adds the step of the final partial window makes the loop outrun it. Its name, or None.
    Any floor of a length counts, whatever it divides by: a fix wrongly kept from `gacclint fix`
    is worse than one left to `--unsafe-fixes`."""
    assigned = _assignments(tree, module)
    returned = _returned_values(tree, module)
    builds = [v for v in assigned.get(scheduler, []) if isinstance(v, cst.Call)]
    if not builds and "." in scheduler:  # `self.sched`: built as `self.sched = ...` in a sibling method
        tail = scheduler.rsplit(".", 1)[1]
        builds = [v for name, values in assigned.items() if name.endswith(f".{tail}")
                  for v in values if isinstance(v, cst.Call)]
    if not builds:  # a parameter: what the calls of its function hand it (`train_epoch(..., sched, k)`)
        builds = [v for handed in _handed_to_parameter(tree, module, scheduler)
                  for v in assigned.get(handed, []) if isinstance(v, cst.Call)]
    found: list[tuple[int, str]] = []  # (hops through names, the argument): the nearest names the count
    for call in builds:
        # Any argument: a length keyword, or a function of the step (`LambdaLR(opt, lambda s: 1 - s / total)`)
        for argument in call.args:
            pending, seen = [(argument.value, 0)], 0
            while pending and seen < 12:
                value, hops = pending.pop(0)
                seen += 1
                compact = "".join(code_of(value).split())
                # `len(dl) // k`, or truncated by hand: `int(len(ds) / bs / k)`, `math.floor(len(dl) / k)`
                truncated = ("int(" in compact or "floor(" in compact) and "/" in compact
                if "len(" in compact and ("//" in compact or truncated):
                    if argument.keyword is not None:
                        found.append((hops, argument.keyword.value))
                    else:
                        found.append((hops, "lr_lambda" if isinstance(argument.value, cst.Lambda)
                                      else code_of(argument.value)))
                    break
                for node in _names(value):
                    pending.extend((made, hops + 1) for made in assigned.get(dotted_name(node) or "", []))
                for called in tree.find(value, cst.Call):  # `updates_per_epoch(loader, k) * epochs`
                    name = (call_name(called) or "").rsplit(".", 1)[-1]
                    pending.extend((made, hops + 1) for made in returned.get(name, []))
    # `num_training_steps=t_total` before `num_warmup_steps=args.warmup_steps` (a share of t_total)
    return min(found, key=lambda item: item[0])[1] if found else None
