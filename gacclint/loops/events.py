"""Recognising events in one statement: backward, step, clear, and their kin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple
import libcst as cst

from gacclint.gate import BACKWARD_METHODS, STEP_METHODS
from gacclint.loops.facts import ModuleFacts, string_key
from gacclint.loops.model import EventKind
from gacclint.loops.vocabulary import (
    positional_args,
    FRAMEWORK_BACKWARD_OWNERS,
    FRAMEWORK_OTHER_BACKWARD_HINTS,
    call_name,
    code_of,
    dotted_name,
    keyword_argument,
    looks_like_accelerator,
    looks_like_deepspeed_engine,
    looks_like_fabric,
    looks_like_optimizer,
    looks_like_scheduler,
)


@dataclass(frozen=True)
class RawEvent:
    kind: EventKind
    node: cst.CSTNode
    receiver: str | None = None
    framework: str | None = None
    loss: cst.BaseExpression | None = None
    via_scaler: str | None = None
    retain_graph: bool = False
    by_helper: bool = False  # a call of a same-module function whose body clears


_CLIP_NAMES = {"clip_grad_norm_", "clip_grad_value_", "clip_grad_norm", "clip_grad_value", "clip_gradients", "clip_grad_norm_fp32"}
_GRAD_SCALING_CALLS = {"multiply_grads", "scale_grads", "div_grads", "divide_grads", "average_gradients", "all_reduce_grads_mean"}
_CLEAR_GRAD_METHODS = {"zero_", "detach_", "fill_"}
_ZERO_GRAD_METHODS = {"zero_grad", "clear_grad"}
# Every method name `_classify` reads an event from (besides a helper's). A backward and a
# step are read only from BACKWARD_METHODS and STEP_METHODS, which the gates rely on.
_EVENT_METHODS = (BACKWARD_METHODS | STEP_METHODS | _ZERO_GRAD_METHODS | {"div_", "mul_", "unscale_", "update"}
                  | _CLEAR_GRAD_METHODS | _GRAD_SCALING_CALLS | _CLIP_NAMES)




# Calls whose result is the tensor they are called on, converted: zeros stay zeros.
_CONVERSIONS = frozenset({"to", "cuda", "cpu", "type", "float", "half", "double", "detach", "requires_grad_",
                          "contiguous"})


def _makes_zeros(node: cst.BaseExpression) -> bool:
    """A fresh tensor of zeros: `torch.zeros_like(p)`, `p.data.new_zeros(n)`, or the old
    `Variable(data.new().resize_as_(data).zero_())`. Put into `p.grad`, it clears it."""
    if type(node) is not cst.Call:
        return False
    func = node.func
    name = func.attr.value if type(func) is cst.Attribute else func.value if type(func) is cst.Name else ""
    if name in {"zero_", "zeros_like", "new_zeros", "zeros"}:
        return True
    if name in _CONVERSIONS and type(func) is cst.Attribute:
        return _makes_zeros(func.value)
    if name == "Variable" and node.args and node.args[0].keyword is None:
        return _makes_zeros(node.args[0].value)
    return False


def reads_gradients(statement: cst.SimpleStatementLine, tree, is_parameter: Callable[[cst.BaseExpression], bool]) -> bool:
    """A simple statement that reads parameters' gradients (`grads.append(p.grad.clone())`,
    `g = torch.cat([p.grad.view(-1) for p in params])`), besides clearing, scaling or writing
    them (`p.grad = None`, `p.grad.div_(k)`, `p.grad = g`). `is_parameter` tells the owner of a
    `.grad` that is a parameter (an input perturbation's `delta.grad` is not)."""
    for small in statement.body:
        small_type = type(small)
        if small_type is cst.Assign and any(is_grad_reference(t.target) for t in small.targets):
            continue
        if small_type is cst.AugAssign and is_grad_reference(small.target):
            continue
        if small_type is cst.Expr and type(small.value) is cst.Call and type(small.value.func) is cst.Attribute \
                and is_grad_reference(small.value.func.value):
            continue  # `p.grad.zero_()`, `p.grad.data.mul_(s)`
        if any(node.attr.value == "grad" and is_parameter(node.value) for node in tree.find(small, cst.Attribute)):
            return True
    return False


def is_grad_reference(node: cst.BaseExpression) -> bool:
    """`p.grad` or `p.grad.data`."""
    # Exact types: asked of every assignment target, and a failing `isinstance` on libcst's
    # ABCs is slow (neither class has subclasses).
    node_type = type(node)
    text = dotted_name(node) if node_type is cst.Attribute or node_type is cst.Name else None
    if text is None and node_type is cst.Attribute:
        return node.attr.value in {"grad", "data"} and (node.attr.value == "grad" or is_grad_reference(node.value))
    return bool(text) and (text.endswith(".grad") or text.endswith(".grad.data"))


class ClearedParameter(NamedTuple):
    """What every call of a same-module clearing helper clears: the argument for its parameter
    `name` at `index` among the arguments a call passes (after `self`), as in `def reset(opt):
    opt.zero_grad()`; or, with `name` None, the object `fixed` names wherever it is called (a
    module global, or `self.g_optimizer` for a method called as `self.reset_grad()`)."""

    name: str | None
    index: int
    fixed: str | None = None


def _helper_receiver(call: cst.Call, cleared: ClearedParameter | None) -> str | None:
    """The text of what a call of a clearing helper clears."""
    if cleared is None:
        return None
    if cleared.name is None:
        return cleared.fixed
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == cleared.name:
            return code_of(arg.value)
    positional = [arg for arg in call.args if arg.keyword is None]
    if any(arg.star for arg in positional[:cleared.index + 1]) or len(positional) <= cleared.index:
        return None
    return code_of(positional[cleared.index].value)


def events_in(statement: cst.CSTNode, facts: ModuleFacts,
              clear_helpers: dict[str, ClearedParameter | None]) -> list[RawEvent]:
    events: list[RawEvent] = []
    for node in facts.tree.find(statement, cst.Call, cst.Assign, cst.AugAssign, enter_scopes=False):
        if clear_helpers and _names_a_helper(node, clear_helpers):
            event = _classify(node, facts, clear_helpers)
        else:
            event = _plain_event(node, facts)
        if event is not None:
            events.append(event)
    return events


def _plain_event(node: cst.CSTNode, facts: ModuleFacts) -> RawEvent | None:
    """The event `node` is read as when no helper is known to clear gradients."""
    # The same whoever asks: read once per node. The node is kept with its event, so a
    # reused id cannot answer for another node.
    memo = facts.plain_events
    known = memo.get(id(node))
    if known is not None and known[0] is node:
        return known[1]  # type: ignore[return-value]
    event = _classify(node, facts, {})
    memo[id(node)] = (node, event)
    return event


def plain_clears(facts: ModuleFacts) -> list[cst.CSTNode]:
    """The nodes of the module read as a clear when no helper is known (`opt.zero_grad()`,
    `p.grad = None`, ...). Only assignments and calls of these methods can be one (see
    `_classify`): the rest of the module's calls are not read."""
    found: list[cst.CSTNode] = list(facts.tree.ordered(cst.Assign))
    for call in facts.tree.ordered(cst.Call):
        func = call.func  # type: ignore[attr-defined]
        if type(func) is cst.Attribute and (
                func.attr.value in _ZERO_GRAD_METHODS or func.attr.value in _CLEAR_GRAD_METHODS):
            found.append(call)
    return [node for node in found
            if (event := _plain_event(node, facts)) is not None and event.kind is EventKind.CLEAR]


def _replaces_gradient(node: cst.Assign, facts: ModuleFacts) -> bool:
    """`p.grad = w.grad.clone()`: a gradient made elsewhere (another model's, a worker's) put in
    place of the parameter's own, which nothing reads first: what it held before is gone, as
    after a clear. Not `p.grad = p.grad + noise` (it builds on what was there), nor a call of
    an unseen function handed the parameter (`p.grad = project(p)`), nor a container reached
    through the parameter itself."""
    targets = [dotted_name(t.target) for t in node.targets]
    if len(targets) != 1 or targets[0] is None or not targets[0].endswith(".grad"):
        return False
    parameter = targets[0][:-len(".grad")]
    read = facts.tree.names_read(node.value)
    return bool(read) and not any(name == parameter or name.startswith(f"{parameter}.") for name in read)


def _names_a_helper(node: cst.CSTNode, clear_helpers: dict[str, ClearedParameter | None]) -> bool:
    """`helper(...)` or `self.helper(...)` for one of `clear_helpers`: the only calls that
    `_classify` reads differently when it knows the helpers."""
    # Exact types, as in `_classify`.
    if type(node) is not cst.Call:
        return False
    func = node.func
    if type(func) is cst.Name:
        return func.value in clear_helpers
    return (type(func) is cst.Attribute and type(func.value) is cst.Name and func.value.value == "self"
            and func.attr.value in clear_helpers)


def _classify(node: cst.CSTNode, facts: ModuleFacts,
              clear_helpers: dict[str, ClearedParameter | None]) -> RawEvent | None:
    # Run on every call and assignment of the module: exact types (`events_in` finds only
    # these three, and none has subclasses) spare `isinstance` its ABC machinery.
    node_type = type(node)
    if node_type is cst.Assign:
        if any(is_grad_reference(t.target) for t in node.targets):
            if isinstance(node.value, cst.Name) and node.value.value == "None" or _makes_zeros(node.value):
                return RawEvent(EventKind.CLEAR, node, receiver="params")
            if isinstance(node.value, cst.BinaryOperation) and isinstance(node.value.operator, (cst.Divide, cst.Multiply)):
                return RawEvent(EventKind.GRAD_SCALING, node)
            if _replaces_gradient(node, facts):
                return RawEvent(EventKind.CLEAR, node, receiver="params")
        return None
    if node_type is cst.AugAssign:
        if is_grad_reference(node.target) and isinstance(node.operator, (cst.DivideAssign, cst.MultiplyAssign)):
            return RawEvent(EventKind.GRAD_SCALING, node)
        return None
    assert isinstance(node, cst.Call)
    func = node.func
    func_type = type(func)
    if func_type is cst.Name:
        if func.value in clear_helpers:
            return RawEvent(EventKind.CLEAR, node, receiver=_helper_receiver(node, clear_helpers[func.value]),
                            by_helper=True)
        if func.value in _CLIP_NAMES:
            return RawEvent(EventKind.CLIP, node)
        return None
    if func_type is not cst.Attribute:
        return None
    method = func.attr.value
    owner = func.value
    if method not in _EVENT_METHODS:  # what follows reads no other method: spare the owner's text
        if isinstance(owner, cst.Name) and owner.value == "self" and method in clear_helpers:
            return RawEvent(EventKind.CLEAR, node, receiver=_helper_receiver(node, clear_helpers[method]), by_helper=True)
        return None
    owner_text = code_of(owner)
    if method == "backward":
        return _backward(node, owner, owner_text, facts)
    if method == "manual_backward" and positional_args(node):  # Lightning
        return RawEvent(EventKind.BACKWARD, node, loss=positional_args(node)[0], framework="lightning")
    if method == "step":
        return _step(node, owner_text, facts)
    if method == "optimizer_step" and positional_args(node):
        receiver = code_of(positional_args(node)[0])
        if facts.imported_from.get(owner_text, "").startswith("torch_xla") or owner_text == "xm":
            return RawEvent(EventKind.STEP, node, receiver=receiver)  # torch_xla: xm.optimizer_step(opt)
        # `strategy.optimizer_step(opt, model, sched)`: an object handed the optimizer steps it,
        # and what it clears, scales and steps is not visible (RULES.md, *framework-managed*).
        return RawEvent(EventKind.STEP, node, receiver=receiver, framework="other")
    if method in _ZERO_GRAD_METHODS:
        return RawEvent(EventKind.CLEAR, node, receiver=owner_text)
    if method in _CLEAR_GRAD_METHODS and is_grad_reference(owner):
        if method == "fill_" and not (node.args and code_of(node.args[0].value) in {"0", "0.0"}):
            return None
        if method == "detach_":
            return None
        return RawEvent(EventKind.CLEAR, node, receiver="params")
    if method in {"div_", "mul_"} and is_grad_reference(owner):
        return RawEvent(EventKind.GRAD_SCALING, node)
    if method in _GRAD_SCALING_CALLS:
        return RawEvent(EventKind.GRAD_SCALING, node)
    if method in _CLIP_NAMES:
        return RawEvent(EventKind.CLIP, node, receiver=owner_text)
    if method == "unscale_" and facts.is_scaler(owner_text):
        args = positional_args(node)
        return RawEvent(EventKind.UNSCALE, node, receiver=code_of(args[0]) if args else None, via_scaler=owner_text)
    if method == "update" and facts.is_scaler(owner_text):
        return RawEvent(EventKind.SCALER_UPDATE, node, via_scaler=owner_text)
    if isinstance(owner, cst.Name) and owner.value == "self" and method in clear_helpers:
        return RawEvent(EventKind.CLEAR, node, receiver=_helper_receiver(node, clear_helpers[method]), by_helper=True)
    return None


# -- step hygiene (GA4xx, GA501) ------------------------------------------------

# torch's clipping functions read `.grad` as it is: scaled, if a GradScaler scaled
# the loss. accelerate's/Fabric's own clip methods unscale first.
_RAW_CLIP_NAMES = {"clip_grad_norm_", "clip_grad_value_", "clip_grad_norm", "clip_grad_value"}
# Ways of turning DDP's gradient all-reduce off for a micro-batch (RULES.md GA501).
SYNC_CONTROL_NAMES = {
    "no_sync", "require_backward_grad_sync", "no_backward_sync", "disable_allreduce", "enable_allreduce",
    "disable_need_reduction", "enable_need_reduction", "set_requires_gradient_sync",
    "set_gradient_accumulation_boundary",
}
DDP_CONSTRUCTORS = {"DistributedDataParallel", "DDP"}
# Wrappers that manage gradient sync themselves (RULES.md GA501: silent).
_SELF_SYNCING_WRAPPERS = {"FullyShardedDataParallel", "FSDP", "fully_shard"}


def clips_raw_gradients(call: cst.CSTNode, facts: ModuleFacts) -> bool:
    """`clip_grad_norm_(...)` / `torch.nn.utils.clip_grad_value_(...)`: clips `.grad` as it is
    (a framework's own clip, `accelerator.clip_grad_norm_`, unscales first)."""
    if not isinstance(call, cst.Call):
        return False
    func = call.func
    if isinstance(func, cst.Name):
        return func.value in _RAW_CLIP_NAMES
    if not isinstance(func, cst.Attribute) or func.attr.value not in _RAW_CLIP_NAMES:
        return False
    owner = code_of(func.value)
    if facts.is_accelerator(owner) or facts.is_fabric(owner) or looks_like_deepspeed_engine(owner):
        return False
    return "trainer" not in owner.lower()


def advances_schedule(call: cst.CSTNode) -> bool:
    """`sched.step()`: advances the schedule; `sched.step(epoch)` sets a position instead."""
    return isinstance(call, cst.Call) and not call.args


def turns_sync_off(node: cst.CSTNode) -> bool:
    """A name or attribute spelling one of the ways of turning DDP sync off."""
    if isinstance(node, cst.Attribute):
        return node.attr.value in SYNC_CONTROL_NAMES
    return isinstance(node, cst.Name) and node.value in SYNC_CONTROL_NAMES


def wraps_model(value: cst.BaseExpression) -> bool:
    """`syncs_itself(value) or wrapper_name(value) in DDP_CONSTRUCTORS`, asked of every
    binding of a module: the call's name is read once, and most names are none of these."""
    name = wrapper_name(value)
    return name in _WRAPPER_NAMES and (syncs_itself(value) or name in DDP_CONSTRUCTORS)


def wrapper_name(value: cst.BaseExpression) -> str | None:
    """`DDP` for `DDP(model, ...)`, `prepare` for `accelerator.prepare(model)`; None otherwise."""
    if not isinstance(value, cst.Call):
        return None
    name = dotted_name(value.func)
    return name.rsplit(".", 1)[-1] if name else None


def syncs_itself(value: cst.BaseExpression) -> bool:
    """FSDP, `deepspeed.initialize`, `accelerator.prepare`, `fabric.setup`: they manage gradient sync."""
    if not isinstance(value, cst.Call):
        return False
    name = dotted_name(value.func) or ""
    owner, _, short = name.rpartition(".")
    if short in _SELF_SYNCING_WRAPPERS:
        return True
    if short == "initialize":
        return "deepspeed" in owner
    if short in {"prepare", "prepare_model"}:
        return looks_like_accelerator(owner)
    if short in {"setup", "setup_module"}:
        return looks_like_fabric(owner)
    return False


# The last part of every call name that `syncs_itself` or `wrapper_name` in DDP_CONSTRUCTORS holds for.
_WRAPPER_NAMES = (DDP_CONSTRUCTORS | _SELF_SYNCING_WRAPPERS
                  | {"initialize", "prepare", "prepare_model", "setup", "setup_module"})


def scaler_disabled(value: cst.BaseExpression) -> bool:
    """`GradScaler(enabled=False)` (the literal) or `None`: not a scaler in use."""
    if isinstance(value, cst.Name):
        return value.value == "None"
    if not isinstance(value, cst.Call):
        return False
    enabled = keyword_argument(value, "enabled")
    return isinstance(enabled, cst.Name) and enabled.value == "False"


def _backward(node: cst.Call, owner: cst.BaseExpression, owner_text: str, facts: ModuleFacts) -> RawEvent | None:
    args = positional_args(node)
    retain = keyword_argument(node, "retain_graph")
    retain_graph = retain is not None and not (isinstance(retain, cst.Name) and retain.value in {"False", "None"})
    if owner_text in {"torch.autograd", "autograd"}:
        if not args:
            return None
        return RawEvent(EventKind.BACKWARD, node, loss=args[0], retain_graph=retain_graph)
    # scaler.scale(loss).backward()
    if isinstance(owner, cst.Call) and isinstance(owner.func, cst.Attribute) and owner.func.attr.value == "scale":
        scaler_text = code_of(owner.func.value)
        scaled = positional_args(owner)
        if scaled and facts.is_scaler(scaler_text):
            return RawEvent(EventKind.BACKWARD, node, loss=scaled[0], via_scaler=scaler_text, retain_graph=retain_graph)
    if args and _is_framework_owner(owner_text, facts):
        if facts.is_accelerator(owner_text):
            framework = "accelerate"
        elif facts.is_fabric(owner_text):
            framework = "fabric"
        elif owner_text in facts.deepspeed_engines or looks_like_deepspeed_engine(owner_text):
            # `scale_wrt_gas=False`: the engine does not divide by its count; whether it does
            # is unknown unless the flag is left out or a literal `True`.
            scale = keyword_argument(node, "scale_wrt_gas")
            framework = "deepspeed" if scale is None or (type(scale) is cst.Name and scale.value == "True") else "other"
        else:
            framework = "other"
        return RawEvent(EventKind.BACKWARD, node, loss=args[0], framework=framework, retain_graph=retain_graph)
    if isinstance(owner, cst.Name) and owner.value == "self":
        return None
    if args and isinstance(owner, (cst.Name, cst.Attribute)) and not _gradient_argument(args[0]) \
            and not _computed_tensor(owner_text, facts) and not _computed_tensor(code_of(args[0]), facts):
        # `strategy.backward(loss, model, opt)`, `mp_trainer.backward(loss)`: another object's
        # backward handed the loss; its scaling is unknown (RULES.md, *backward*).
        return RawEvent(EventKind.BACKWARD, node, loss=args[0], framework="other", retain_graph=retain_graph)
    return RawEvent(EventKind.BACKWARD, node, loss=owner, retain_graph=retain_graph)


def _gradient_argument(node: cst.BaseExpression) -> bool:
    """`out.backward(torch.ones_like(out))`, `y.backward(grad_y)`: a tensor's backward with its gradient."""
    text = code_of(node).lower()
    return "grad" in text or "ones" in text or "zeros" in text


def _computed_tensor(text: str, facts: ModuleFacts) -> bool:
    """A name the module binds only to arithmetic or a reduction (`d_cost = D(x).mean() - ...`,
    `one = torch.tensor(1.0)`, `mone = one * -1`): a tensor, not an object with a backward
    method of its own; `d_cost.backward(mone)` is the tensor's backward with its gradient."""
    bound = [b for b in facts.bindings.get(text, ()) if not _moved_itself(text, b.value)]
    return bool(bound) and all(b.tuple_index is None and _tensor_expression(b.value, facts) for b in bound)


def _tensor_expression(value: cst.BaseExpression, facts: ModuleFacts) -> bool:
    if isinstance(value, (cst.BinaryOperation, cst.UnaryOperation)):
        return True
    if isinstance(value, cst.Call):
        name = call_name(value) or ""
        if name.split(".")[0] == "torch" and name.rsplit(".", 1)[-1] in _TENSOR_MAKERS:
            return True
        if name in facts.modules_with_parameters:
            return True  # `err_real = netD(x)`: the output of a module whose parameters are trained
        return isinstance(value.func, cst.Attribute) and value.func.attr.value in {"mean", "sum"}
    return False


def _moved_itself(text: str, value: cst.BaseExpression) -> bool:
    """`one = one.cuda()`, `mone = mone.to(device)`: the same tensor, moved or reshaped."""
    return isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) \
        and value.func.attr.value in _TENSOR_MOVES and dotted_name(value.func.value) == text


_TENSOR_MAKERS = frozenset({"tensor", "ones", "ones_like", "zeros", "zeros_like", "full", "FloatTensor", "Tensor"})
_TENSOR_MOVES = frozenset({"cuda", "to", "cpu", "float", "double", "half", "view", "reshape", "squeeze", "unsqueeze",
                           "expand", "detach", "contiguous"})


def _is_framework_owner(owner_text: str, facts: ModuleFacts) -> bool:
    """`accelerator.backward(loss)`, `engine.backward(loss)`, `optimizer.backward(loss)`, ..."""
    if owner_text in facts.deepspeed_engines or owner_text in facts.optimizers:
        return True
    if facts.is_accelerator(owner_text) or facts.is_fabric(owner_text) or looks_like_optimizer(owner_text):
        return True
    if looks_like_deepspeed_engine(owner_text):
        return True
    lowered = owner_text.rsplit(".", 1)[-1].lower()
    return lowered in FRAMEWORK_BACKWARD_OWNERS or any(hint in lowered for hint in FRAMEWORK_OTHER_BACKWARD_HINTS)


def _step(node: cst.Call, owner_text: str, facts: ModuleFacts) -> RawEvent | None:
    if facts.is_scaler(owner_text):
        args = positional_args(node)
        optimizer = args[0] if args else keyword_argument(node, "optimizer")  # `scaler.step(optimizer=opt)`
        if optimizer is None:
            return None
        return RawEvent(EventKind.STEP, node, receiver=code_of(optimizer), via_scaler=owner_text)
    if owner_text in facts.optimizers or looks_like_optimizer(owner_text):
        return RawEvent(EventKind.STEP, node, receiver=owner_text)
    owner = node.func.value  # type: ignore[attr-defined]
    if type(owner) is cst.Subscript and string_key(owner) in facts.optimizer_keys:
        return RawEvent(EventKind.STEP, node, receiver=owner_text)  # `heads[name]["opt"].step()`
    if owner_text in facts.schedulers or looks_like_scheduler(owner_text):
        return RawEvent(EventKind.SCHEDULER_STEP, node, receiver=owner_text)
    if owner_text in facts.deepspeed_engines or looks_like_deepspeed_engine(owner_text):
        return RawEvent(EventKind.STEP, node, receiver=owner_text, framework="deepspeed")
    return None
