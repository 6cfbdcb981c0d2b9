"""What names and calls mean in a training loop.

One table of recognisers, so that every rule agrees on what an optimizer, a
scheduler or a framework object is. The recognisers are deliberately narrow:
an object we cannot recognise is not a step, and a loop we cannot read stays
silent (RULES.md: prefer silence over a guess).
"""

from __future__ import annotations

import io
import re
import tokenize
from typing import Callable, TYPE_CHECKING

import libcst as cst

if TYPE_CHECKING:
    from gacclint.loops.lean import Layout

# A name "looks like" an optimizer when one of its word parts is one of these.
_OPTIMIZER_WORDS = {"opt", "optim", "optimizer", "optimiser", "optimizers", "opts", "optims"}
# `optg`, `opt1`, `optimizerd`: the word glued to a one-character tag.
_OPTIMIZER_TAGGED = re.compile(r"^(opt|optim|optimi[sz]er)[a-z0-9]$")
_SCHEDULER_HINTS = ("sched", "lr_", "warmup", "scheduler")
_WORD_SPLIT = re.compile(r"[_\W]+|(?<=[a-z0-9])(?=[A-Z])")

# Objects whose `.backward(loss)` takes the loss as an argument.
FRAMEWORK_BACKWARD_OWNERS = {"accelerator", "fabric", "model", "model_engine", "net"}
DEEPSPEED_HINTS = ("engine", "deepspeed", "ds_model")
# `mp_trainer.backward(loss)`, `dist_autograd.backward(ctx, [loss])`; DeepSpeed's
# engine is often just `model`.
FRAMEWORK_OTHER_BACKWARD_HINTS = ("trainer", "dist_autograd", "engine")

# Calls whose result never changes inside a loop, so they may appear in a
# configuration switch (`if len(loader) > 1:`).
PURE_CALLS = {"len", "isinstance", "hasattr", "getattr", "bool", "int", "callable", "is_available"}

# Names of optimizer constructors we recognise even without `torch.optim.`.
OPTIMIZER_CONSTRUCTORS = {
    "SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "ASGD", "LBFGS", "NAdam",
    "RAdam", "RMSprop", "Rprop", "SparseAdam", "Adafactor", "Lion", "LAMB", "Lamb",
    "FusedAdam", "FusedLAMB", "DeepSpeedCPUAdam", "AdamW8bit", "Adam8bit", "ZeroRedundancyOptimizer",
}


# Packages whose functions a module reads as library code, not as the project's own helpers.
LIBRARY_ROOTS = frozenset({"torch", "numpy", "math", "random", "functools", "itertools", "einops", "scipy", "PIL",
                           "torchvision", "collections", "copy", "operator", "time", "os", "sys"})
# Keyword arguments of the usual schedulers that count scheduler steps.
LENGTH_KEYWORDS = frozenset({
    "num_training_steps", "num_warmup_steps", "T_max", "total_steps", "total_iters", "warmup_steps",
    "max_steps", "num_steps", "step_size", "T_0", "decay_steps", "first_cycle_steps", "warmup_iters",
    "max_iters", "num_cycles_steps",
})
# Positional arguments that do (after the optimizer), by the constructor's last name.
_WARMUP_AND_TOTAL = {1: "num_warmup_steps", 2: "num_training_steps"}
LENGTH_POSITIONS: dict[str, dict[int, str]] = {
    "CosineAnnealingLR": {1: "T_max"},
    "CosineAnnealingWarmRestarts": {1: "T_0"},
    "StepLR": {1: "step_size"},
    "get_linear_schedule_with_warmup": _WARMUP_AND_TOTAL,
    "get_cosine_schedule_with_warmup": _WARMUP_AND_TOTAL,
    "get_cosine_with_hard_restarts_schedule_with_warmup": _WARMUP_AND_TOTAL,
    "get_polynomial_decay_schedule_with_warmup": _WARMUP_AND_TOTAL,
    "get_constant_schedule_with_warmup": {1: "num_warmup_steps"},
}


def schedule_lengths(call: cst.Call) -> list[tuple[str, cst.Arg]]:
    """The arguments of a scheduler's construction that count scheduler steps, by name."""
    positions = LENGTH_POSITIONS.get((dotted_name(call.func) or "").rsplit(".", 1)[-1], {})
    positional = [a for a in call.args if a.keyword is None and not a.star]
    found = []
    for argument in call.args:
        if argument.keyword is not None:
            if argument.keyword.value in LENGTH_KEYWORDS:
                found.append((argument.keyword.value, argument))
        elif not argument.star:
            place = next((i for i in positions if i < len(positional) and positional[i] is argument), None)
            if place is not None:
                found.append((positions[place], argument))
    return found


def words(name: str) -> list[str]:
    """Split `g_optimizerD` / `optG` / `lr_scheduler` into lower-case word parts."""
    return [w.lower() for w in _WORD_SPLIT.split(name) if w]


def last_name(text: str) -> str:
    """`self.trainer.optimizer` -> `optimizer`; `opts[0]` -> `opts`."""
    text = text.split("[", 1)[0]
    return text.rsplit(".", 1)[-1]


def looks_like_optimizer(text: str) -> bool:
    name = last_name(text)
    lowered = name.lower()
    # Every optimizer word holds "opt": a name without it has no such part, and splitting it
    # (asked of every name bound to a call) is spared.
    if "opt" not in lowered or any(hint in lowered for hint in _SCHEDULER_HINTS):
        return False
    return any(part in _OPTIMIZER_WORDS or _OPTIMIZER_TAGGED.match(part) for part in words(name))


def looks_like_scheduler(text: str) -> bool:
    lowered = last_name(text).lower()
    return "sched" in lowered or lowered in {"lr", "lr_policy"} or lowered.startswith("lr_")


def looks_like_scaler(text: str) -> bool:
    return "scaler" in last_name(text).lower()


def looks_like_deepspeed_engine(text: str) -> bool:
    lowered = last_name(text).lower()
    return any(hint in lowered for hint in DEEPSPEED_HINTS)


def looks_like_accelerator(text: str) -> bool:
    return "accelerator" in last_name(text).lower()


def looks_like_fabric(text: str) -> bool:
    return "fabric" in last_name(text).lower()


def integer_value(node: cst.Integer) -> int:
    """The value of an integer literal. libcst's `evaluated_value` runs `ast.literal_eval`,
    which compiles the text and leaves a self-calling closure behind for the cycle collector;
    `int(text, 0)` reads every form of integer literal Python accepts (`0x1F`, `0o17`, `1_000`)."""
    return int(node.value, 0)


def keyword_argument(call: cst.Call, name: str) -> cst.BaseExpression | None:
    """The value of the call's keyword argument `name` (`enabled=` of `GradScaler(enabled=...)`)."""
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == name:
            return arg.value
    return None


def assignment_targets(node: cst.CSTNode) -> list[cst.BaseExpression]:
    """What an assignment binds: each target of `a = b = v`, the target of `x += 1` and of
    `x: int = 0`; nothing for any other statement."""
    if isinstance(node, cst.Assign):
        return [t.target for t in node.targets]
    if isinstance(node, (cst.AugAssign, cst.AnnAssign)):
        return [node.target]
    return []


def string_value(node: cst.SimpleString) -> str:
    """The value of a string literal, read from its text when it is plain (no prefix, no
    escapes): `evaluated_value` runs `ast.literal_eval`, and its self-calling closure is left
    for the cycle collector (see integer_value)."""
    text = node.value
    if text[:1] in "\"'" and "\\" not in text:
        quote = 3 if text[:3] in ('"""', "'''") else 1
        return text[quote:-quote]
    return node.evaluated_value  # type: ignore[return-value]


_EMPTY_MODULE = cst.Module(body=[])
# id(node) -> (node, text): nodes are immutable, so a node's text never changes. The node is
# kept so its id cannot be reused while the entry lives; `forget_code` empties it per module.
_CODE_MEMO: dict[int, tuple[cst.CSTNode, str]] = {}
# The source of the module being read, for a lean tree (gacclint/loops/lean.py), whose
# nodes hold no layout to print.
_layout: Layout | None = None


def code_in_one_line(node: cst.CSTNode) -> str:
    """`code_of(node)` for a message: an expression written over several lines, on one line
    without its comments (a line break inside a message splits a finding's row)."""
    text = code_of(node)
    if "\n" not in text and "\r" not in text:
        return text
    parts: list[str] = []
    end = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
                continue
            gap = end is not None and token.start != end
            if parts and gap and parts[-1] not in ("(", "[", "{") and token.string not in (")", "]", "}", ","):
                parts.append(" ")
            parts.append(token.string)
            end = token.end
    except (tokenize.TokenError, SyntaxError):
        return " ".join(text.split())
    return "".join(parts)


def code_of(node: cst.CSTNode) -> str:
    """Source text of an expression node, without its surrounding whitespace."""
    if type(node) is cst.Name and not node.lpar:
        return node.value
    found = _CODE_MEMO.get(id(node))
    if found is not None and found[0] is node:
        return found[1]
    text = _layout.text(node) if _layout is not None else None
    if text is None:
        text = _EMPTY_MODULE.code_for_node(node).strip()
    _CODE_MEMO[id(node)] = (node, text)
    return text


def forget_code(layout: Layout | None = None) -> None:
    """Drop the memo of `code_of` (called once per module, so memory stays flat); `layout`:
    where the next module's text comes from, when it is a lean tree."""
    global _layout
    _CODE_MEMO.clear()
    _layout = layout


def keyed_entry(node: cst.BaseExpression) -> str | None:
    """`state["step"]` for an entry under a literal string key of a named value, however its
    quotes are spelt; None for anything else. A count kept there (`state["iter_num"] += 1`)
    is read as a variable of that name."""
    if type(node) is not cst.Subscript or len(node.slice) != 1:  # type: ignore[attr-defined]
        return None
    key = node.slice[0].slice  # type: ignore[attr-defined]
    if type(key) is not cst.Index or type(key.value) is not cst.SimpleString:
        return None
    root = dotted_name(node.value)  # type: ignore[attr-defined]
    literal = string_value(key.value)
    if root is None or not isinstance(literal, str):
        return None
    return f"{root}[{literal!r}]"


def dotted_name(node: cst.BaseExpression) -> str | None:
    """`a.b.c` for Name/Attribute chains, else None."""
    # Asked of nearly every call and target of a module: exact types (neither class has
    # subclasses) spare `isinstance` its ABC machinery, which a failing check goes through.
    node_type = type(node)
    if node_type is cst.Name:
        return node.value  # type: ignore[attr-defined]
    if node_type is not cst.Attribute:
        return None
    attributes = []
    while type(node) is cst.Attribute:
        attributes.append(node.attr.value)  # type: ignore[attr-defined]
        node = node.value  # type: ignore[attr-defined]
    if type(node) is not cst.Name:
        return None
    attributes.append(node.value)  # type: ignore[attr-defined]
    attributes.reverse()
    return ".".join(attributes)


def own_function_name(call: cst.Call) -> str:
    """The name of the module's function a call runs: `make(...)`, or a method of the same class
    reached as `self.make(...)`; "" for any other call."""
    name = call_name(call) or ""
    if name.startswith("self."):
        name = name[len("self."):]
    return "" if "." in name else name


def handed_argument(call: cst.Call, function: cst.FunctionDef, parameter: str, shift: int = 0) -> cst.BaseExpression | None:
    """What `call` hands `function`'s `parameter`: its keyword argument, or the positional one at
    the parameter's place (`shift` places fewer for a method called through `self.`); None when
    the call leaves it to its default or a `*args` hides where it lands."""
    handed = keyword_argument(call, parameter)
    if handed is not None:
        return handed
    positional = [p.name.value for p in (*function.params.posonly_params, *function.params.params)]
    if parameter not in positional:
        return None
    given = [a for a in call.args if a.keyword is None]
    index = positional.index(parameter) - shift
    if any(a.star for a in given) or not 0 <= index < len(given):
        return None
    return given[index].value


def positional_args(call: cst.Call) -> list[cst.BaseExpression]:
    """The call's positional arguments (not keywords, not `*args`/`**kwargs`)."""
    return [arg.value for arg in call.args if arg.keyword is None and not arg.star]


def call_name(call: cst.Call) -> str | None:
    """Dotted name of the called function (`torch.optim.SGD`), if it is one."""
    return dotted_name(call.func)


def function_statements(function: cst.FunctionDef) -> list[cst.CSTNode]:
    """A function's statements, its docstring left out; a one-line body (`def f(i): return i`)
    is one statement."""
    if not isinstance(function.body, cst.IndentedBlock):
        return [function.body]
    return [s for s in function.body.body if not (
        isinstance(s, cst.SimpleStatementLine) and len(s.body) == 1 and isinstance(s.body[0], cst.Expr)
        and isinstance(s.body[0].value, (cst.SimpleString, cst.ConcatenatedString)))]


def is_sum_reduction(call: cst.Call) -> bool:
    """`F.cross_entropy(..., reduction="sum")` or a loss built that way."""
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value in {"reduction", "size_average", "reduce"}:
            value = arg.value
            if isinstance(value, cst.SimpleString) and string_value(value) == "sum":
                return True
            if arg.keyword.value == "size_average" and isinstance(value, cst.Name) and value.value == "False":
                return True
    return False


def parameter_names(function: cst.FunctionDef) -> set[str]:
    """The names of `function`'s parameters, positional and keyword-only."""
    return {p.name.value for p in (*function.params.params, *function.params.kwonly_params)}


def compact_code(text: str) -> str:
    """Code without spaces, and without one pair of parentheses around the whole of it
    (`(i + 1)` -> `i+1`; `len(x)` and `(a)*(b)` keep theirs): for comparing spellings."""
    text = "".join(text.split())
    if text.startswith("(") and text.endswith(")"):
        depth = 0
        for index, char in enumerate(text):
            depth += char == "("
            depth -= char == ")"
            if depth == 0 and index < len(text) - 1:
                return text
        return text[1:-1]
    return text


def makes_loss_module(value: cst.BaseExpression) -> bool:
    """`nn.MSELoss()`, `GANLoss().to(device)`: a call making a loss module."""
    while (isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute)
           and value.func.attr.value in {"to", "cuda", "cpu", "float", "half"}):
        value = value.func.value  # `GANLoss().to(device)`
    return isinstance(value, cst.Call) and (call_name(value) or "").endswith("Loss")


def moved_to_device(node: cst.BaseExpression) -> cst.BaseExpression:
    """`Accuracy(...).to(device)` -> `Accuracy(...)`: a move to a device is the same object."""
    while (isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute)
           and node.func.attr.value in {"to", "cuda", "cpu"}):
        node = node.func.value
    return node


def parallel_assignment(target: cst.BaseExpression, value: cst.BaseExpression,
                        reads: Callable[[cst.CSTNode], set[str]] | None = None,
                        ) -> list[tuple[str, cst.BaseExpression, cst.BaseExpression]] | None:
    """`a, b = f(x), g(y)`: each name the tuple of names binds, its target node and the value it
    is given; None for a star, a target that is no name, or lengths that differ. With `reads` (the
    names a node reads), also None where reading the pairs one after another would differ: a
    value reads a name an earlier target rebinds (`a, b = b, a` swaps)."""
    if type(target) not in (cst.Tuple, cst.List) or type(value) not in (cst.Tuple, cst.List):
        return None
    if len(target.elements) != len(value.elements) or any(
            type(e) is cst.StarredElement for e in (*target.elements, *value.elements)):
        return None
    pairs, rebound = [], set()
    for left, right in zip(target.elements, value.elements):
        name = dotted_name(left.value)
        if name is None or reads is not None and any(
                read == earlier or read.startswith(earlier + ".") for read in reads(right.value) for earlier in rebound):
            return None
        rebound.add(name)
        pairs.append((name, left.value, right.value))
    return pairs
