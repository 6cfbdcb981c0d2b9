"""Facts about a whole module that loops are read against.

Which functions clear gradients or yield, which names hold optimizers,
schedulers, scalers or framework objects, and what literal values module
constants have (for "provable from literals" in RULES.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import libcst as cst

from gacclint.loops.tree import Tree, matches
from gacclint.loops.vocabulary import (
    OPTIMIZER_CONSTRUCTORS,
    assignment_targets,
    call_name,
    code_of,
    compact_code,
    dotted_name,
    integer_value,
    keyword_argument,
    is_sum_reduction,
    looks_like_accelerator,
    looks_like_fabric,
    looks_like_optimizer,
    looks_like_scaler,
    moved_to_device,
    parallel_assignment,
    positional_args,
    schedule_lengths,
    string_value,
)


@dataclass
class Binding:
    """`target = value`, in source order, with the function it sits in."""

    target: str
    value: cst.BaseExpression
    scope: cst.FunctionDef | None
    statement: cst.CSTNode
    tuple_index: int | None = None  # position when unpacked from a tuple/call


@dataclass
class ModuleFacts:
    tree: Tree = field(default_factory=Tree)
    functions: dict[str, list[cst.FunctionDef]] = field(default_factory=dict)
    classes: dict[str, cst.ClassDef] = field(default_factory=dict)
    bindings: dict[str, list[Binding]] = field(default_factory=dict)
    binding_order: dict[int, int] = field(default_factory=dict)  # id(statement) -> order
    statement_order: dict[int, int] = field(default_factory=dict)  # id(any statement) -> order
    accelerator_gas: bool = False  # Accelerator(gradient_accumulation_steps=...) visible
    deepspeed_engines: set[str] = field(default_factory=set)
    # Dictionaries handed to `deepspeed.initialize` as the engine's configuration.
    deepspeed_configs: set[str] = field(default_factory=set)
    # `config["gradient_accumulation_steps"] = E`: the dictionary's name -> each E set so.
    keyed_counts: dict[str, list[cst.BaseExpression]] = field(default_factory=dict)
    ddp_wrapped: set[str] = field(default_factory=set)
    sum_reduced_losses: set[str] = field(default_factory=set)  # criterion = nn.X(reduction="sum")
    optimizers: set[str] = field(default_factory=set)
    # String keys an optimizer is stored under (`heads[name]["opt"] = torch.optim.Adam(...)`).
    optimizer_keys: set[str] = field(default_factory=set)
    schedulers: set[str] = field(default_factory=set)
    scalers: set[str] = field(default_factory=set)  # names bound to a `GradScaler(...)`, whatever they are called
    # Names bound to `Accelerator(...)` / `Fabric(...)`, whatever they are called (`acc = Accelerator()`).
    accelerators: set[str] = field(default_factory=set)
    fabrics: set[str] = field(default_factory=set)
    iterable_datasets: set[str] = field(default_factory=set)
    # Objects whose parameters the module reads (`X.parameters()`, `X.named_parameters()`):
    # modules, whatever their names, so a call of one is a forward.
    modules_with_parameters: set[str] = field(default_factory=set)
    # Expressions (their text) holding a framework's accumulation count -> "accelerate" or
    # "deepspeed": `Accelerator(gradient_accumulation_steps=E)`, a DeepSpeed config's
    # "gradient_accumulation_steps", and names bound to them.
    framework_counts: dict[str, str] = field(default_factory=dict)
    # `from torch.autograd import Variable`: local name -> the module it comes from.
    imported_from: dict[str, str] = field(default_factory=dict)
    # `from utils import *`: the modules whose names come in unseen, relative ones included.
    star_imported: list[str] = field(default_factory=list)
    # id(node) -> (node, the event it is read as when no helper is known to clear gradients):
    # gacclint/loops/events.py reads each call once, however many questions include it.
    plain_events: dict[int, tuple[cst.CSTNode, object]] = field(default_factory=dict)
    # Every call of the module by its dotted name ("" when it has none), in source order: the
    # model looks calls up by name, and this spares it reading every call's name again.
    calls: dict[str, list[cst.Call]] = field(default_factory=dict)

    # -- queries -------------------------------------------------------------

    def is_scaler(self, text: str) -> bool:
        """A gradient scaler: built by a `GradScaler` class in this module, or named as one."""
        return text in self.scalers or looks_like_scaler(text)

    def framework_count(self, node: cst.BaseExpression, depth: int = 0) -> str | None:
        """The framework whose accumulation count `node` holds, if it visibly holds one."""
        text = code_of(node).strip()
        if text in self.framework_counts:
            return self.framework_counts[text]
        if self._asks_deepspeed_count(node):
            return "deepspeed"
        if type(node) is cst.Attribute and node.attr.value == "gradient_accumulation_steps" and self._builds_accelerator(
                dotted_name(node.value)):
            return "accelerate"  # `accelerator.gradient_accumulation_steps`: the count its backward divides by
        name = dotted_name(node)
        if name is None or depth > 4:
            return None
        bindings = [b for b in self.bindings.get(name, []) if b.tuple_index is None]
        found = {self.framework_count(b.value, depth + 1) for b in bindings}
        return found.pop() if len(found) == 1 else None

    def _builds_accelerator(self, name: str | None) -> bool:
        """`name` is only ever bound to an `Accelerator(...)`."""
        bound = [b.value for b in self.bindings.get(name, ()) if b.tuple_index is None] if name else []
        return bool(bound) and all(
            type(value) is cst.Call and (call_name(value) or "").rpartition(".")[2] == "Accelerator" for value in bound)

    def _asks_deepspeed_count(self, node: cst.BaseExpression) -> bool:
        """`engine.gradient_accumulation_steps()` of a DeepSpeed engine, or the
        `"gradient_accumulation_steps"` entry of the configuration it was built with."""
        if type(node) is cst.Call:
            owner, _, method = (call_name(node) or "").rpartition(".")
            return method == "gradient_accumulation_steps" and not node.args and owner in self.deepspeed_engines
        return (type(node) is cst.Subscript and string_key(node) == "gradient_accumulation_steps"
                and dotted_name(node.value) in self.deepspeed_configs)

    def optimizer_models(self, name: str, depth: int = 0) -> frozenset[str] | None:
        """The modules whose parameters optimizer `name` was built with (RULES.md, *ownership*):
        `Adam(model.parameters())`, `chain(a.parameters(), b.parameters())`, parameter groups.
        None when a binding of it cannot be read."""
        bindings = [b for b in self.bindings.get(name, []) if b.tuple_index is None]
        if not bindings or depth > 3:
            return None
        owned: set[str] = set()
        for binding in bindings:
            value = binding.value
            if not isinstance(value, cst.Call):
                return None
            keywords = {a.keyword.value: a.value for a in value.args if a.keyword is not None}
            positional = positional_args(value)
            params = positional[0] if positional else keywords.get("params")
            if params is None:
                return None
            found = self._parameter_owners(params, depth)
            if not found:
                return None
            owned |= {self._unaliased(owner, binding.scope) for owner in found}
        return frozenset(owned)

    def floor_count_of(self, length: str, count: str) -> str | None:
        """`len(loader) // k` written in the module for the pass length `length` and the count
        `count` (as code): the steps of a pass counted down, as a table's size or an index is."""
        wanted = (compact_code(length), compact_code(count))
        if not wanted[0] or not wanted[1]:
            return None
        for node in self.tree.ordered(cst.BinaryOperation):
            if type(node.operator) is cst.FloorDivide and (  # type: ignore[attr-defined]
                    compact_code(code_of(node.left)), compact_code(code_of(node.right))) == wanted:  # type: ignore[attr-defined]
                return code_of(node)
        return None

    def accelerate_may_accumulate(self) -> bool:
        """Some `Accelerator` the module builds is given an accumulation count that may be above 1
        (a plugin, or a count that is not 1 through literals and constants)."""
        for name, calls in self.calls.items():
            if name.rpartition(".")[2] != "Accelerator":
                continue
            for call in calls:
                if keyword_argument(call, "gradient_accumulation_plugin") is not None:
                    return True
                count = keyword_argument(call, "gradient_accumulation_steps")
                if count is not None:
                    value = self.evaluate_int(count, call, self.tree.enclosing_function(call))
                    if value is None or value > 1:
                        return True
        return False

    def is_accelerator(self, text: str) -> bool:
        """accelerate's `Accelerator`: bound to one in the module, or named as one (`self.accelerator`)."""
        return text in self.accelerators or looks_like_accelerator(text)

    def is_fabric(self, text: str) -> bool:
        """Lightning's `Fabric`: bound to one in the module, or named as one."""
        return text in self.fabrics or looks_like_fabric(text)

    def clip_covers(self, clip: cst.CSTNode, optimizer: str | None) -> bool:
        """The clip's parameters visibly hold `optimizer`'s: it clips `X.parameters()` and the
        optimizer was built with parameters of `X` or of modules under it (RULES.md, *ownership*)."""
        clipped, owners = self._clipped_module(clip), self.optimizer_models(optimizer) if optimizer else None
        return clipped is not None and bool(owners) and all(
            owner == clipped or owner.startswith(f"{clipped}.") for owner in owners)  # type: ignore[union-attr]

    def clip_misses(self, clip: cst.CSTNode, optimizer: str | None) -> bool:
        """The clip visibly reads none of `optimizer`'s parameters: it clips `X.parameters()` and
        the optimizer owns only modules that are neither `X`, under it, nor above it."""
        clipped, owners = self._clipped_module(clip), self.optimizer_models(optimizer) if optimizer else None
        if clipped is None or not owners:
            return False
        # `self.model`, bound to the `model` an optimizer was built with: one module, two names
        clipped_names = {clipped, self._bound_to_name(clipped)} - {None}
        owner_names = {name for owner in owners for name in (owner, self._bound_to_name(owner)) if name}
        return not any(owner == name or owner.startswith(f"{name}.") or name.startswith(f"{owner}.")
                       for owner in owner_names for name in clipped_names)

    def _bound_to_name(self, text: str) -> str | None:
        """The one name or attribute every binding of `text` binds it to (`self.model = model`)."""
        values = {dotted_name(b.value) if b.tuple_index is None else None for b in self.bindings.get(text, ())}
        return values.pop() if len(values) == 1 else None

    def _clipped_module(self, clip: cst.CSTNode) -> str | None:
        """`X` of `clip_grad_norm_(X.parameters(), ...)`."""
        args = positional_args(clip) if type(clip) is cst.Call else []
        return next((owner for found in self.tree.find(args[0], cst.Call) if (owner := parameters_owner(found))),
                    None) if args else None

    def _unaliased(self, owner: str, scope: cst.FunctionDef | None) -> str:
        """`cur.encoder` with `cur = model.module if hasattr(model, "module") else model` (or
        `cur = model`, `cur = model.module`) bound once in the same function: `model.encoder`, the
        same module's parameters under the name the rest of the loop uses."""
        root, _, rest = owner.partition(".")
        bound = [b for b in self.bindings.get(root, ()) if b.scope is scope]
        if len(bound) != 1 or bound[0].tuple_index is not None:
            return owner
        value = bound[0].value
        arms = [value.body, value.orelse] if isinstance(value, cst.IfExp) else [value]
        sources = {dotted_name(arm) for arm in arms}
        bases = {source[:-len(".module")] if source and source.endswith(".module") else source for source in sources}
        if len(bases) != 1 or None in bases:
            return owner
        base = bases.pop()
        return f"{base}.{rest}" if rest else base  # type: ignore[str-bytes-safe]

    def _parameter_owners(self, node: cst.BaseExpression, depth: int) -> set[str] | None:
        owners = {owner for found in self.tree.find(node, cst.Call) if (owner := parameters_owner(found))}
        if owners:
            return owners
        name = dotted_name(node)
        if name is not None:  # `params = list(model.parameters())` bound before
            bound = [b.value for b in self.bindings.get(name, []) if b.tuple_index is None]
            if len(bound) == 1 and depth < 3:
                return self._parameter_owners(bound[0], depth + 1)
        return None

    def function_named(self, name: str) -> cst.FunctionDef | None:
        found = self.functions.get(name)
        return found[0] if found and len(found) == 1 else None

    def is_generator_function(self, name: str) -> bool:
        func = self.function_named(name)
        return func is not None and any(True for _ in self.tree.find(func.body, cst.Yield, enter_scopes=False))

    def latest_binding(self, target: str, before: cst.CSTNode | None, scope: cst.FunctionDef | None) -> Binding | None:
        """The last binding of `target` before `before`: the function's own, else the module's."""
        candidates = self.bindings.get(target, [])
        limit = self.statement_order.get(id(before), 1 << 30) if before is not None else 1 << 30
        best: Binding | None = None
        for binding in candidates:
            if binding.scope is not scope and binding.scope is not None:
                continue
            if binding.scope is None and scope is not None:
                # A module binding is visible from a function whatever its position.
                if best is None or best.scope is None:
                    best = binding
                continue
            if self.binding_order.get(id(binding.statement), 0) < limit:
                best = binding
        return best

    def holds_container(self, target: str, before: cst.CSTNode | None, scope: cst.FunctionDef | None) -> bool:
        """Whether `target` visibly holds a list, dict, set or deque where `before` reads it: an
        attribute of `self` in every binding the module makes of it, any other name in its latest
        binding. An object built by a class the module cannot see may keep anything it is given."""
        if target.startswith("self."):
            found = [b for b in self.bindings.get(target, []) if b.tuple_index is None]
            return bool(found) and len(found) == len(self.bindings[target]) and all(
                _is_container(b.value) for b in found)
        binding = self.latest_binding(target, before, scope)
        return binding is not None and _is_container(_bound_part(binding))

    def holds_containers(self, target: str, before: cst.CSTNode | None, scope: cst.FunctionDef | None) -> bool:
        """Whether `target` visibly maps keys to lists, dicts, sets or deques where `before` reads it
        (`history = {"loss": []}`, `defaultdict(list)`): what `target[key].append(x)` puts into."""
        binding = self.latest_binding(target, before, scope)
        value = _bound_part(binding) if binding is not None else None
        if isinstance(value, cst.Dict):
            return bool(value.elements) and all(isinstance(e, cst.DictElement) and _is_container(e.value)
                                                for e in value.elements)
        if isinstance(value, cst.DictComp):
            return _is_container(value.value)
        if isinstance(value, cst.Call) and (call_name(value) or "").rsplit(".", 1)[-1] == "defaultdict":
            factory = positional_args(value)
            return bool(factory) and dotted_name(factory[0]) in _CONTAINER_CALLS
        return False

    def _attribute_int(self, node: cst.Attribute) -> int | None:
        """`self.k` that every binding the module makes of it sets to one literal integer, and
        that nothing augments (`self.k = 4` in `__init__`): RULES.md, facts along calls. Or a
        class attribute of a class of this module that nothing sets elsewhere (`class CFG:
        accum = 1`, read as `CFG.accum`, or as `cfg.accum` with `cfg = CFG()`)."""
        text = dotted_name(node)
        if text is None or text.count(".") != 1 or self._augmented(text):
            return None
        if text.startswith("self."):
            return self.bound_integer(text)
        owner = self._class_holding(text)
        return None if owner is None else _class_integer(owner, text.split(".")[1])

    def class_flag(self, node: cst.BaseExpression) -> bool | None:
        """`CFG.unscale` of a class of this module whose body sets it once to `True` or `False`,
        and that nothing sets elsewhere (read as `CFG.x`, or as `cfg.x` with `cfg = CFG()`)."""
        text = dotted_name(node)
        if text is None or text.count(".") != 1 or text.startswith("self."):
            return None
        owner = self._class_holding(text)
        if owner is None:
            return None
        values = _class_values(owner, text.split(".")[1])
        if len(values) == 1 and type(values[0]) is cst.Name and values[0].value in ("True", "False"):
            return values[0].value == "True"
        return None

    def _class_holding(self, text: str) -> cst.ClassDef | None:
        """The class of this module whose attribute `text` (`CFG.accum`, `cfg.accum` with `cfg =
        CFG()`) reads, where nothing sets that attribute outside the class body."""
        owner, attribute = text.split(".")
        if text in self.bindings:
            return None  # `CFG.accum = 4` somewhere: which value a read sees is unknown
        if owner not in self.classes:
            built = [b.value for b in self.bindings.get(owner, ())]
            if len(built) != 1 or self.bindings[owner][0].tuple_index is not None or not isinstance(built[0], cst.Call) \
                    or call_name(built[0]) not in self.classes or f"self.{attribute}" in self.bindings:
                return None
            owner = call_name(built[0])  # type: ignore[assignment]
        elif owner in self.bindings:
            return None  # the class's name is bound to something else too
        return self.classes[owner]

    def bound_integer(self, text: str) -> int | None:
        """The one literal integer every binding the module makes of `text` sets it to."""
        values = {integer_value(b.value) if b.tuple_index is None and isinstance(b.value, cst.Integer) else None
                  for b in self.bindings.get(text, ())}
        return values.pop() if len(values) == 1 and None not in values else None

    def schedule_in_micro_batches(self, scheduler: str, k: cst.BaseExpression | str) -> bool:
        """Every construction of `scheduler` in this module sizes each of its lengths (warm-up,
        total, period) visibly as a product with the accumulation count `k`
        (`num_training_steps=max_steps * k`): its author counted micro-batches, so stepping it on
        every micro-batch runs the schedule as written."""
        builds = [b.value for b in self.bindings.get(scheduler, ()) if b.tuple_index is None]
        count = "".join((k if isinstance(k, str) else code_of(k)).split())
        if not builds or not all(isinstance(value, cst.Call) for value in builds):
            return False
        for call in builds:
            lengths = schedule_lengths(call)  # type: ignore[arg-type]
            if not lengths or not all(self._times_count(argument.value, count, 0) for _, argument in lengths):
                return False
        return True

    def _times_count(self, node: cst.BaseExpression, count: str, depth: int) -> bool:
        """`node` is a product with the count (its compact text `count`), perhaps scaled, rounded
        or bound to a name first (`total = steps * k`, then `int(0.1 * total)`)."""
        if isinstance(node, cst.BinaryOperation):
            if isinstance(node.operator, cst.Multiply):
                return any("".join(code_of(side).split()) == count or self._times_count(side, count, depth)
                           for side in (node.left, node.right))
            if isinstance(node.operator, (cst.Divide, cst.FloorDivide)):
                return "".join(code_of(node.right).split()) != count and self._times_count(node.left, count, depth)
            return False
        if isinstance(node, cst.Call) and (call_name(node) or "").rsplit(".", 1)[-1] in ("int", "round", "ceil", "floor") \
                and len(node.args) == 1:
            return self._times_count(node.args[0].value, count, depth)
        text = dotted_name(node) if isinstance(node, (cst.Name, cst.Attribute)) else None
        if text is None or depth >= 3:
            return False
        bound = self.bindings.get(text, ())
        return bool(bound) and all(b.tuple_index is None and self._times_count(b.value, count, depth + 1) for b in bound)

    def prepared(self, name: str) -> bool:
        """`name` is handed to accelerate's `prepare(...)` (or `prepare_scheduler`) somewhere in the module."""
        return any(dotted_name(argument.value) == name
                   for called, calls in self.calls.items() if called.rsplit(".", 1)[-1] in ("prepare", "prepare_scheduler")
                   for call in calls for argument in call.args)

    def count_set_under_test(self, text: str) -> bool:
        """`text` is made DeepSpeed's count only under an `if` (`if accelerator.state.deepspeed_plugin
        is not None: args.accum = ...deepspeed_config["gradient_accumulation_steps"]`): elsewhere
        it keeps the value it had, and the framework divides by it only where the test holds."""
        made = [b for b in self.bindings.get(text, ()) if type(b.value) is cst.Subscript
                and string_key(b.value) == "gradient_accumulation_steps"]
        tests = self.tree.ordered(cst.If)
        return bool(made) and all(any(self.tree.contains(test, b.statement) for test in tests) for b in made)

    def _keyed_int(self, node: cst.Subscript, before: cst.CSTNode | None, scope: cst.FunctionDef | None,
                   depth: int) -> int | None:
        """`CONFIG["n_accumulate"]` of a dictionary literal bound once in its scope, where nothing in
        the module writes that key through any subscript, nor updates the dictionary in place."""
        key = string_key(node)
        root = dotted_name(node.value)
        if key is None or root is None or "." in root or any(
                f"{root}.{method}" in self.calls for method in ("update", "setdefault", "pop", "popitem", "clear")):
            return None
        binding = self.latest_binding(root, before, scope)
        if binding is None or binding.tuple_index is not None or len(
                [b for b in self.bindings.get(root, ()) if b.scope is binding.scope]) != 1:
            return None
        writes = self._key_writes(key)
        if writes:
            # `cfg = {}` then `cfg["accum"] = 1`: the one integer every write of the key stores
            return self._written_int(root, key, writes, binding, depth)
        value, found = binding.value, None
        if type(value) is cst.Dict:
            for element in value.elements:
                if type(element) is not cst.DictElement:
                    return None  # `**defaults`: which value the key ends with is not visible
                if type(element.key) is cst.SimpleString and string_value(element.key) == key:
                    found = element.value
        elif type(value) is cst.Call and call_name(value) == "dict" and not positional_args(value):
            found = next((a.value for a in value.args if a.keyword is not None and a.keyword.value == key), None)
        return None if found is None else self.evaluate_int(found, binding.statement, binding.scope, depth + 1)

    def _written_int(self, root: str, key: str, writes: list[tuple[cst.CSTNode, cst.Subscript]], binding: Binding,
                     depth: int) -> int | None:
        """The integer every statement writing `root[key]` (`writes`) stores, where only plain
        assignments of `root` itself write that key (no other dictionary, no `+=` or `del`) and the
        literal `root` is bound to holds the same value under that key, or none."""
        values: set[int | None] = set()
        for node, target in writes:
            if type(node) is not cst.Assign or dotted_name(target.value) != root:
                return None
            values.add(self.evaluate_int(node.value, node, self.tree.enclosing_function(node), depth + 1))
        literal = binding.value
        if type(literal) is not cst.Dict or any(type(e) is not cst.DictElement for e in literal.elements):
            return None
        for element in literal.elements:
            if type(element.key) is cst.SimpleString and string_value(element.key) == key:  # type: ignore[union-attr]
                values.add(self.evaluate_int(element.value, binding.statement, binding.scope, depth + 1))  # type: ignore[union-attr]
        return values.pop() if len(values) == 1 else None

    def _key_writes(self, key: str) -> list[tuple[cst.CSTNode, cst.Subscript]]:
        """Every statement of the module that assigns, augments or deletes `x[key]`, whatever `x`
        is, with that target."""
        found: list[tuple[cst.CSTNode, cst.Subscript]] = []
        for node in self.tree.ordered(cst.Assign, cst.AugAssign, cst.AnnAssign, cst.Del):
            targets = [t.target for t in node.targets] if type(node) is cst.Assign else [node.target]  # type: ignore
            found += [(node, target) for target in targets
                      if type(target) is cst.Subscript and string_key(target) == key]
        return found

    def may_hold(self, handed: str, value: str) -> bool:
        """An object handed to a call may hold `value` (RULES.md, *what can scale a loss*):
        `value` is it or an attribute of it (`args` for `args.accum`, `self` for `self.accum`),
        or `value` was bound from an attribute of an object `handed` holds (`self.config` for
        `self.accum = config.accum` with `self.config = config`). `self.device` holds no count."""
        sources = {value} | {text for b in self.bindings.get(value, ()) if b.tuple_index is None
                             and (text := dotted_name(b.value)) is not None}
        for source in sources:
            if source == handed or source.startswith(handed + "."):
                return True
            root = source.split(".")[0]
            if root != source and any(b.tuple_index is None and dotted_name(b.value) == root
                                      for b in self.bindings.get(handed, ())):
                return True
        return False

    def unsized_instance(self, value: cst.BaseExpression) -> bool:
        """`value` makes an instance of a class of this module that iterates (`__iter__` or
        `__next__`) and has no `__len__`, with no base class that could give it one."""
        node = self.classes.get(call_name(value) or "") if type(value) is cst.Call else None
        if node is None or any(dotted_name(base.value) not in (None, "object") for base in node.bases):
            return False
        methods = {statement.name.value for statement in node.body.body if type(statement) is cst.FunctionDef} \
            if isinstance(node.body, cst.IndentedBlock) else set()
        return bool(methods & {"__iter__", "__next__"}) and "__len__" not in methods

    def instance_methods(self, name: str, method: str) -> list[cst.FunctionDef] | None:
        """`method` of each class of this module that the bindings of `name` make an instance of
        (`model = GPT(...).cuda()`); None where a binding is something else or its class has no
        such method."""
        found = []
        bound = [b for b in self.bindings.get(name, ()) if b.tuple_index is None]
        if not bound or len(bound) != len(self.bindings.get(name, ())):
            return None
        for binding in bound:
            value = moved_to_device(binding.value)
            node = self.classes.get(call_name(value) or "") if type(value) is cst.Call else None
            defined = [statement for statement in node.body.body if type(statement) is cst.FunctionDef
                       and statement.name.value == method] if node is not None else []
            if not defined:
                return None
            found.append(defined[-1])
        return found

    def _augmented(self, text: str) -> bool:
        return any(dotted_name(node.target) == text for node in self.tree.ordered(cst.AugAssign))

    def _slice_length(self, node: cst.Subscript, before: cst.CSTNode | None, scope: cst.FunctionDef | None,
                      depth: int) -> int | None:
        """len(x[a:b:c]) from literals: the length of `x` and the slice's bounds."""
        whole = self.evaluate_length(node.value, before, scope, depth + 1)
        if whole is None:
            return None
        bounds: list[int | None] = []
        part = node.slice[0].slice
        for bound in (part.lower, part.upper, part.step):  # type: ignore[union-attr]
            if bound is None:
                bounds.append(None)
                continue
            value = self.evaluate_int(bound, before, scope, depth + 1)
            if value is None:
                value = _negative_literal(bound)
            if value is None:
                return None
            bounds.append(value)
        if bounds[2] == 0:
            return None
        return len(range(whole)[slice(*bounds)])

    def _grows(self, name: str) -> bool:
        """Whether a list named `name` may change length in place anywhere in the module: a
        method that adds or removes items, `+=`, or an item or slice deleted or assigned."""
        if any(f"{name}.{method}" in self.calls for method in _RESIZING_METHODS):
            return True
        return any(isinstance(target, cst.Name) and target.value == name or
                   isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name)
                   and target.value.value == name
                   for target in self._resizing_targets())

    def _resizing_targets(self) -> Iterator[cst.BaseExpression]:
        for node in self.tree.ordered(cst.AugAssign, cst.Del, cst.Assign):
            if isinstance(node, cst.AugAssign):
                yield node.target
            elif isinstance(node, cst.Del):
                yield from (el.value for el in node.target.elements) if isinstance(node.target, cst.Tuple) \
                    else (node.target,)
            else:  # `samples[len(samples):] = more`: only a slice resizes
                yield from (t.target for t in node.targets if isinstance(t.target, cst.Subscript)
                            and any(isinstance(s.slice, cst.Slice) for s in t.target.slice))

    def evaluate_int(self, node: cst.BaseExpression, before: cst.CSTNode | None,
                     scope: cst.FunctionDef | None, depth: int = 0) -> int | None:
        """The integer value of `node` when it follows from literals alone."""
        if depth > 12:
            return None
        if isinstance(node, cst.Integer):
            return integer_value(node)
        if isinstance(node, cst.Name):
            binding = self.latest_binding(node.value, before, scope)
            if binding is None or binding.tuple_index is not None:
                return None
            return self.evaluate_int(binding.value, binding.statement, binding.scope, depth + 1)
        if isinstance(node, cst.Attribute):
            return self._attribute_int(node)
        if isinstance(node, cst.Subscript):
            return self._keyed_int(node, before, scope, depth)
        if isinstance(node, cst.BinaryOperation):
            left = self.evaluate_int(node.left, before, scope, depth + 1)
            right = self.evaluate_int(node.right, before, scope, depth + 1)
            return _integer_operation(node.operator, left, right)
        if isinstance(node, cst.Call):
            name = call_name(node)
            if name == "len" and node.args:
                return self.evaluate_length(node.args[0].value, before, scope, depth + 1)
            if name == "int" and len(node.args) == 1:
                return self.evaluate_int(node.args[0].value, before, scope, depth + 1)
        return None

    def evaluate_length(self, node: cst.BaseExpression, before: cst.CSTNode | None,
                        scope: cst.FunctionDef | None, depth: int = 0) -> int | None:
        """len(node) from literals: lists, ranges, literal-sized tensors, datasets, loaders."""
        if depth > 12:
            return None
        if isinstance(node, (cst.List, cst.Tuple)):
            if any(isinstance(el, cst.StarredElement) for el in node.elements):
                return None
            return len(node.elements)
        if isinstance(node, cst.Subscript) and len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Slice):
            return self._slice_length(node, before, scope, depth)
        if isinstance(node, cst.Name):
            binding = self.latest_binding(node.value, before, scope)
            if binding is None or binding.tuple_index is not None:
                return None
            if isinstance(binding.value, cst.List) and self._grows(node.value):
                return None  # `samples = []`, then `samples.append(item)`: its length is the run's
            return self.evaluate_length(binding.value, binding.statement, binding.scope, depth + 1)
        if not isinstance(node, cst.Call):
            return None
        name = call_name(node) or ""
        short = name.rsplit(".", 1)[-1]
        positional = positional_args(node)
        keywords = {a.keyword.value: a.value for a in node.args if a.keyword is not None}
        if short == "range":
            values = [self.evaluate_int(v, before, scope, depth + 1) for v in positional]
            if any(v is None for v in values) or not values:
                return None
            start, stop, step = (0, values[0], 1) if len(values) == 1 else (values[0], values[1], values[2] if len(values) > 2 else 1)
            return len(range(start, stop, step)) if step else None  # type: ignore[arg-type]
        if short in {"randn", "rand", "zeros", "ones", "empty", "randint", "arange", "linspace", "normal", "full"}:
            if short == "randint":
                size = keywords.get("size")
                if isinstance(size, cst.Tuple) and size.elements:
                    return self.evaluate_int(size.elements[0].value, before, scope, depth + 1)
                return None
            if short == "arange" and len(positional) == 1:
                return self.evaluate_int(positional[0], before, scope, depth + 1)
            if positional:
                first = positional[0]
                if isinstance(first, (cst.Tuple, cst.List)) and first.elements:
                    first = first.elements[0].value
                if short in {"linspace"} and len(positional) >= 3:
                    return self.evaluate_int(positional[2], before, scope, depth + 1)
                if short in {"normal", "full"}:
                    return None
                return self.evaluate_int(first, before, scope, depth + 1)
            return None
        if short == "TensorDataset" and positional:
            return self.evaluate_length(positional[0], before, scope, depth + 1)
        if short == "DataLoader":
            dataset = positional[0] if positional else keywords.get("dataset")
            batch = positional[1] if len(positional) > 1 else keywords.get("batch_size")
            if dataset is None:
                return None
            size = self.evaluate_length(dataset, before, scope, depth + 1)
            batch_size = 1 if batch is None else self.evaluate_int(batch, before, scope, depth + 1)
            if size is None or not batch_size:
                return None
            drop_last = keywords.get("drop_last")
            if drop_last is not None and not (isinstance(drop_last, cst.Name) and drop_last.value in {"True", "False"}):
                return None
            if isinstance(drop_last, cst.Name) and drop_last.value == "True":
                return size // batch_size
            return -(-size // batch_size)
        return None


def _negative_literal(node: cst.BaseExpression) -> int | None:
    """`-1`: a minus and a literal integer."""
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus) and \
            isinstance(node.expression, cst.Integer):
        return -integer_value(node.expression)
    return None


_RESIZING_METHODS = ("append", "extend", "insert", "pop", "remove", "clear")
_CONTAINER_LITERALS = (cst.List, cst.Dict, cst.Set, cst.ListComp, cst.DictComp, cst.SetComp)
_CONTAINER_CALLS = frozenset({"list", "dict", "set", "deque", "defaultdict", "OrderedDict"})


def _is_container(value: cst.BaseExpression) -> bool:
    if isinstance(value, _CONTAINER_LITERALS):
        return True
    return isinstance(value, cst.Call) and (call_name(value) or "").rsplit(".", 1)[-1] in _CONTAINER_CALLS


def _bound_part(binding: Binding) -> cst.BaseExpression | None:
    """The value `binding` gives its name: the element at its place of a tuple literal
    (`losses, outputs = [], []`), or None where that is not visible."""
    if binding.tuple_index is None:
        return binding.value
    value = binding.value
    if isinstance(value, (cst.Tuple, cst.List)) and binding.tuple_index < len(value.elements) and not any(
            isinstance(e, cst.StarredElement) for e in value.elements):
        return value.elements[binding.tuple_index].value
    return None


def _integer_operation(operator: cst.BaseBinaryOp, left: int | None, right: int | None) -> int | None:
    """`left <op> right` for the integer arithmetic literals can show: + - * //, and / where it
    divides exactly (`32 / 8 // 4` is 1.0, which counts, tests and divides as 1 does)."""
    if left is None or right is None:
        return None
    if isinstance(operator, cst.Divide) and right and left % right == 0:
        return left // right
    if isinstance(operator, cst.Add):
        return left + right
    if isinstance(operator, cst.Subtract):
        return left - right
    if isinstance(operator, cst.Multiply):
        return left * right
    if isinstance(operator, cst.FloorDivide) and right:
        return left // right
    return None


def _class_values(node: cst.ClassDef, attribute: str) -> list[cst.BaseExpression | None]:
    """What each statement of the class body binding `attribute` binds it to (`accum = 1`)."""
    return [small.value for statement in node.body.body if type(statement) is cst.SimpleStatementLine
            for small in statement.body
            if any(type(t) is cst.Name and t.value == attribute for t in assignment_targets(small))]


def _class_integer(node: cst.ClassDef, attribute: str, depth: int = 0) -> int | None:
    """The integer the class body binds `attribute` to, when it binds it once, to a literal or
    to integer arithmetic of literals and the class's other attributes (`n_accumulate =
    max(1, 32 // train_bs)`)."""
    values = _class_values(node, attribute)
    if len(values) != 1 or values[0] is None or depth > 4:
        return None
    return _class_arithmetic(node, values[0], depth)


def _class_arithmetic(node: cst.ClassDef, value: cst.BaseExpression, depth: int) -> int | None:
    if isinstance(value, cst.Integer):
        return integer_value(value)
    if isinstance(value, cst.Name):
        return _class_integer(node, value.value, depth + 1)
    if isinstance(value, cst.BinaryOperation):
        left, right = _class_arithmetic(node, value.left, depth), _class_arithmetic(node, value.right, depth)
        return _integer_operation(value.operator, left, right)
    if isinstance(value, cst.Call) and call_name(value) in ("max", "min") and value.args and \
            all(a.keyword is None and not a.star for a in value.args):
        parts = [_class_arithmetic(node, a.value, depth) for a in value.args]
        if None in parts:
            return None
        return max(parts) if call_name(value) == "max" else min(parts)  # type: ignore[type-var]
    return None


def string_key(subscript: cst.Subscript) -> str | None:
    """`"k"` of `x["k"]`."""
    if len(subscript.slice) != 1 or not isinstance(subscript.slice[0].slice, cst.Index):
        return None
    key = subscript.slice[0].slice.value
    return string_value(key) if isinstance(key, cst.SimpleString) else None


def parameters_owner(call: cst.Call) -> str | None:
    """`model.parameters()`, `self.D.named_parameters()` -> the module whose parameters they are."""
    return _parameters_owner_named(call_name(call) or "")


def _parameters_owner_named(name: str) -> str | None:
    owner, _, method = name.rpartition(".")
    return owner if method in {"parameters", "named_parameters"} and owner else None


class _FactCollector:
    """Reads the module facts from the nodes that carry them, in source order."""

    def __init__(self, facts: ModuleFacts) -> None:
        self.facts = facts

    def _function(self, node: cst.FunctionDef) -> None:
        self.facts.functions.setdefault(node.name.value, []).append(node)

    def _class(self, node: cst.ClassDef) -> None:
        self.facts.classes[node.name.value] = node
        bases = " ".join(code_of(arg.value) for arg in node.bases)
        if "IterableDataset" in bases or "IterDataPipe" in bases:
            self.facts.iterable_datasets.add(node.name.value)

    def _assign(self, node: cst.Assign) -> None:
        scope = self.facts.tree.enclosing_function(node)
        for target in node.targets:
            self._bind(target.target, node.value, node, scope)

    def _ann_assign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._bind(node.target, node.value, node, self.facts.tree.enclosing_function(node))

    def _import(self, node: cst.Import) -> None:
        for alias in node.names:  # `import torch_xla.core.xla_model as xm`
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                self.facts.imported_from[alias.asname.name.value] = dotted_name(alias.name) or ""
            elif alias.asname is None:  # `import utils`, `import a.b`: binds the first name, the package
                root = (dotted_name(alias.name) or "").split(".")[0]
                if root:
                    self.facts.imported_from.setdefault(root, root)

    def _import_from(self, node: cst.ImportFrom) -> None:
        if isinstance(node.names, cst.ImportStar):
            self.facts.star_imported.append("." if node.relative else dotted_name(node.module) or "")
            return
        if node.module is None:
            return
        source = dotted_name(node.module) or ""
        for alias in node.names:
            local = alias.asname.name if alias.asname is not None else alias.name
            if isinstance(local, cst.Name):
                self.facts.imported_from[local.value] = source

    def _call(self, node: cst.Call) -> None:
        # Run on every call of the module: its name is read once, and split once.
        name = call_name(node) or ""
        self.facts.calls.setdefault(name, []).append(node)
        if not node.args and (owner := _parameters_owner_named(name)):
            self.facts.modules_with_parameters.add(owner)
        short = name.rpartition(".")[2]
        if short in _COUNTING_CALLS:
            self._framework_counts(node, name)
        if short == "Accelerator" and any(
                a.keyword is not None and a.keyword.value in {"gradient_accumulation_steps", "gradient_accumulation_plugin"}
                for a in node.args):
            self.facts.accelerator_gas = True

    def _framework_counts(self, call: cst.Call, name: str) -> None:
        short = name.rsplit(".", 1)[-1]
        keywords = {a.keyword.value: a.value for a in call.args if a.keyword is not None}
        if short == "Accelerator" and "gradient_accumulation_steps" in keywords:
            self._count(keywords["gradient_accumulation_steps"], "accelerate")
        elif short == "GradientAccumulationPlugin" and "num_steps" in keywords:
            self._count(keywords["num_steps"], "accelerate")
        elif short == "initialize" and "deepspeed" in name:
            for key in ("config", "config_params"):
                config = keywords.get(key)
                if isinstance(config, cst.Name):
                    self.facts.deepspeed_configs.add(config.value)
                    for count in self.facts.keyed_counts.get(config.value, ()):
                        self._count(count, "deepspeed")
                    bound = [b.value for b in self.facts.bindings.get(config.value, []) if b.tuple_index is None]
                    config = bound[-1] if len(bound) == 1 else None
                if isinstance(config, cst.Dict):
                    for element in config.elements:
                        if (isinstance(element, cst.DictElement) and isinstance(element.key, cst.SimpleString)
                                and string_value(element.key) == "gradient_accumulation_steps"):
                            self._count(element.value, "deepspeed")

    def _count(self, value: cst.BaseExpression, framework: str) -> None:
        if not (isinstance(value, cst.Integer) and integer_value(value) <= 1):
            self.facts.framework_counts[code_of(value).strip()] = framework

    def _bind(self, target: cst.BaseExpression, value: cst.BaseExpression, statement: cst.CSTNode,
              scope: cst.FunctionDef | None) -> None:
        self.facts.binding_order[id(statement)] = self.facts.statement_order[id(statement)]
        # Exact types here and in `_classify` (run for every binding of the module): a failing
        # `isinstance` on libcst's ABCs is slow, and none of these classes has subclasses.
        target_type = type(target)
        if target_type is cst.Tuple or target_type is cst.List:
            pairs = parallel_assignment(target, value, self.facts.tree.names_read)
            if pairs is not None:  # `gen, disc = DDP(gen), DDP(disc)`: one plain binding per name
                for _, element_target, element_value in pairs:
                    self._bind(element_target, element_value, statement, scope)
                return
            names = [dotted_name(el.value) if not isinstance(el, cst.StarredElement) else None for el in target.elements]
            for index, name in enumerate(names):
                if name:
                    self.facts.bindings.setdefault(name, []).append(Binding(name, value, scope, statement, index))
            self._classify_unpacked(names, value)
            return
        if target_type is cst.Subscript and type(value) is cst.Call and (key := string_key(target)) is not None:
            called = call_name(value) or ""
            if called.rpartition(".")[2] in OPTIMIZER_CONSTRUCTORS or called.startswith(("torch.optim.", "optim.")):
                self.facts.optimizer_keys.add(key)
        if target_type is cst.Subscript and string_key(target) == "gradient_accumulation_steps":
            owner = dotted_name(target.value)
            if owner:
                self.facts.keyed_counts.setdefault(owner, []).append(value)
            return
        name = dotted_name(target)
        if not name:
            return
        self.facts.bindings.setdefault(name, []).append(Binding(name, value, scope, statement))
        # `k = accelerator.state.deepspeed_plugin.deepspeed_config["gradient_accumulation_steps"]`:
        # DeepSpeed's own count, read through accelerate.
        if (type(value) is cst.Subscript and string_key(value) == "gradient_accumulation_steps"
                and "deepspeed" in code_of(value.value)):
            self.facts.framework_counts[name] = "deepspeed"
        self._classify(name, value)

    def _classify(self, name: str, value: cst.BaseExpression) -> None:
        if type(value) is not cst.Call:
            return
        called = call_name(value) or ""
        short = called.rsplit(".", 1)[-1]
        if looks_like_optimizer(name):  # schedulefree.AdamWScheduleFree is an optimizer
            self.facts.optimizers.add(name)
        elif "lr_scheduler" in called or "Scheduler" in short or "schedule" in short.lower() or short.endswith("LR"):
            self.facts.schedulers.add(name)
        elif short in OPTIMIZER_CONSTRUCTORS or called.startswith(("torch.optim.", "optim.")) or "optimizer" in short.lower():
            self.facts.optimizers.add(name)
        elif short in {"DistributedDataParallel", "DDP"}:
            self.facts.ddp_wrapped.add(name)
        elif short.endswith("GradScaler"):  # torch.cuda.amp.GradScaler, torch.amp.GradScaler, ShardedGradScaler
            self.facts.scalers.add(name)
        elif short == "Accelerator":
            self.facts.accelerators.add(name)
        elif short == "Fabric":
            self.facts.fabrics.add(name)
        made = moved_to_device(value)  # `nn.BCELoss(reduction="sum").cuda()` is that loss module
        if type(made) is cst.Call and is_sum_reduction(made):
            self.facts.sum_reduced_losses.add(name)

    def _classify_unpacked(self, names: list[str | None], value: cst.BaseExpression) -> None:
        if type(value) is not cst.Call:
            return
        called = call_name(value) or ""
        if called.endswith("deepspeed.initialize"):
            # engine, optimizer, dataloader, lr_scheduler = deepspeed.initialize(...)
            if names and names[0]:
                self.facts.deepspeed_engines.add(names[0])
            if len(names) > 1 and names[1]:
                self.facts.optimizers.add(names[1])


# The calls `_framework_counts` reads (by the last part of their name).
_COUNTING_CALLS = {"Accelerator", "GradientAccumulationPlugin", "initialize"}


def _ignore(collector: _FactCollector, node: cst.CSTNode) -> None:
    pass


_STATEMENTS = (cst.BaseStatement, cst.BaseSmallStatement, cst.SimpleStatementSuite)  # a one-line body is one statement too
# What each kind of node tells, tried in this order (the first that matches reads it).
_READER_ORDER = (
    ((cst.FunctionDef,), _FactCollector._function),
    ((cst.ClassDef,), _FactCollector._class),
    ((cst.Assign,), _FactCollector._assign),
    ((cst.AnnAssign,), _FactCollector._ann_assign),
    ((cst.Import,), _FactCollector._import),
    ((cst.ImportFrom,), _FactCollector._import_from),
    ((cst.Call,), _FactCollector._call),
)
_READ_TYPES = tuple(t for types, _ in _READER_ORDER for t in types)
# node type -> its reader, filled as types are met (a dictionary look-up per node, not a
# chain of `isinstance` on libcst's ABCs).
_READERS: dict[type, Callable[[_FactCollector, cst.CSTNode], None]] = {}


def _reader(node_type: type) -> Callable[[_FactCollector, cst.CSTNode], None]:
    reader = _READERS[node_type] = next(
        (read for types, read in _READER_ORDER if matches(node_type, types)), _ignore)
    return reader


def collect_facts(module: cst.Module) -> ModuleFacts:
    facts = ModuleFacts()
    tree = facts.tree
    tree.build(module)
    statements = tree.ordered(*_STATEMENTS)
    facts.statement_order.update(zip(map(id, statements), range(1, len(statements) + 1)))
    collector = _FactCollector(facts)
    readers = _READERS
    for node in tree.ordered(*_READ_TYPES):
        (readers.get(type(node)) or _reader(type(node)))(collector, node)
    _sum_reducing_instances(facts)
    return facts


def _sum_reducing_instances(facts: ModuleFacts) -> None:
    """`criterion = YoloLoss(...)` where the module's own class `YoloLoss` reduces with
    `reduction="sum"` (or `size_average=False`) in its `forward`: a sum-reduced loss, as an
    `nn.MSELoss(reduction="sum")` is."""
    summing: set[str] = set()
    for name, cls in facts.classes.items():
        for statement in cls.body.body:
            if isinstance(statement, cst.FunctionDef) and statement.name.value in {"forward", "__call__"} and any(
                    is_sum_reduction(call) for call in facts.tree.find(statement.body, cst.Call)):
                summing.add(name)
    if not summing:
        return
    for name, bindings in facts.bindings.items():
        if bindings and all(b.tuple_index is None and type(b.value) is cst.Call and call_name(b.value) in summing
                            for b in bindings):
            facts.sum_reduced_losses.add(name)

