"""Which values of a loop iteration carry an autograd graph, and from which forward.

A *forward* is a call of a model-like object (`model(x)`, `self.net(x)`,
`D(fake)`); a value carries the graphs of every forward it was computed from,
through names assigned earlier in the iteration. The trail stops at
`.detach()`, `.item()`, `float(...)` and the like, and at statements under
`torch.no_grad()` / `torch.inference_mode()`. GA301-GA303 read these facts.

Forward calls are recognised narrowly: a call of a name or attribute that is
not a loss function, not a function or class of this module, not a torch /
NumPy function and not a tensor method. What is not recognised carries no
graph, so rules built on graphs stay silent rather than guess.
"""

from __future__ import annotations

import builtins

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import libcst as cst

from gacclint.loops.facts import ModuleFacts
from gacclint.loops.model import LoopStatement
from gacclint.loops.tensor_methods import TENSOR_METHODS
from gacclint.loops.vocabulary import (
    LIBRARY_ROOTS,
    call_name,
    code_of,
    dotted_name,
    keyword_argument,
    makes_loss_module,
    moved_to_device,
    parallel_assignment,
    parameter_names,
    positional_args,
)

if TYPE_CHECKING:
    from gacclint.loops.model import TrainingLoop

_NOT_MODEL_ROOTS = {"torch", "F", "nn", "np", "numpy", "math", "random", "os", "sys", "time", "functional", "tf",
                    "jnp", "jax", "itertools", "functools", "logging", "logger", "wandb", "writer", "tqdm", "json",
                    "pickle", "copy", "re", "pd", "plt", "accelerator", "fabric", "dist", "xm", "amp", "scaler",
                    "optimizer", "scheduler", "args", "cfg", "config", "self.log", "tokenizer", "collate_fn"}
# Methods of a module that compute nothing from its parameters.
_MODULE_HOUSEKEEPING = {"parameters", "named_parameters", "train", "eval", "zero_grad", "state_dict",
                        "load_state_dict", "to", "cuda", "cpu", "half", "float", "double", "bfloat16", "apply",
                        "modules", "children", "named_modules", "named_children", "buffers", "named_buffers",
                        "requires_grad_", "register_buffer", "register_forward_hook", "register_full_backward_hook",
                        "register_forward_pre_hook", "add_module", "get_parameter", "no_sync", "type"}
# Calls that run a function they are handed (a model wrapped in a closure): the graph of
# their result comes from forwards this module does not show.
_CALLS_A_FUNCTION = {"jvp", "vjp", "vmap", "functional_call", "checkpoint", "checkpoint_sequential", "call"}
UNKNOWN_GRAPH = 0  # stands for those forwards in `GraphFlow.forwards`
_BUILTINS = {"len", "sum", "min", "max", "float", "int", "bool", "str", "list", "dict", "tuple", "set", "zip",
             "enumerate", "range", "print", "isinstance", "getattr", "setattr", "hasattr", "abs", "round", "sorted",
             "any", "all", "iter", "next", "repr", "map", "filter", "type", "super", "open", "format", "vars", "id"}
# Methods whose result has no graph: numbers, integer or boolean tensors, detached values. Not
# `.float()`, `.half()`, `.double()`: a cast to another floating type keeps the graph (the builtin
# `float(x)` is a number, and is read as a builtin).
_NO_GRAPH = {"detach", "item", "tolist", "numpy", "argmax", "argmin", "long", "int", "bool", "eq", "ne", "lt", "le",
             "gt", "ge", "round", "sign", "nonzero", "isnan", "isinf", "isfinite", "size", "dim", "numel", "float_",
             "len", "detach_", "data_ptr", "requires_grad_",
             # the total norm clipping returns is computed without a graph, however torch is imported
             "clip_grad_norm_", "clip_grad_norm", "clip_grad_value_"}
# Methods that put their last argument into a container in place.
PUTTING_METHODS = frozenset({"append", "extend", "insert", "add"})
# Methods of a dictionary that put values into it.
_DICT_FILLING_METHODS = frozenset({"update", "setdefault"})
# Builtins whose result is a plain Python value, with no graph.
_NUMBER_BUILTINS = frozenset({"float", "int", "bool", "len", "str"})
# Modules whose functions return plain numbers or arrays, never a graph (`time.time()`,
# `math.log(n)`, `np.float(correct)`).
_NUMBER_MODULES = frozenset({"time", "math", "np", "numpy"})
# Modules whose functions make a value from their arguments alone.
_TENSOR_MODULES = frozenset({"torch", "np", "numpy", "math", "F", "torch.nn.functional"})
_MODEL_WORDS = ("model", "net", "encoder", "decoder", "head", "generator", "discriminator", "backbone", "critic",
                "classifier", "module", "policy", "actor", "transformer", "unet", "vae", "gen", "disc", "student",
                "teacher", "embed", "layer", "block", "proj", "mlp", "clip", "bert", "gpt", "lm")
_FUNCTIONAL_LOSSES = {"mse_loss", "l1_loss", "cross_entropy", "nll_loss", "binary_cross_entropy",
                      "binary_cross_entropy_with_logits", "kl_div", "smooth_l1_loss", "huber_loss", "ctc_loss",
                      "cosine_embedding_loss", "margin_ranking_loss", "triplet_margin_loss", "poisson_nll_loss",
                      "gaussian_nll_loss", "hinge_embedding_loss", "soft_margin_loss", "multilabel_margin_loss",
                      "multi_margin_loss", "multilabel_soft_margin_loss"}
_PYTHON_BUILTINS = frozenset(dir(builtins))
_REDUCTIONS = {"mean", "sum", "nanmean", "nansum"}


@dataclass(frozen=True)
class Definition:
    name: str
    position: float  # a statement's place in the iteration; a `with ... as` binding's, just before its block
    statement: LoopStatement
    value: cst.BaseExpression
    unpacked: bool = False  # `a, b = model(x)`
    augmented: cst.AugAssign | None = None  # `total += loss`
    index: int | None = None  # unpacked from a flat tuple target: the name's place in it

    @property
    def adds_to_itself(self) -> bool:
        """`total += v`, `total *= w`, or `total = total + v`: the name's new value is built
        on what it held, so it lives on from one iteration to the next."""
        return self.augmented is not None or (not self.unpacked and addend(self.name, self.value) is not None)


# What a container emptied in place holds: nothing (a value made here, in no tree).
_EMPTY = cst.List(elements=[])


def _emptied_in_place(call: cst.Call) -> str | None:
    """`losses.clear()`: the name of the container a call empties where it is."""
    func = call.func
    if type(func) is cst.Attribute and func.attr.value == "clear" and not call.args:
        return dotted_name(func.value)
    return None


def _whole_slice_of(target: cst.BaseExpression) -> str | None:
    """`losses` of `del losses[:]`."""
    if type(target) is not cst.Subscript or len(target.slice) != 1:
        return None
    part = target.slice[0].slice
    if type(part) is cst.Slice and part.lower is None and part.upper is None and part.step is None:
        return dotted_name(target.value)
    return None


def addend(name: str, value: cst.BaseExpression) -> cst.BaseExpression | None:
    """What `name = name + v` (or `name = v + name`) adds to `name`: `v`; None for any other value."""
    if not isinstance(value, cst.BinaryOperation) or not isinstance(value.operator, cst.Add):
        return None
    if _text(value.left) == name:
        return value.right
    if _text(value.right) == name:
        return value.left
    return None


def _text(node: cst.BaseExpression) -> str | None:
    """A name's dotted text, or a subscript's code (`stats["g"]`)."""
    return dotted_name(node) or (code_of(node) if isinstance(node, cst.Subscript) else None)


def _targets(target: cst.BaseExpression) -> Iterator[tuple[str, bool, int | None]]:
    """Each name `target` binds, whether it is unpacked, and its place when the target is a
    flat tuple without a starred name (`loss, elapsed = f(x)`: 0 and 1)."""
    if isinstance(target, (cst.Tuple, cst.List)):
        flat = not any(isinstance(e, cst.StarredElement) for e in target.elements)
        for place, element in enumerate(target.elements):
            for name, _, _ in _targets(element.value):
                yield name, True, place if flat and dotted_name(element.value) else None
        return
    if isinstance(target, cst.StarredElement):
        yield from _targets(target.value)
        return
    text = dotted_name(target)
    if text:
        yield text, False, None


class GraphFlow:
    def __init__(self, loop: "TrainingLoop", facts: ModuleFacts, varying: set[str]) -> None:
        self.loop_node = loop.node  # not the loop itself, which holds this flow: no cycle to collect
        self.loss_parameters = loop.loss_parameters
        self.facts = facts
        self.varying = varying
        self._definitions: dict[str, list[Definition]] = {}
        self._memo: dict[tuple[str, int], tuple[frozenset[int], int]] = {}  # -> (forwards, hop depth)
        self._forward_memo: dict[int, bool] = {}
        self._forward_calls: dict[int, cst.Call] = {}  # the forward calls `forwards` has met, by id
        self._optimized: frozenset[str] | None = None
        self._number_functions: dict[str, bool] = {}  # module function -> it returns only numbers
        self.strict = False
        self.through_values = False  # follow values through detach(), .data, argmax: what a value was made from
        # `crops.append(feats[0])`: values put into a container in place, by its name, with where.
        self._put_into: dict[str, list[tuple[int, LoopStatement, cst.BaseExpression]]] = {}
        self._records = {record.position: record for record in loop.body}
        self._body_block = id(loop.node.body)
        for record in loop.body:
            for small in getattr(record.statement, "body", ()):
                if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
                    self._record_put(small.value, record)
                    emptied = _emptied_in_place(small.value)
                    if emptied is not None:  # `losses.clear()`: the container holds nothing again
                        self._add(Definition(emptied, record.position, record, _EMPTY))
                elif isinstance(small, cst.Del):
                    emptied = _whole_slice_of(small.target)
                    if emptied is not None:  # `del losses[:]`
                        self._add(Definition(emptied, record.position, record, _EMPTY))
                if isinstance(small, cst.Assign):
                    for target in small.targets:
                        if type(target.target) is cst.Subscript and (into := dotted_name(target.target.value)):
                            # `losses[t] = loss`: put into `losses` at a key
                            self._put_into.setdefault(into, []).append((record.position, record, small.value))
                        pairs = parallel_assignment(target.target, small.value)
                        if pairs is not None:  # `a, b = f(x), g(y)`: each name its own value
                            for name, _, value in pairs:
                                self._add(Definition(name, record.position, record, value))
                            continue
                        for name, unpacked, index in _targets(target.target):
                            self._add(Definition(name, record.position, record, small.value, unpacked, index=index))
                elif isinstance(small, cst.AnnAssign) and small.value is not None:
                    for name, unpacked, index in _targets(small.target):
                        self._add(Definition(name, record.position, record, small.value, unpacked, index=index))
                elif isinstance(small, cst.AugAssign):
                    for name, _, _ in _targets(small.target):
                        self._add(Definition(name, record.position, record, small.value, augmented=small))
        self._with_definitions(loop)
        self._loop_target_definitions(loop)
        for found in self._definitions.values():
            found.sort(key=lambda definition: definition.position)

    def _with_definitions(self, loop: "TrainingLoop") -> None:
        """`with amp.scale_loss(loss, opt) as scaled_loss:` binds `scaled_loss` just before the
        first statement of its block (a position between two statements')."""
        tree = self.facts.tree
        withs = list(tree.find(loop.node.body, cst.With, enter_scopes=False))
        for node in withs:
            items = [item for item in node.items if item.asname is not None]
            if not items:
                continue
            first = next((record for record in loop.body if tree.contains(node.body, record.statement)), None)
            if first is None:
                continue
            for item in items:
                for name, unpacked, index in _targets(item.asname.name):  # type: ignore[union-attr]
                    self._add(Definition(name, first.position - 0.5, first, item.item, unpacked, index=index))

    def _loop_target_definitions(self, loop: "TrainingLoop") -> None:
        """`for s, t in zip(s_feats, t_feats):` in the iteration binds `s` to an item of `s_feats`
        and `t` to one of `t_feats` just before the first statement of its body; `for i, x in
        enumerate(xs)`, `x` to one of `xs`; any other target, an item of what it iterates."""
        tree = self.facts.tree
        for node in tree.find(loop.node.body, cst.For, enter_scopes=False):
            first = next((record for record in loop.body if tree.contains(node.body, record.statement)), None)
            if first is None:
                continue
            position = first.position - 0.5
            iterable, target = node.iter, node.target
            sources = positional_args(iterable) if type(iterable) is cst.Call else []
            called = call_name(iterable) if type(iterable) is cst.Call else None
            if called == "enumerate" and len(sources) == 1 and type(target) in (cst.Tuple, cst.List) \
                    and len(target.elements) == 2:  # type: ignore[attr-defined]
                target, iterable = target.elements[1].value, sources[0]  # type: ignore[attr-defined]
                sources = positional_args(iterable) if type(iterable) is cst.Call else []
                called = call_name(iterable) if type(iterable) is cst.Call else None
            if called == "zip" and type(target) in (cst.Tuple, cst.List) and len(sources) == len(
                    target.elements) and len(sources) == len(iterable.args):  # type: ignore[attr-defined]
                for element, source in zip(target.elements, sources):  # type: ignore[attr-defined]
                    for name, unpacked, index in _targets(element.value):
                        self._add(Definition(name, position, first, source, True, index=None))
                continue
            for name, unpacked, index in _targets(target):
                self._add(Definition(name, position, first, iterable, True, index=None))

    def _add(self, definition: Definition) -> None:
        self._definitions.setdefault(definition.name, []).append(definition)

    def _record_put(self, call: cst.Call, record: LoopStatement) -> None:
        func = call.func
        if not isinstance(func, cst.Attribute) or not call.args:
            return
        name = dotted_name(func.value)
        if name is None:
            return
        method = func.attr.value
        if method in PUTTING_METHODS:
            self._put_into.setdefault(name, []).append((record.position, record, call.args[-1].value))
        elif method in _DICT_FILLING_METHODS and self.facts.holds_container(
                name, call, self.facts.tree.enclosing_function(call)):
            # `rec.update({"pred": out})`, `rec.update(pred=out)`, `rec.setdefault("pred", out)`: a
            # dictionary's own methods put values into it too (a meter's `update(loss)` is not one)
            values = [arg.value for arg in call.args] if method == "update" else [call.args[-1].value]
            values = [part for value in values for part in (
                [e.value for e in value.elements if type(e) is cst.DictElement] if type(value) is cst.Dict else [value])]
            self._put_into.setdefault(name, []).extend((record.position, record, value) for value in values)

    # -- definitions ---------------------------------------------------------------

    def definitions(self, name: str, before: int) -> list[Definition]:
        """Assignments to `name` earlier in the same iteration that can reach `before`: a plain
        assignment that runs whenever a block around the reading statement does (the loop's own
        block, or a test's body holding the read; `with` bodies are the block around them) hides
        every earlier one."""
        found = [d for d in self._definitions.get(name, ()) if d.position < before]
        reader = self._records.get(before)
        around = set(reader.blocks) if reader is not None and reader.blocks else {self._body_block}
        for index in range(len(found) - 1, 0, -1):
            latest = found[index]
            if latest.augmented is None and latest.statement.blocks and latest.statement.blocks[-1] in around:
                found = found[index:]
                break
        # Within one block, a plain assignment hides the earlier ones of that block.
        reaching: list[Definition] = []
        hidden_blocks: set[int] = set()
        for definition in reversed(found):
            block = id(definition.statement.block)
            if block in hidden_blocks:
                continue
            reaching.append(definition)
            if definition.augmented is None and not definition.statement.in_inner_loop:
                hidden_blocks.add(block)
        return list(reversed(reaching))

    def put_into(self, name: str) -> list[cst.BaseExpression]:
        """The values the iteration puts into container `name` (`name.append(v)`, `name[i] = v`)."""
        return [value for _, _, value in self._put_into.get(name, ())]

    def all_definitions(self, name: str) -> list[Definition]:
        return list(self._definitions.get(name, ()))

    def reassigned_between(self, name: str, start: int, end: int) -> bool:
        return any(start < d.position < end for d in self._definitions.get(name, ()))

    def reads(self, node: cst.CSTNode) -> set[str]:
        """Names and dotted names read in `node`."""
        return self.facts.tree.names_read(node)

    def scales_back(self, statement: cst.CSTNode, name: str, divisor: str) -> bool:
        """The statement multiplies what `name` holds by `divisor` again (`tr_loss += loss.item() * k`
        after `loss = loss / k`): it undoes the division to read the undivided value."""
        wanted = "".join(divisor.split())
        for node in self.facts.tree.find(statement, cst.BinaryOperation):
            if type(node.operator) is not cst.Multiply:
                continue
            for side, other in ((node.left, node.right), (node.right, node.left)):
                if name in self.reads(side) and "".join(code_of(other).split()).strip("()") == wanted.strip("()"):
                    return True
        return False

    def reads_before_binding(self, statement: cst.CSTNode) -> set[str]:
        """What a simple statement reads: of an assignment, its value (and an augmented target),
        not the names it binds."""
        found: set[str] = set()
        for small in getattr(statement, "body", ()):
            small_type = type(small)
            if small_type is cst.Assign or small_type is cst.AnnAssign:
                if small.value is not None:
                    found |= self.reads(small.value)
            elif small_type is cst.AugAssign:
                found |= self.reads(small.value) | self.reads(small.target)
            else:
                found |= self.reads(small)
        return found

    # -- what is a forward, what is a loss ---------------------------------------------------

    def forward_owner(self, key: int) -> tuple[str, bool] | None:
        """For a forward `forwards` returned (by id): the module it runs (`self.policy` of
        `self.policy.act(x)`, `model` of `model(x)`), and whether it is handed no data
        (`self.policy.get_entropy(role="policy")`: it reads what an earlier forward of that
        module left, so it builds no graph of its own)."""
        call = self._forward_calls.get(key)
        text = call_name(call) if call is not None else None
        if call is None or text is None:
            return None
        owner = text if type(call.func) is cst.Name or text in self.facts.modules_with_parameters else \
            text.rpartition(".")[0]
        handed_nothing = type(call.func) is cst.Attribute and all(
            arg.keyword is not None and _literal(arg.value) for arg in call.args)
        return owner, handed_nothing

    def unseen_method(self, key: int) -> tuple[str, str] | None:
        """For a forward `forwards` returned (by id) that calls a method other than the forward of
        a module whose class this module does not define (`self.agent.value(obs)`): the module and
        the method. Two such methods of one module may share what they compute (a trunk one runs
        and the other reads): RULES.md, *values the module cannot see*."""
        call = self._forward_calls.get(key)
        if call is None or type(call.func) is not cst.Attribute:
            return None
        text = call_name(call) or ""
        owner, _, method = text.rpartition(".")
        if not owner or method in ("forward", "__call__") or text in self.facts.modules_with_parameters \
                or self.module_class_method(owner, method):
            return None
        return owner, method

    def is_forward(self, call: cst.Call) -> bool:
        key = id(call)
        if key not in self._forward_memo:
            self._forward_memo[key] = self._classify_forward(call)
        return self._forward_memo[key]

    def _classify_forward(self, call: cst.Call) -> bool:
        if not any(arg.keyword is None for arg in call.args) and not call.args:
            return False
        if self.is_loss_call(call):
            return False
        func = call.func
        if type(func) is cst.Subscript:
            return self._module_container(func)  # `self.discriminators[i](x)`
        text = dotted_name(func)
        if text is None:
            return False
        parts = text.split(".")
        last = parts[-1]
        if text in self.facts.modules_with_parameters:
            return True  # its parameters are read: a module, whatever its name
        owner = ".".join(parts[:-1])
        if owner in self.facts.modules_with_parameters and last not in _MODULE_HOUSEKEEPING:
            return True  # `agent.get_value(x)`: a method of a module computes with its parameters
        if parts[0] in _NOT_MODEL_ROOTS or text in _NOT_MODEL_ROOTS or last in _BUILTINS:
            return False
        if owner and last not in _MODULE_HOUSEKEEPING and self.module_class_method(owner, last):
            return True  # `model.discriminator_forward(x)`: a method of a module class of this module
        if last in self.facts.functions and len(parts) == 1 and self._wraps_forward(last):
            return True  # `def D(x): return D_net(x)`: a forward under another name
        if last in self.facts.functions or last in self.facts.classes:
            return False  # a helper or a constructor of this module
        if len(parts) == 1 and self.facts.imported_from.get(last, "").split(".")[0] in LIBRARY_ROOTS:
            return False  # `Variable(x)`, `tensor(x)`: a library function, not a model
        if len(parts) == 1 and self._names_library_object(last):
            return False  # `Tensor = torch.cuda.FloatTensor if cuda else torch.FloatTensor`, then `Tensor(x)`
        if self._parameterless_module(text):
            return False  # `flatten = nn.Flatten()`: reshapes what it is given, builds no graph of its own
        if len(parts) > 1 and last == "forward":
            return self._classify_forward(call.with_changes(func=func.value)) if isinstance(func, cst.Attribute) else False
        if len(parts) == 1:
            return not last.startswith(("get_", "make_", "build_", "compute_", "load_", "to_", "prepare"))
        if parts[0] == "self" and len(parts) == 2:
            return True  # self.model(x): a method would be a function of this module
        return any(word in last.lower() for word in _MODEL_WORDS)

    def _module_container(self, func: cst.Subscript) -> bool:
        """`self.discriminators[i]` of a container of modules: one whose parameters the module reads
        (`self.discriminators.parameters()`), or made a `nn.ModuleList(...)`/`nn.ModuleDict(...)`
        (a list of modules first, wrapped later, is one too)."""
        text = dotted_name(func.value)
        if text is None:
            return False
        if text in self.facts.modules_with_parameters:
            return True
        return any(b.tuple_index is None and type(b.value) is cst.Call
                   and (call_name(b.value) or "").rpartition(".")[2] in ("ModuleList", "ModuleDict")
                   for b in self.facts.bindings.get(text, ()))

    def _parameterless_module(self, name: str) -> bool:
        """Every binding of `name` is a torch module that has no parameters (`nn.Flatten()`,
        `nn.ReLU()`, `nn.MaxPool2d(2)`, `nn.Softmax(dim=1)`)."""
        bound = self.facts.bindings.get(name, ())
        return bool(bound) and all(
            b.tuple_index is None and type(b.value) is cst.Call
            and (call_name(b.value) or "").split(".")[0] in ("nn", "torch")
            and (call_name(b.value) or "").rpartition(".")[2] in _PARAMETERLESS_MODULES for b in bound)

    def _wraps_forward(self, name: str) -> bool:
        """Every definition of the module's function `name` returns only a call of a module whose
        parameters the module reads (`return D_net(x)`)."""
        for function in self.facts.functions[name]:
            returns = [r.value for r in self.facts.tree.find(function.body, cst.Return, enter_scopes=False)]
            if not returns or not all(isinstance(value, cst.Call) and (dotted_name(value.func) or "")
                                      in self.facts.modules_with_parameters for value in returns):
                return False
        return True

    def module_class_method(self, owner: str, method: str) -> bool:
        """`owner` is only ever bound to an instance of a class of this module that subclasses a
        `Module` (`nn.Module`, `LightningModule`), and that class defines `method`."""
        bound = [b.value for b in self.facts.bindings.get(owner, ()) if b.tuple_index is None]
        if not bound:
            return False
        for value in bound:
            cls = self.facts.classes.get(call_name(value) or "") if isinstance(value, cst.Call) else None
            if cls is None or not any("Module" in (dotted_name(base.value) or "") for base in cls.bases):
                return False
            if not any(isinstance(statement, cst.FunctionDef) and statement.name.value == method
                       for statement in cls.body.body):
                return False
        return True

    def _returns_numbers(self, name: str) -> bool:
        """Every definition of the module's function `name` returns only values with no graph
        (`_no_graph_value`): `.item()`, `len(...)`, a comparison, a literal number, nothing."""
        known = self._number_functions.get(name)
        if known is None:
            known = self._number_functions[name] = all(
                all(_no_graph_value(r.value, func, self.facts)
                    for r in self.facts.tree.find(func.body, cst.Return, enter_scopes=False))
                for func in self.facts.functions[name])
        return known

    def _returns_unseen(self, name: str) -> bool:
        """Every definition of the module's function `name` returns the result of a function
        imported from a module the module cannot see (`return f1_score(y, pred)`)."""
        for func in self.facts.functions[name]:
            returns = [r.value for r in self.facts.tree.find(func.body, cst.Return, enter_scopes=False)]
            # (or a value with no graph on the other paths: `return 0.0` when nothing is left to score)
            if not returns or not all(isinstance(value, cst.Call) and (self._unseen(call_name(value) or "")
                                                                    or self._library_function(value))
                                      or _no_graph_value(value, func, self.facts) for value in returns):
                return False
        return True

    def _returns_filled_container(self, name: str) -> bool:
        """Every definition of the module's function `name` returns a container it made empty
        and filled (`output = dict()` ... `return output`): what the items hold is not read."""
        for function in self.facts.functions[name]:
            returns = [r.value for r in self.facts.tree.find(function.body, cst.Return, enter_scopes=False)]
            if not returns or not all(isinstance(value, cst.Name) for value in returns):
                return False
            for value in returns:
                made = [b.value for b in self.facts.bindings.get(value.value, ()) if b.scope is function]
                if not made or not all(_empty_container(m) for m in made):
                    return False
        return True

    def _library_function(self, call: cst.Call) -> bool:
        """A function of a scientific library the module imports that is not torch (sklearn,
        scipy): it computes on NumPy values, not on graphs."""
        text = call_name(call) or ""
        source = self.facts.imported_from.get(text.split(".")[0], "")
        return source.split(".")[0] in ("sklearn", "scipy", "numpy", "pandas")

    def _unpacks_number(self, definition: Definition) -> bool:
        """`_, pred = out.max(1)` for `pred` (the indices); `loss, elapsed = knn_loss(q, n)` for
        `elapsed`: a function of this module whose every return is a tuple as long as the
        target holding, at that place, a value with no graph."""
        value, index = definition.value, definition.index
        if index is None or not isinstance(value, cst.Call):
            return False
        if index == 1 and _indices_of(value):
            return True
        text = call_name(value) or ""
        owner, _, method = text.rpartition(".")
        if owner == "self" or owner and self.module_class_method(owner, method):
            text = method  # `self.split(x)`, `model.pair_loss(a, b)`: a method this module defines
        functions = self.facts.functions.get(text)
        if not functions:
            return False
        for func in functions:
            returns = list(self.facts.tree.find(func.body, cst.Return, enter_scopes=False))
            if not returns or not all(
                    isinstance(r.value, cst.Tuple) and len(r.value.elements) > index
                    and not any(isinstance(e, cst.StarredElement) for e in r.value.elements)
                    and _no_graph_value(r.value.elements[index].value, func, self.facts) for r in returns):
                return False
        return True

    def _names_library_object(self, name: str) -> bool:
        """Every binding of `name` is an object of a library module (`torch.FloatTensor`), or a
        choice between such objects."""
        bindings = self.facts.bindings.get(name, [])
        return bool(bindings) and all(b.tuple_index is None and self._library_object(b.value) for b in bindings)

    def _library_object(self, node: cst.BaseExpression) -> bool:
        if isinstance(node, cst.IfExp):
            return self._library_object(node.body) and self._library_object(node.orelse)
        text = dotted_name(node) if isinstance(node, cst.Attribute) else None
        if text is None:
            return False
        root = text.split(".")[0]
        return root in LIBRARY_ROOTS or self.facts.imported_from.get(root, "").split(".")[0] in LIBRARY_ROOTS

    def is_loss_call(self, call: cst.Call) -> bool:
        if type(call.func) is cst.Call:  # `nn.BCEWithLogitsLoss()(pred, y)`: a loss module made and called at once
            return makes_loss_module(call.func)
        text = call_name(call) or ""
        last = text.rsplit(".", 1)[-1].lower()
        if not last:
            return False
        if "loss" in last or last in {"criterion", "crit"} or last in _FUNCTIONAL_LOSSES:
            return True
        bound = self.facts.bindings.get(text, ())
        if "." not in text:
            # A plain name: the loop function's own bindings, else the module's; a parameter the
            # function does not bind holds what its call sites hand it (RULES.md, facts along calls).
            function = self.facts.tree.enclosing_function(self.loop_node)
            own = [b for b in bound if function is not None and b.scope is function]
            if not own and function is not None and text in parameter_names(function):
                return text in self.loss_parameters
            bound = own or [b for b in bound if b.scope is None]
        return any(makes_loss_module(binding.value) for binding in bound)

    def is_reduced_loss(self, node: cst.BaseExpression, before: int) -> bool:
        """A loss reduced to a scalar: a loss call, `.mean()`/`.sum()`, or a name holding one."""
        if (isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Multiply)
                and _is_weight(node.left) and _is_weight(node.right)):
            # `v_loss * coef` or `coef * v_loss`: whichever side is the loss
            return self.is_reduced_loss(node.left, before) or self.is_reduced_loss(node.right, before)
        node = _strip_weights(node)
        while isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
            node = _strip_weights(node.expression)
        if isinstance(node, cst.Call):
            if self.is_loss_call(node):
                return True
            func = node.func
            if isinstance(func, cst.Attribute) and func.attr.value in _REDUCTIONS:
                return True  # x.mean(), torch.mean(x)
            return False
        if isinstance(node, (cst.Name, cst.Attribute)):
            text = dotted_name(node)
            if text is None:
                return False
            found = self.definitions(text, before)
            if not found or any(d.unpacked or d.augmented is not None for d in found):
                return False
            # one definition per branch of a configuration switch: each must be a reduced loss
            return all(self.is_reduced_loss(d.value, d.position) for d in found)
        return False

    def is_loss_sum(self, node: cst.BaseExpression, before: int, depth: int = 0) -> bool:
        """A sum or weighted sum of reduced losses, itself one scalar loss: `(adv + aux) / 2`,
        `(l1 + l2) + l3`'s `(l1 + l2)`, or a name holding one."""
        if depth > 12:
            return False
        node = _strip_weights(node)
        if isinstance(node, (cst.Name, cst.Attribute)):
            text = dotted_name(node)
            found = self.definitions(text, before) if text is not None else []
            if not found or any(d.unpacked or d.augmented is not None for d in found):
                return False
            return all(self.is_loss_sum(d.value, d.position, depth + 1) for d in found)
        terms = combination_terms(node)
        return bool(terms) and all(  # type: ignore[arg-type]
            self.is_reduced_loss(term, before) or self.is_loss_sum(term, before, depth + 1) for term in terms)

    # -- graphs ------------------------------------------------------------------------

    def forwards(self, node: cst.CSTNode, before: int, depth: int = 0) -> frozenset[int]:
        """The forward calls whose graphs `node` carries (ids of the call nodes)."""
        if depth > 12:  # hops through definitions (an expression's own nesting is finite)
            return frozenset()
        if isinstance(node, cst.Call):
            func = node.func
            text = call_name(node) or ""
            last = text.rsplit(".", 1)[-1] if text else (func.attr.value if isinstance(func, cst.Attribute) else "")
            if (last in _NO_GRAPH or text in _NUMBER_BUILTINS or text == "torch.tensor" or last == "one_hot") \
                    and not self.through_values:
                return frozenset()  # `torch.tensor(x)` copies data without a graph; one-hot codes are integers
            if text.endswith("autograd.grad"):
                create_graph = keyword_argument(node, "create_graph")
                if create_graph is None or (isinstance(create_graph, cst.Name) and create_graph.value == "False"):
                    return frozenset()  # gradients made without `create_graph=True` carry no graph
            if self.strict and (self._unseen(text) or self._unseen_object(text) or self._unseen_method(text)
                                or self._unseen_callable(node, text)
                                or isinstance(func, cst.Subscript) and not self._module_container(func)):
                return frozenset()  # RULES.md, *values the module cannot see*: not known to carry a graph
            # A method of the same class, reached as `self.name`, or of a module class of this module
            # reached through its instance (`net.evaluation(out, y)`).
            owner = text[:-len(last) - 1] if text.endswith(f".{last}") else ""
            helper = last if text == f"self.{last}" or (owner and self.module_class_method(owner, last)) else text
            if helper in self.facts.functions and self._returns_numbers(helper):
                return frozenset()  # `def accuracy(out, y): return (...).sum().item()`
            if self.strict and helper in self.facts.functions and self._returns_unseen(helper):
                return frozenset()  # `def metric(p, y): return f1_score(y, p)`: what it returns is not visible
            if self.strict and helper in self.facts.functions and self._returns_filled_container(helper):
                return frozenset()  # `out = {}; out[k] = v.detach(); return out`: its items are not read
            found: set[int] = set()
            if self.is_forward(node):
                found.add(id(node))
                self._forward_calls[id(node)] = node
            if last in _CALLS_A_FUNCTION and any(isinstance(a.value, (cst.Name, cst.Attribute, cst.Lambda))
                                                 for a in node.args[:1]):
                found.add(UNKNOWN_GRAPH)  # `torch.func.jvp(model_fn, ...)`: which forwards it runs is not visible
            for arg in node.args:
                found |= self.forwards(arg.value, before, depth)
            if isinstance(func, cst.Attribute):
                found |= self.forwards(func.value, before, depth)
            return frozenset(found)
        if isinstance(node, (cst.Name, cst.Attribute)):
            if isinstance(node, cst.Attribute) and node.attr.value in {"data", "grad", "shape", "device", "dtype"} \
                    and not (self.through_values and node.attr.value == "data"):
                return frozenset()
            if isinstance(node, cst.Attribute) and node.attr.value == "indices" and _indices_of(node.value):
                return frozenset()  # `out.topk(5).indices`
            text = dotted_name(node)
            if text is not None and text in self._definitions:
                return self._name_forwards(text, before, depth)
            if isinstance(node, cst.Attribute):
                return self.forwards(node.value, before, depth)
            return frozenset()
        if isinstance(node, cst.Subscript):
            if _indices_of(node.value) and len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index) \
                    and isinstance(node.slice[0].slice.value, cst.Integer) and node.slice[0].slice.value.value == "1":
                return frozenset()  # `out.max(dim=1)[1]`: the indices, integers
            return self.forwards(node.value, before, depth)
        if isinstance(node, (cst.Lambda, cst.BaseString, cst.Integer, cst.Float, cst.Comparison)):
            return frozenset()
        if isinstance(node, (cst.ListComp, cst.GeneratorExp, cst.SetComp)) and not self.through_values:
            element = node.elt
            if isinstance(element, cst.Call) and isinstance(element.func, cst.Attribute) \
                    and element.func.attr.value in _NO_GRAPH:
                return frozenset()  # `[t.detach() for t in outputs]`: every item is detached
        if isinstance(node, cst.BinaryOperation):
            if isinstance(node.operator, cst.Modulo) and isinstance(node.left, cst.BaseString):
                return frozenset()  # `"%s: %.4f" % (k, loss)`: a string
            return self.forwards(node.left, before, depth) | self.forwards(node.right, before, depth)
        if isinstance(node, cst.UnaryOperation):
            return self.forwards(node.expression, before, depth)
        found = set()
        for child in self.facts.tree.children(node):
            if isinstance(child, cst.BaseExpression) or isinstance(child, (cst.Arg, cst.Element, cst.StarredElement)):
                found |= self.forwards(child, before, depth)
        return frozenset(found)

    def _name_forwards(self, name: str, before: int, depth: int) -> frozenset[int]:
        key = (name, before)
        cached = self._memo.get(key)
        # a result found with less of the hop budget left may have been cut short: recompute it
        if cached is None or cached[1] > depth:
            self._memo[key] = (frozenset(), depth)  # a cycle reads as "no graph"
            found: set[int] = set()
            for definition in self.definitions(name, before):
                if (definition.statement.without_grad or self._unpacks_number(definition)) and not self.through_values:
                    continue
                found |= self.forwards(definition.value, definition.position, depth + 1)
            for position, record, value in self._put_into.get(name, ()):
                if position < before and not record.without_grad:  # a list the iteration fills: its items' graphs
                    found |= self.forwards(value, position, depth + 1)
            self._memo[key] = (frozenset(found), depth)
        return self._memo[key][0]

    def carries_graph(self, node: cst.CSTNode, before: int) -> bool:
        return bool(self.forwards(node, before))

    def visibly_carries_graph(self, node: cst.CSTNode, before: int) -> bool:
        """Like `carries_graph`, but the result of a function imported from a module of the
        project (a helper the module cannot see) is not known to carry one."""
        self.strict, memo = True, self._memo
        self._memo = {}
        try:
            return bool(self.forwards(node, before))
        finally:
            self.strict, self._memo = False, memo

    def _unseen(self, text: str) -> bool:
        root = text.split(".")[0]
        source = self.facts.imported_from.get(root)
        if source is not None:
            return source.split(".")[0] not in LIBRARY_ROOTS
        return bool(root) and self._star_imported(root)

    def _star_imported(self, name: str) -> bool:
        """`name` is bound nowhere in the module, nor a builtin, and the module takes every name
        of a module of the project (`from utils import *`): it is one of those."""
        facts = self.facts
        if name in _PYTHON_BUILTINS or name in facts.functions or name in facts.classes or name in facts.bindings:
            return False
        if not any(source == "." or source.split(".")[0] not in LIBRARY_ROOTS for source in facts.star_imported):
            return False
        function = facts.tree.enclosing_function(self.loop_node)
        return function is None or name not in parameter_names(function)

    def _unseen_object(self, text: str) -> bool:
        """`acc_fn = Accuracy(...)` (a class imported from the project or a package the module
        cannot see), then `acc_fn(out, y)`: what the call returns is not visible, unless the
        object is visibly a trained module (its parameters are read)."""
        if text in self.facts.modules_with_parameters:
            return False
        bound = self.facts.bindings.get(text, ())
        made = [moved_to_device(b.value) for b in bound if b.tuple_index is None]
        return bool(bound) and len(made) == len(bound) and all(
            isinstance(value, cst.Call) and self._unseen(call_name(value) or "") for value in made)

    def _unseen_callable(self, call: cst.Call, text: str) -> bool:
        """A call of a name that only stands for a function the module cannot see: a local alias
        of imported ones (`acc_fn = accuracy`, `fn = U.kd if soft else U.ce`), or a parameter
        handed in (`metric(out, y)`) that is neither a trained module nor a loss."""
        if not text or "." in text or text in self.facts.modules_with_parameters or self.is_loss_call(call):
            return False
        function = self.facts.tree.enclosing_function(self.loop_node)
        parameter = function is not None and text in parameter_names(function)
        # Only the bindings the loop can read: its function's own, or the module's for a name the
        # function neither takes nor binds (`loader, mixup = make()` in `main` is another `mixup`).
        bound = self.facts.bindings.get(text, ())
        own = [b for b in bound if function is not None and b.scope is function]
        bound = own or ([] if parameter else [b for b in bound if b.scope is None])
        if bound:
            leaves = []
            for binding in bound:
                value = binding.value
                arms = [value.body, value.orelse] if isinstance(value, cst.IfExp) else [value]
                if binding.tuple_index is not None or not all(isinstance(arm, (cst.Name, cst.Attribute)) for arm in arms):
                    return False
                leaves += [dotted_name(arm) or "" for arm in arms]
            return all(self._unseen(leaf) for leaf in leaves)
        if any(word in text.lower() for word in _MODEL_WORDS):
            return False  # `model(x)` handed in: a forward, whatever reads its parameters
        return parameter

    def _unseen_method(self, text: str) -> bool:
        """`model.training_step(batch)`: a method other than the forward, of a trained module
        whose class this module does not define; what it returns (often `.item()`s or NumPy
        arrays) is not visible. So is a method of an object of a class the module cannot see
        (`meter = Meter()`, then `meter.score(out, y)`), of a callable handed in (`criterion`
        called as `criterion(out, y)`, then `criterion.dice(out, y)`), or any method of a
        parameter that no tensor has (`metrics.acc(out, y)`)."""
        owner, _, method = text.rpartition(".")
        if not owner or method in ("forward", "__call__"):
            return False
        if owner == "self" and (text in self.facts.bindings or text in self.facts.modules_with_parameters
                                or self._own_class_defines(method)):
            # `self.net(x)`: an attribute the class binds; `self.crit(out, y)`: a method it defines
            return False
        if owner in self.facts.modules_with_parameters:
            return not self.module_class_method(owner, method)
        if "." in owner:
            return False
        return self._unseen_object(owner) or self._called_parameter(owner) or (
            method not in TENSOR_METHODS and self._handed_in(owner))

    def _own_class_defines(self, method: str) -> bool:
        """The class whose method holds the loop defines `method` itself."""
        function = self.facts.tree.enclosing_function(self.loop_node)
        return function is not None and any(
            self.facts.tree.contains(cls, function) and any(
                type(statement) is cst.FunctionDef and statement.name.value == method for statement in cls.body.body)
            for cls in self.facts.classes.values())

    def _handed_in(self, name: str) -> bool:
        """A parameter of the loop's function that the function never binds: its type is not visible."""
        function = self.facts.tree.enclosing_function(self.loop_node)
        if function is None or name not in parameter_names(function):
            return False
        return not any(b.scope is function for b in self.facts.bindings.get(name, ()))

    def _called_parameter(self, name: str) -> bool:
        """A parameter handed in (`_handed_in`) that the function calls: an object, not a tensor."""
        if not self._handed_in(name):
            return False
        function = self.facts.tree.enclosing_function(self.loop_node)
        tree = self.facts.tree
        return any(tree.contains(function, call) for call in self.facts.calls.get(name, ()))

    def made_from(self, node: cst.CSTNode, before: int) -> frozenset[int]:
        """The forward calls whose outputs `node` is computed from, detached or not
        (`ce(out1, out2.detach().argmax(1))` reads both forwards' outputs)."""
        self.through_values, memo = True, self._memo
        self._memo = {}
        try:
            return self.forwards(node, before)
        finally:
            self.through_values, self._memo = False, memo

    def tensors_read(self, node: cst.CSTNode, before: float, depth: int = 0) -> set[str]:
        """The names whose graphs `node` is computed from, through the loop's assignments before
        `before`: not through a detached value (`.detach()`, `.item()`) or one made without grad."""
        tree = self.facts.tree
        names = tree.names_read(node)
        cut = [call for call in tree.find(node, cst.Call) if type(call.func) is cst.Attribute
               and call.func.attr.value in _NO_GRAPH]
        if cut:  # a name read only inside `x.detach()` carries no graph here
            outside = {dotted_name(found) for found in tree.find(node, cst.Name, cst.Attribute)
                       if not any(tree.contains(call, found) for call in cut)}
            names &= outside
        found: set[str] = set()
        for name in names:
            found.add(name)
            if depth < 8:
                for definition in self.definitions(name, before):  # type: ignore[arg-type]
                    if not definition.statement.without_grad:
                        found |= self.tensors_read(definition.value, definition.position, depth + 1)
        return found

    def optimized_inputs(self) -> frozenset[str]:
        """Tensors the code itself makes require grad, in the loop's function (or the module):
        `w.requires_grad = True`, `w.requires_grad_()`, `torch.zeros(..., requires_grad=True)`,
        `nn.Parameter(...)`: an input being optimised (an adversarial perturbation, an image)."""
        if self._optimized is None:
            tree = self.facts.tree
            scope = tree.enclosing_function(self.loop_node)
            nodes = tree.find(scope, cst.Assign, cst.Call) if scope is not None else tree.ordered(cst.Assign, cst.Call)
            found: set[str] = set()
            for node in nodes:
                if type(node) is cst.Assign:
                    for target in node.targets:
                        if type(target.target) is cst.Attribute and target.target.attr.value == "requires_grad" \
                                and type(node.value) is cst.Name and node.value.value == "True":
                            found.add(dotted_name(target.target.value) or "")
                    value = node.value
                    made = type(value) is cst.Call and (
                        (call_name(value) or "").rpartition(".")[2] == "Parameter"
                        or any(a.keyword is not None and a.keyword.value == "requires_grad"
                               and type(a.value) is cst.Name and a.value.value == "True" for a in value.args))
                    if made:
                        found.update(name for target in node.targets if (name := dotted_name(target.target)))
                elif type(node.func) is cst.Attribute and node.func.attr.value == "requires_grad_" and not (
                        node.args and type(node.args[0].value) is cst.Name and node.args[0].value.value == "False"):
                    found.add(dotted_name(node.func.value) or "")
            # `discriminator.requires_grad_(False)` freezes a module's parameters: no input of the loop
            self._optimized = frozenset(found - {""} - self.facts.modules_with_parameters)
        return self._optimized

    def forward_inputs_are_loop_data(self, forward_ids: frozenset[int], before: int) -> bool:
        """Every forward's arguments carry no graph of another forward."""
        calls = {id(c): c for c in self.facts.tree.find(self.loop_node, cst.Call) if id(c) in forward_ids}
        for call in calls.values():
            for arg in call.args:
                if self.forwards(arg.value, before) - {id(call)}:
                    return False
                if _detached_forward(arg.value, self, before):
                    return False
        return True


def _no_graph_value(node: cst.BaseExpression | None, func: cst.FunctionDef, facts: ModuleFacts, depth: int = 0,
                    resolving: frozenset[str] = frozenset()) -> bool:
    """A value `func` returns that visibly carries no graph: nothing, a literal number, a
    comparison (a boolean tensor), `.data`, a call that makes a number, an integer or a detached
    value (`.item()`, `.argmax()`, `len(...)`), or a local name bound once to one of those.
    `resolving`: the names whose bindings are being read; a binding made from the name itself
    (`rate = rate / n`) adds no graph the name's other bindings do not bring."""
    if node is None or isinstance(node, (cst.Integer, cst.Float, cst.Comparison)):
        return True
    if type(node) in (cst.List, cst.Tuple):  # `[lo.item(), hi.item()]`: every item without a graph
        return all(type(e) is cst.Element and _no_graph_value(e.value, func, facts, depth, resolving)
                   for e in node.elements)  # type: ignore[attr-defined]
    if isinstance(node, cst.BinaryOperation):  # `float(correct) / (n * m)`: numbers make numbers
        return _no_graph_value(node.left, func, facts, depth, resolving) and \
            _no_graph_value(node.right, func, facts, depth, resolving)
    if isinstance(node, cst.UnaryOperation):
        return _no_graph_value(node.expression, func, facts, depth, resolving)
    if isinstance(node, cst.Attribute):
        return node.attr.value in {"data", "shape", "device", "dtype"}
    if isinstance(node, cst.Subscript):  # `correct.data[0]`, `out.shape[0]`: a part of a value with no graph
        return depth < 4 and _no_graph_value(node.value, func, facts, depth + 1, resolving)
    if isinstance(node, cst.Call):
        text = call_name(node) or ""
        last = text.rsplit(".", 1)[-1] if text else (node.func.attr.value if isinstance(node.func, cst.Attribute) else "")
        if (last in _NO_GRAPH and isinstance(node.func, cst.Attribute)) or text in _NUMBER_BUILTINS or (
                text.split(".")[0] in _NUMBER_MODULES and text.count(".") == 1 and text.split(".")[0] not in facts.bindings):
            return True
        # A tensor method of a value with no graph, or a torch function, given only values with
        # no graph (`(pred == y).float().mean()`, `torch.max(out.data, 1)`), makes none.
        if not isinstance(node.func, cst.Attribute) or depth >= 4:
            return False
        receiver = node.func.value
        return (dotted_name(receiver) in _TENSOR_MODULES or _no_graph_value(receiver, func, facts, depth + 1, resolving)) \
            and all(_no_graph_value(argument.value, func, facts, depth + 1, resolving) for argument in node.args)
    if isinstance(node, cst.Name) and node.value in resolving:
        return True
    if isinstance(node, cst.Name) and depth < 4:
        # Unpacked too (`_, predicted = torch.max(out.data, 1)`): every part of a value with no graph has none.
        bound = [b for b in facts.bindings.get(node.value, ()) if b.scope is func]
        if len(bound) > 1 and any(bound[-1].statement is line for statement in func.body.body
                                  if isinstance(statement, cst.SimpleStatementLine) for line in statement.body) \
                and (node.value not in facts.tree.names_read(bound[-1].value) or _no_graph_value(
                    bound[-1].value, func, facts, depth + 1, resolving - {node.value})):
            # `is_correct = is_correct.sum().item()` on the function's own block: the value returned
            # (made from the name itself, it stands alone only where it carries no graph whatever the name held)
            bound = bound[-1:]
        # Bound in several arms (`n = 0` / `n = (...).sum().item()`): none of them carries a graph.
        inner = resolving | {node.value}
        return bool(bound) and all(_no_graph_value(b.value, func, facts, depth + 1, inner) for b in bound)
    return False


def _empty_container(node: cst.BaseExpression) -> bool:
    """`{}`, `[]`, `dict()`, `list()`, `OrderedDict()`: an empty container."""
    if isinstance(node, (cst.Dict, cst.List)):
        return not node.elements
    return isinstance(node, cst.Call) and not node.args and (call_name(node) or "").rpartition(".")[2] in (
        "dict", "list", "OrderedDict", "defaultdict")


def _indices_of(node: cst.BaseExpression) -> bool:
    """A call returning (values, indices) along a dimension: `out.max(1)`, `torch.max(out, dim=1)`,
    `x.topk(5)`, `x.sort()`; `max()` of everything returns one value and is not one."""
    if not isinstance(node, cst.Call) or not isinstance(node.func, cst.Attribute):
        return False
    method = node.func.attr.value
    if method in {"topk", "sort", "kthvalue"}:
        return True
    if method not in {"max", "min", "median", "mode"}:
        return False
    positional = [a for a in node.args if a.keyword is None]
    is_function = dotted_name(node.func.value) == "torch"
    return keyword_argument(node, "dim") is not None or (
        len(positional) >= (2 if is_function else 1)
        and isinstance(positional[1 if is_function else 0].value, (cst.Integer, cst.UnaryOperation)))


def _detached_forward(node: cst.BaseExpression, flow: GraphFlow, before: int) -> bool:
    """`fake.detach()` where `fake` came from a forward: the input is another model's output."""
    for call in flow.facts.tree.find(node, cst.Call):
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value in {"detach", "data"}:
            if flow.forwards(func.value, before):
                return True
    return False


def _strip_weights(node: cst.BaseExpression) -> cst.BaseExpression:
    """`0.5 * loss`, `loss * w`, `loss / k` -> `loss` (the side that is not a plain number or name)."""
    while isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Multiply, cst.Divide)):
        if isinstance(node.operator, cst.Divide) or _is_weight(node.left):
            node = node.left if isinstance(node.operator, cst.Divide) else node.right
        elif _is_weight(node.right):
            node = node.left
        else:
            break
    return node


# torch.nn modules without parameters: calling one reshapes or maps its input, it runs no model.
_PARAMETERLESS_MODULES = frozenset({
    "Flatten", "Unflatten", "Identity", "ReLU", "ReLU6", "LeakyReLU", "ELU", "SELU", "CELU", "GELU", "SiLU",
    "Mish", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Softplus", "Softsign", "Hardtanh", "Hardswish",
    "Hardsigmoid", "Dropout", "Dropout2d", "Dropout3d", "AlphaDropout", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "Upsample", "PixelShuffle", "PixelUnshuffle",
    "ZeroPad2d", "ConstantPad2d", "ReflectionPad2d", "ReplicationPad2d", "CosineSimilarity", "PairwiseDistance",
})


def _literal(node: cst.BaseExpression) -> bool:
    """A string, number, `True`, `False` or `None` written as such."""
    return type(node) in (cst.SimpleString, cst.Integer, cst.Float) or (
        type(node) is cst.Name and node.value in ("True", "False", "None"))


def _is_weight(node: cst.BaseExpression) -> bool:
    """A plain number or name, or a product or quotient of them (`0.5 * r1_gamma`, `lam / 2`),
    or one negated (`-1 * entropy`, `-0.01`)."""
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Multiply, cst.Divide)):
        return _is_weight(node.left) and _is_weight(node.right)
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, (cst.Minus, cst.Plus)):
        return _is_weight(node.expression)
    return isinstance(node, (cst.Integer, cst.Float)) or (
        isinstance(node, (cst.Name, cst.Attribute, cst.Subscript)) and not isinstance(node, cst.Call))


def combination_terms(node: cst.BaseExpression) -> list[cst.BaseExpression] | None:
    """`a + b + c`, `w1 * a + w2 * b`, `sum([a, b])` -> the terms; None when not a sum."""
    if isinstance(node, cst.Call) and call_name(node) == "sum" and len(node.args) == 1:
        value = node.args[0].value
        if isinstance(value, (cst.List, cst.Tuple)) and not any(isinstance(e, cst.StarredElement) for e in value.elements):
            return [element.value for element in value.elements]
        return None
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Add, cst.Subtract)):
        left = combination_terms(node.left) if not node.left.lpar else None
        right: list[cst.BaseExpression] | None = None
        if isinstance(node.operator, cst.Add):
            right = combination_terms(node.right) if not node.right.lpar else None
        else:
            # `a - b`: the subtracted loss is its own term (no fix rebuilds it).
            right = [cst.UnaryOperation(cst.Minus(), node.right)]
        return (left or [node.left]) + (right or [node.right])
    return None


def strip_scaling(node: cst.BaseExpression) -> cst.BaseExpression:
    """`(a + b) / k` -> `a + b`: the combination under an accumulation division; `-(a - b)` ->
    `a - b` (a WGAN critic's loss: the negation is linear, as a weight is)."""
    while isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Divide, cst.Multiply)) or (
            isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus)):
        if isinstance(node, cst.UnaryOperation):
            node = node.expression
        elif isinstance(node.operator, cst.Divide) or _is_weight(node.right):
            node = node.left
        elif _is_weight(node.left):
            node = node.right
        else:
            break
    return node
