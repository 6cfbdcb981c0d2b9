"""The loop model: what rules read instead of syntax.

A `TrainingLoop` is one micro-batch loop with its ordered events (backward,
step, clear, ...), each carrying the guard it runs under. Configuration
switches (`if args.fp16:`) are resolved into `LoopVariant`s; a rule reports a
finding only when it holds in some variant.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Union

import libcst as cst

from gacclint.loops.vocabulary import code_of, compact_code

if TYPE_CHECKING:
    from gacclint.loops.evaluate import Schedule
    from gacclint.loops.graphs import GraphFlow

Statement = Union[cst.SimpleStatementLine, cst.SimpleStatementSuite, cst.BaseCompoundStatement]
LoopNode = Union[cst.For, cst.While]


class EventKind(enum.Enum):
    BACKWARD = "backward"
    STEP = "step"
    CLEAR = "clear"
    SCHEDULER_STEP = "scheduler"
    CLIP = "clip"
    UNSCALE = "unscale"
    SCALER_UPDATE = "scaler-update"
    GRAD_SCALING = "grad-scaling"  # p.grad /= k: the gradients, not the loss, are averaged


class GuardKind(enum.Enum):
    NONE = "none"  # runs on every micro-batch
    BOUNDARY = "boundary"  # runs on every k-th micro-batch
    NOT_BOUNDARY = "not-boundary"  # runs on the micro-batches between boundaries
    OPAQUE = "opaque"  # anything we cannot read: never a basis for a finding


class CounterSource(enum.Enum):
    ENUMERATE = "enumerate"
    RANGE = "range"
    MANUAL = "manual"  # `step += 1` in the loop body


@dataclass(frozen=True)
class Counter:
    """A name that counts micro-batches."""

    text: str
    source: CounterSource
    # Value the counter holds, at the boundary test, on the first micro-batch
    # of a pass over the data; None when it cannot be read (resumed counters).
    first_value: int | None
    # True when the counter restarts with every pass over the iterable, so that
    # `counter + 1 == len(loader)` identifies the last micro-batch.
    per_pass: bool
    # A manual counter's `counter += 1` statement: above it the counter reads one less.
    increment: cst.CSTNode | None = None
    # Set back within the pass (`count = 0` where a window closes): it counts a window's
    # micro-batches, so it names neither the pass's last micro-batch nor a window's start.
    resets_in_pass: bool = False
    # The configuration switch it restarts each pass under, if only under one (`if args.do_eval:
    # step = 0` after the pass): `per_pass` holds in that variant; in the others it is carried
    # across passes.
    pass_reset_switched: str | None = None


@dataclass(frozen=True)
class SyncTest:
    """A test deciding whether gradient sync is off, and the names it reads."""

    expression: cst.BaseExpression
    reads: frozenset[str]
    # The values of the flags it reads, bound in the loop (`accumulating = (i + 1) % k != 0`): a
    # boundary spelt there is the same spelling, not a second one.
    through: tuple[cst.BaseExpression, ...] = ()


@dataclass(frozen=True)
class Boundary:
    """`(counter + offset) % k == remainder`, optionally or-ed with end of data."""

    k: cst.BaseExpression
    k_text: str
    k_literal: int | None
    counter: Counter | None  # None for framework boundaries (`accelerator.sync_gradients`)
    # The comparison node that tests the counter (`(i + 1) % k == 0`).
    test: cst.BaseExpression | None
    # The `counter % k` operation, where GA104 rewrites the counter.
    modulo: cst.BinaryOperation | None
    offset: int
    remainder: int  # 0, or -1 for `== k - 1`
    end_of_data: cst.BaseExpression | None
    # The whole expression carrying the boundary: the `if` test, or the value
    # of `should_step = ...` when the guard reads a name.
    expression: cst.BaseExpression | None
    framework: bool = False
    # The test reads "not a boundary" (`(i + 1) % k != 0`, used with `continue`).
    negated: bool = False
    # What the guard evaluates to over sample configurations (gacclint/loops/evaluate.py);
    # None when it was only read from its spelling (framework boundaries, nanoGPT windows).
    schedule: "Schedule | None" = None

    @property
    def first_window(self) -> str | None:
        """The first window's size against `k` ("k", "1", "k-1"), None when unknown."""
        if self.schedule is not None:
            return self.schedule.first_window
        offset = self.first_window_offset
        return None if offset is None else {0: "k", -1: "1"}.get(offset)

    @property
    def steps_tail(self) -> bool | None:
        """The final partial window of a pass is stepped (True), never (False), or unknown (None)."""
        if self.schedule is not None:
            tail = self.schedule.tail.value
            return {"always": True, "sometimes": True, "never": False}.get(tail)
        return self.end_of_data is not None

    @property
    def steps_tail_of_short_passes_only(self) -> bool:
        """The final partial window is stepped only in a pass shorter than `k` (`or (len(dl) <= k
        and i + 1 == len(dl))`): an end-of-data clause (RULES.md, *guard*) that a longer pass
        does not reach."""
        return self.schedule is not None and self.schedule.tail.value == "sometimes"

    @property
    def first_window_offset(self) -> int | None:
        """0 when the first window is full; otherwise how far windows are shifted."""
        if self.counter is None or self.counter.first_value is None:
            return None
        return self.counter.first_value - 1 + self.offset - self.remainder

    @property
    def spelled_zero_based(self) -> bool:
        """`counter % k == 0` with no offset: the GA104 spelling."""
        return self.offset == 0 and self.remainder == 0 and self.modulo is not None

    def same_as(self, other: "Boundary") -> bool:
        return self.k_text == other.k_text and (
            (self.counter is None and other.counter is None)
            or (self.counter is not None and other.counter is not None and self.counter.text == other.counter.text)
        )


class ConditionKind(enum.Enum):
    SWITCH = "switch"
    BOUNDARY = "boundary"
    OPAQUE = "opaque"


@dataclass(frozen=True)
class Condition:
    """One `if` test (or early `continue`) between the loop and an event."""

    expression: cst.BaseExpression | None
    text: str
    polarity: bool  # True in the `if` body, False in `else` / after `if ...: continue`
    kind: ConditionKind
    boundary: Boundary | None = None
    # Configuration switches `or`-ed with the boundary (`not args.accumulate or (i + 1) % k == 0`):
    # each value of theirs is a variant, in which the whole test is evaluated.
    switch_terms: tuple[cst.BaseExpression, ...] = ()


@dataclass(frozen=True)
class Guard:
    kind: GuardKind
    boundary: Boundary | None = None


NO_GUARD = Guard(GuardKind.NONE)
OPAQUE_GUARD = Guard(GuardKind.OPAQUE)


class Scaling(enum.Enum):
    """How the loss that reaches a backward was normalised, on any path."""

    SCALED = "scaled"  # divided or multiplied somewhere on the way
    SUM_REDUCED = "sum-reduced"  # visibly summed: its normalisation is the user's choice
    UNSCALED = "unscaled"
    UNKNOWN = "unknown"  # came from somewhere we cannot see


class DivisionForm(enum.Enum):
    ASSIGN = "assign"  # loss = loss / k   or   loss = criterion(...) / k
    AUGASSIGN = "augassign"  # loss /= k
    INLINE = "inline"  # (loss / k).backward()


@dataclass(frozen=True)
class Division:
    statement: Statement
    operation: cst.BinaryOperation | cst.AugAssign | cst.Call  # `loss / k`, `loss /= k`, `loss.div(k)`
    divisor: cst.BaseExpression
    divisor_text: str
    form: DivisionForm
    # For ASSIGN: the assignment is `name = name / k` (removable as a whole).
    self_assignment: bool = False
    # The name the division's statement binds (`loss` of `loss = criterion(out, y) / k`); None inline.
    binds: str | None = None


@dataclass(frozen=True)
class LossFlow:
    scaling: Scaling
    divisions: tuple[Division, ...] = ()
    # The plain name carrying the loss into the backward (`loss`), if any.
    name: str | None = None
    # What the calls making the loss, whose bodies are not visible and which are not forwards of
    # a trained module, were handed (the roots of their arguments: `args` of
    # `compute_loss(args, model, batch)`): any of them may hold the accumulation count.
    handed: frozenset[str] = frozenset()
    # The loss comes from a forward of a trained module while a `forward` of this module divides
    # what it returns (`return loss / CFG.ACCUMULATE`): whether it is already divided is unclear.
    forward_divides: bool = False
    # Divisions inside a function of this module that makes the loss (`return loss / args.accum`,
    # RULES.md *what can scale a loss*), each with its divisor written as the loop would write it.
    helper_divisions: tuple["HelperDivision", ...] = ()


@dataclass(frozen=True)
class HelperDivision:
    """`loss = forward_pass(model, batch, args)` where `forward_pass` returns `loss / args.accum`:
    the call in the loop, the division in the function, and its divisor in the caller's terms."""

    call: cst.Call
    operation: cst.BinaryOperation
    divisor_text: str
    function: str


@dataclass(frozen=True)
class Event:
    kind: EventKind
    statement: Statement
    node: cst.CSTNode  # the call (or assignment) itself
    order: int
    conditions: tuple[Condition, ...]
    # Receiver: the optimizer for step/clear (`opt` in `scaler.step(opt)`), the
    # scheduler, the scaler; for backward, the text of the loss expression.
    receiver: str | None = None
    framework: str | None = None  # "accelerate", "deepspeed", "lightning", "other"
    loss: cst.BaseExpression | None = None
    loss_flow: LossFlow | None = None
    via_scaler: str | None = None
    retain_graph: bool = False
    in_inner_loop: bool = False  # inside a loop nested in the micro-batch loop
    in_window_loop: bool = False  # inside the inner micro-step loop (nanoGPT shape)
    editable: bool = True  # a statement of its own line in an indented block
    contexts: tuple[str, ...] = ()  # `with` items around it (no_sync, accumulate, autocast)
    position: int = 0  # index of its statement in TrainingLoop.body
    by_helper: bool = False  # a clear by a call of a same-module function whose body clears (`reset(opt)`)
    # For a parameter loop's clear (receiver "params"): `M` of `for p in M.parameters(): p.grad = None`,
    # the module all of whose parameters it clears; None when not read (a subset, a filter).
    cleared_module: str | None = None
    # The arm of a conditional expression the event sits in (`a.backward() if amp else b.backward()`):
    # (the expression's id, which arm). Two events in different arms of one never both run.
    arm: tuple[int, bool] | None = None
    # A step or clear of an inner loop's variable (`for opt in optimizers: opt.step()`), or a step
    # of an optimizer picked by the loop's own variable (`optimizers[i].step()`): which optimizers
    # it reaches is not one visible object.
    iterated: bool = False
    # In an `except` handler of a `try` whose body backpropagates (`try: loss.backward() except
    # RuntimeError: loss.mean().backward()`): it stands in for that backward when it fails.
    fallback: bool = False

    @property
    def accumulate_context(self) -> tuple[str, str] | None:
        """The innermost accelerate `with X.accumulate(args):` around the event, as (`X`, `args`)
        in code; None outside one."""
        wrapped = [context for context in self.contexts if ".accumulate(" in context]
        if not wrapped:
            return None
        accelerator, _, rest = wrapped[-1].partition(".accumulate(")
        return accelerator, rest.rstrip(")")

    def excludes(self, other: "Event") -> bool:
        """The two events sit in different arms of one conditional expression."""
        return self.arm is not None and other.arm is not None and self.arm[0] == other.arm[0] \
            and self.arm[1] != other.arm[1]


@dataclass(frozen=True)
class LoopStatement:
    """A simple statement of the loop body, in source order, with where it sits."""

    statement: Statement
    position: int
    contexts: tuple[str, ...]
    in_inner_loop: bool
    in_window_loop: bool
    editable: bool
    block: object  # the sequence of statements of its block (compare with `is`)
    # The blocks around it that it runs whenever they run, outermost (the loop's body) first, by
    # id: a `with` body counts as the block around it, a test's, inner loop's or `try`'s body
    # is a block of its own. What it binds hides what the name held before for every statement
    # after it in the last of them. Empty where that is not read (a `match` case).
    blocks: tuple[int, ...] = ()

    @property
    def without_grad(self) -> bool:
        """Inside `torch.no_grad()` / `torch.inference_mode()`: builds no graph."""
        return any("no_grad" in context or "inference_mode" in context for context in self.contexts)


@dataclass(frozen=True)
class ResolvedEvent:
    """An event seen in one variant: its guard with the switches resolved."""

    event: Event
    guard: Guard

    @property
    def kind(self) -> EventKind:
        return self.event.kind


class IterableKind(enum.Enum):
    LOADER = "loader"  # a DataLoader or a name ending in loader/dataloader
    RANGE = "range"
    LIST = "list"
    SIZED = "sized"  # some other finite-looking iterable (a `data` parameter)
    STREAM = "stream"  # generator, itertools.count, IterableDataset, `while` + next()
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class IterableInfo:
    kind: IterableKind
    # An expression counting the micro-batches of a pass (`len(loader)`, `n`
    # for `range(n)`), when one can be written.
    len_text: str | None
    # Number of micro-batches per pass, when provable from literals.
    literal_length: int | None
    # Names and literals whose product is the pass length (`steps`, `k` of `range(steps * k)`),
    # as compact code.
    length_factors: frozenset[str] = frozenset()


class Shape(enum.Enum):
    PER_ITERATION = "per-iteration"  # step inside the micro-batch loop
    INNER_WINDOW = "inner-window"  # nanoGPT: `for micro_step in range(k)` then step
    # A function that holds a backward and a step but no loop around them
    # (`def train_step(...)`): kept apart from the loops, read by GA402 only.
    STEP_HELPER = "step-helper"


# Frameworks that scale, step and clear for the user (RULES.md, *framework-managed*). Not
# Lightning's `self.manual_backward`: in manual optimization the user clears, divides and steps.
MANAGED = frozenset({"accelerate-accumulate", "accelerate-gas", "deepspeed", "other"})


@dataclass
class LoopVariant:
    switches: tuple[tuple[str, bool], ...]
    events: list[ResolvedEvent]
    frameworks: frozenset[str] = frozenset()
    # Names its switches hold to 1 among positive integers (`config.ACCUM` where `config.ACCUM > 1`
    # is false): a division by one of them divides by 1 there.
    ones: frozenset[str] = frozenset()

    @property
    def managed(self) -> bool:
        """A framework scales, steps or clears in this variant: no GA1xx/GA2xx finding."""
        return bool(self.frameworks & MANAGED)

    def of(self, kind: EventKind) -> list[ResolvedEvent]:
        return [e for e in self.events if e.kind is kind]

    @property
    def steps(self) -> list[ResolvedEvent]:
        return self.of(EventKind.STEP)

    @property
    def backwards(self) -> list[ResolvedEvent]:
        return self.of(EventKind.BACKWARD)

    @property
    def clears(self) -> list[ResolvedEvent]:
        return self.of(EventKind.CLEAR)

    def step_wiped_by(self, clear: ResolvedEvent) -> ResolvedEvent | None:
        """The step that runs after `clear` with no backward in between, while a
        backward ran before it in the same iteration: the step sees cleared
        gradients (GA103)."""
        index = self.events.index(clear)
        if not any(e.kind is EventKind.BACKWARD and _compatible(e.guard, clear.guard) for e in self.events[:index]):
            return None
        for later in self.events[index + 1:]:
            if later.kind is EventKind.BACKWARD:
                return None
            if later.kind is EventKind.STEP and _compatible(clear.guard, later.guard) \
                    and not _exclusive(clear.event, later.event):
                return later
        return None


    def window_wiped_by(self, clear: ResolvedEvent) -> ResolvedEvent | None:
        """The step that `clear` wipes the window of from the other side: the clear runs on the
        same boundary as the step but before the micro-batch's backward (`if (i + 1) % k == 0:
        opt.zero_grad()` ahead of `loss.backward()`), so the window's earlier micro-batches are
        gone when the step comes (GA103)."""
        if clear.guard.kind is not GuardKind.BOUNDARY or clear.guard.boundary is None:
            return None
        index = self.events.index(clear)
        backwards = [e for e in self.events if e.kind is EventKind.BACKWARD and e.guard.kind is GuardKind.NONE]
        if not backwards or any(self.events.index(b) < index for b in backwards):
            return None
        first_backward = self.events.index(backwards[0])
        for later in self.events[first_backward + 1:]:
            if later.kind is EventKind.CLEAR:
                return None
            if later.kind is EventKind.STEP and later.guard.kind is GuardKind.BOUNDARY \
                    and later.guard.boundary is not None \
                    and _same_windows(clear.guard.boundary, later.guard.boundary):
                return later
        return None


def _same_windows(first: Boundary, second: Boundary) -> bool:
    """`first` runs on the micro-batches that end `second`'s windows (the same test written twice,
    the second maybe with an end-of-data clause)."""
    if first.k_text != second.k_text:
        return False
    if first.schedule is not None and second.schedule is not None:
        # the same windows; the second may also step the last micro-batch (an end-of-data clause)
        a, b = first.schedule, second.schedule
        return (a.pattern, a.first_window) == (b.pattern, b.first_window) and a.first_window is not None \
            and (a.tail == b.tail or a.tail.value == "never")
    return first.expression is not None and second.expression is not None and \
        code_of(first.expression) == code_of(second.expression)


def _exclusive(first: "Event", second: "Event") -> bool:
    """The two events sit in opposite branches of one `if` (a clear under `if spike:`, the step
    under its `else`), or in different arms of one conditional expression: never both run."""
    if first.excludes(second):
        return True
    tests = {(id(c.expression), c.polarity) for c in first.conditions if c.expression is not None}
    return any((id(c.expression), not c.polarity) in tests for c in second.conditions if c.expression is not None)


def _compatible(first: Guard, second: Guard) -> bool:
    """Both run on the same micro-batch: `first` is unguarded or shares the guard."""
    if first.kind is GuardKind.NONE:
        return second.kind in {GuardKind.NONE, GuardKind.BOUNDARY, GuardKind.NOT_BOUNDARY}
    if first.kind is GuardKind.OPAQUE or second.kind is GuardKind.OPAQUE:
        return False
    return (first.kind is second.kind and first.boundary is not None and second.boundary is not None
            and first.boundary.same_as(second.boundary))


@dataclass(frozen=True)
class DdpWrap:
    """`model = DistributedDataParallel(model, ...)` visible in the module."""

    name: str  # `model`, `self.model`
    # Wrapped under an `if`/`try`: in the other configuration it is a plain module.
    conditional: bool
    # torch's DistributedDataParallel (it has `no_sync()`); apex's has not.
    torch: bool


@dataclass
class TrainingLoop:
    node: LoopNode  # the micro-batch loop
    shape: Shape
    function: cst.FunctionDef | None
    iterable: IterableInfo
    counter: Counter | None
    events: list[Event]
    variants: list[LoopVariant]
    # Frameworks managing this loop's jobs: "accelerate-accumulate",
    # "accelerate-gas", "deepspeed", "other-backward".
    frameworks: frozenset[str]
    # The loop whose iterations are windows, for the inner-window shape.
    window_loop: LoopNode | None = None
    window_k: cst.BaseExpression | None = None
    # A step after the micro-batch loop that handles the remainder.
    flush_after_loop: bool = False
    # A step after the enclosing (epoch) loops: the run's last partial window is stepped there.
    flush_after_run: bool = False
    # Names the function (or module) already binds: fixes choose fresh ones.
    bound_names: frozenset[str] = field(default_factory=frozenset)
    # Optimizers built inside the loop body over tensors also built there: new
    # parameters every iteration, so there are no old gradients to clear.
    fresh_optimizers: frozenset[str] = field(default_factory=frozenset)
    # Every simple statement of the loop body in order; `graph` reads them.
    body: tuple[LoopStatement, ...] = ()
    # Which values carry an autograd graph (GA3xx); see gacclint/loops/graphs.py.
    graph: "GraphFlow | None" = None
    # -- step hygiene (GA4xx, GA501), filled by `_Builder._step_hygiene` --------
    # Scalers this loop steps through that are in use (RULES.md, *scaler in
    # use*: not built with the literal `enabled=False`).
    scalers_in_use: frozenset[str] = field(default_factory=frozenset)
    # Each scaler in use whose construction is visible -> the texts its constructions pass as
    # `enabled=` (`args.fp16`; none: always on): where that is false the scaler scales nothing.
    scaler_flags: dict[str, frozenset[str]] = field(default_factory=dict)
    # DistributedDataParallel models, visibly wrapped in the module, that the
    # loop calls (its forward), and the loop's statements calling them.
    ddp: tuple["DdpWrap", ...] = ()
    ddp_forwards: tuple[Statement, ...] = ()
    # Gradient sync is turned off somewhere the loop reaches: `no_sync()` (any
    # spelling), `require_backward_grad_sync = ...`, `no_backward_sync`, ...
    sync_control: bool = False
    # Where every way the loop turns sync off is spelt on a DDP model it calls: those models
    # (`gen.no_sync()` leaves `disc` syncing). None: not known for which.
    sync_controlled: frozenset[str] | None = None
    # The tests in the loop that decide whether gradient sync is off (`enabled=(i + 1) % k != 0`
    # of `no_backward_sync`, the test of `model.no_sync() if ... else nullcontext()`): a second
    # spelling of the boundary, which a fix of the boundary must keep in step.
    sync_tests: tuple["SyncTest", ...] = ()
    # Names whose values reach a backward after the loop (`meta_loss = torch.stack(losses).mean()`
    # then `meta_loss.backward()`): what they hold is kept for that backward.
    backpropagated_after: frozenset[str] = frozenset()
    # Counts the pass length is visibly a multiple of, as compact code: a factor of
    # `range(steps * k)`, or the `k` of `assert len(dl) % k == 0` before the loop.
    length_multiples: frozenset[str] = frozenset()
    # The loop is the whole run (no loop around it) and ends on a budget of steps
    # (`if global_step >= max_steps: break`): at most the run's last micro-batches go unstepped.
    single_budgeted_pass: bool = False
    # Parameters of the loop's function every call site hands a framework's accumulation count.
    framework_counts_handed: frozenset[str] = frozenset()
    # Parameters of the loop's function every call site hands a loss module (`nn.BCEWithLogitsLoss()`).
    loss_parameters: frozenset[str] = frozenset()
    # A `break` of the micro-batch loop itself under a test of its per-pass count (`if i >= 5:
    # break`): a pass may end before its last micro-batch, where a clause naming the pass's
    # length would never be reached.
    breaks_early: bool = False
    # For a variant whose optimizers step at different times (a GAN's discriminator on every
    # micro-batch, its generator on a boundary): one variant per optimizer that steps on a
    # boundary, holding its steps, the backwards that reach its parameters and the clears that
    # reach them (RULES.md, *ownership*). Keyed by the id of the variant they split.
    optimizer_windows: dict[int, list["LoopVariant"]] = field(default_factory=dict)
    # What the loop hands to calls whose bodies are not visible ("self" for an inherited method
    # of self): what those do with it (clear its gradients, say) is unknown.
    handed_unseen: frozenset[str] = frozenset()
    # What the loop hands to methods of objects built by classes imported from the project
    # (`architect.step(x, y, optimizer)`): bodies unseen too, though the object is the module's.
    handed_to_project_objects: frozenset[str] = frozenset()
    # Names (and dotted names) assigned inside the loop body.
    varying: frozenset[str] = field(default_factory=frozenset)
    # The loop calls a function of the module that calls `scaler.unscale_`.
    unscale_in_helper: bool = False
    # Ids of the blocks of statements that run at least once per window (see
    # `_Builder._window_blocks`): a reset there bounds what a running sum keeps.
    window_blocks: frozenset[int] = frozenset()
    # Inner-window shape: each micro-step takes a micro-batch of its own, a slice of one batch that
    # its index picks or the next item of one stream (see `_Builder._draws_from_one_stream`).
    micro_steps_take_batches: bool = False
    # Where a pass of the loop is a handful of steps, not the data (a loop over models, or one
    # accumulation window of a framework): the names the loop around it binds anew before each pass.
    remade_each_pass: frozenset[str] = frozenset()

    def flags_set_beside(self, event: "Event") -> dict[str, bool]:
        """The names the block running `event` sets to `True` or `False` (`skip_step = True`
        beside a clear that discards a spiking window)."""
        block = next((record.block for record in self.body if record.statement is event.statement), None)
        found: dict[str, bool] = {}
        for record in self.body:
            if block is None or record.block is not block:
                continue
            for small in getattr(record.statement, "body", ()):
                if type(small) is cst.Assign and len(small.targets) == 1 and type(small.targets[0].target) is cst.Name \
                        and type(small.value) is cst.Name and small.value.value in ("True", "False"):
                    found[small.targets[0].target.value] = small.value.value == "True"
        return found

    def sync_spelled_elsewhere(self, counter: str | None, boundary: cst.BaseExpression | None) -> bool:
        """Gradient sync is turned off under a test of `counter` other than `boundary`
        (`no_backward_sync(model, enabled=(i + 1) % k != 0)` beside `if (i + 1) % k == 0:`): a
        second spelling of the boundary, which a fix of `boundary` alone would leave behind."""
        return counter is not None and any(
            counter in test.reads and test.expression is not boundary and not any(v is boundary for v in test.through)
            for test in self.sync_tests)

    def boundary_spelled_elsewhere(self, counter: str, k_text: str, boundary: "Boundary") -> bool:
        """Another test of `counter` modulo the count than the step's boundary (`last = (step + 1)
        % k != 0`, handed to `delay_unscale=` and guarding a hand-made all-reduce): a second
        spelling of the boundary, which a fix of the boundary alone would leave behind."""
        if self.graph is None:
            return False
        tree = self.graph.facts.tree
        wanted = compact_code(k_text)
        # The tests steps and clears run under: the boundary, and other optimizers' own boundaries
        guards = [boundary.expression, boundary.test] + [
            c.expression for e in self.events if e.kind in (EventKind.STEP, EventKind.CLEAR) for c in e.conditions]
        # Only a test on the same micro-batches (`(step + 1) % k` as the boundary's): `step % k == 0`
        # marks the start of a window (a learning rate set per window), which a clause leaves as it was.
        own = [n for part in (boundary.test, boundary.expression) if part is not None
               for n in tree.find(part, cst.BinaryOperation) if type(n.operator) is cst.Modulo]
        phases = {compact_code(code_of(n.left)) for n in own}
        for node in tree.find(self.node.body, cst.BinaryOperation, enter_scopes=False):
            if type(node.operator) is not cst.Modulo or compact_code(code_of(node.right)) != wanted \
                    or counter not in tree.names_read(node.left) or compact_code(code_of(node.left)) not in phases:
                continue
            if any(part is not None and tree.contains(part, node) for part in guards):
                continue
            return True
        return False

    @property
    def framework_managed(self) -> bool:
        return bool(self.frameworks)

    def accumulation_variants(self) -> Iterator[tuple[LoopVariant, Boundary]]:
        """Variants that accumulate: backward every micro-batch, step every k-th.

        Yields each such variant with the step's boundary. A variant whose step
        guard is opaque, or whose steps disagree on the boundary, is skipped.
        """
        if self.shape is not Shape.PER_ITERATION:
            return
        for whole in self.variants:
            if whole.managed:
                continue
            for variant in [whole, *self.optimizer_windows.get(id(whole), ())]:
                found = accumulation_boundary(variant)
                # `if k > 1: ... else: <this variant>`: its switches hold the count to 1, and a variant
                # that backpropagates nothing has no gradients to accumulate: no window either way
                if found is not None and found.k_text.strip() not in whole.ones and variant.backwards:
                    yield variant, found



def accumulation_boundary(variant: LoopVariant) -> Boundary | None:
    """The boundary of a variant that accumulates: backward every micro-batch, every step on one
    boundary of k > 1."""
    own = [s for s in variant.steps if s.event.framework is None]
    if any(s.event.iterated for s in own) and not all(s.event.iterated for s in own):
        # `for opt in optimizers: opt.step()` beside `optimizers[1].step()`: which optimizer
        # the inner loop steps, and so each one's windows, is not visible
        return None
    boundary = variant_step_boundary(variant)
    if boundary is None or boundary.framework or boundary.k_literal == 1:
        return None
    if not _backward_every_micro_batch(variant.backwards, boundary):
        return None
    return boundary


def _backward_every_micro_batch(backwards: list[ResolvedEvent], boundary: Boundary) -> bool:
    """Every backward runs on every micro-batch, or the backward is split between the step's
    boundary and the micro-batches between (`if boundary: loss.backward() else: with
    model.no_sync(): loss.backward()`), which together are every micro-batch."""
    backwards = [b for b in backwards if not (b.event.fallback and b.event.kind is EventKind.BACKWARD)] or backwards
    if all(b.guard.kind is GuardKind.NONE for b in backwards):
        return True
    kinds = {b.guard.kind for b in backwards}
    return kinds == {GuardKind.BOUNDARY, GuardKind.NOT_BOUNDARY} and len(backwards) == 2 and all(
        b.guard.boundary is not None and _same_micro_batches(b.guard.boundary, boundary) for b in backwards) and \
        len({code_of(b.event.loss) if b.event.loss is not None else None for b in backwards} - {None}) == 1


def _same_micro_batches(one: Boundary, other: Boundary) -> bool:
    """Two boundaries (or the micro-batches between one) that fall on the same micro-batches: one
    test, or two tests evaluated to the same windows (`if (i + 1) % k != 0: ... else: ...` then
    `if (i + 1) % k == 0: opt.step()`)."""
    if one.test is other.test:
        return True
    first, second = one.schedule, other.schedule
    return one.same_as(other) and first is not None and second is not None and first.first_window is not None \
        and (first.first_window, first.tail) == (second.first_window, second.tail)


def variant_step_boundary(variant: LoopVariant) -> Boundary | None:
    """The one boundary every step of the variant runs under, if there is one."""
    steps = variant.steps
    if not steps:
        return None
    boundary: Boundary | None = None
    for step in steps:
        if step.guard.kind is not GuardKind.BOUNDARY or step.guard.boundary is None:
            return None
        if step.event.in_inner_loop:
            return None
        if boundary is None:
            boundary = step.guard.boundary
        elif not boundary.same_as(step.guard.boundary):
            return None
    return boundary
