"""Find training loops in a module and build their loop model."""

from __future__ import annotations

import itertools
from operator import attrgetter
from bisect import bisect_left
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence, TypeVar

import libcst as cst

from gacclint.gate import BACKWARD_METHODS, STEP_METHODS
from gacclint.loops.events import ClearedParameter, events_in, plain_clears, reads_gradients, wraps_model
from gacclint.loops.events import (
    DDP_CONSTRUCTORS,
    scaler_disabled,
    syncs_itself,
    turns_sync_off,
    wrapper_name,
)
from gacclint.loops.facts import Binding, ModuleFacts, collect_facts
from gacclint.loops.flow import loss_flow
from gacclint.loops.graphs import UNKNOWN_GRAPH, GraphFlow
from gacclint.loops.lean import Layout

from gacclint.loops.evaluate import (
    CARRIED,
    LoopProgram,
    Pattern,
    Schedule,
    Step,
    Tail,
    Test,
    bare,
    compare,
    configs_for,
    inlined as _inlined,
    read_runs,
)
from gacclint.loops.guards import GuardContext, classify, is_framework_boundary, is_switch
from gacclint.loops.tree import Tree, matches
from gacclint.loops.model import (
    NO_GUARD,
    Boundary,
    OPAQUE_GUARD,
    Condition,
    ConditionKind,
    Counter,
    CounterSource,
    Event,
    EventKind,
    Guard,
    GuardKind,
    IterableInfo,
    IterableKind,
    LoopNode,
    LoopStatement,
    LoopVariant,
    ResolvedEvent,
    Shape,
    SyncTest,
    TrainingLoop,
)
from gacclint.loops.model import DdpWrap, accumulation_boundary, variant_step_boundary
from gacclint.loops.vocabulary import (
    assignment_targets,
    call_name,
    code_of,
    dotted_name,
    forget_code,
    function_statements,
    handed_argument,
    integer_value,
    keyed_entry,
    keyword_argument,
    looks_like_optimizer,
    makes_loss_module,
    own_function_name,
    parameter_names,
    positional_args,
    LIBRARY_ROOTS,
    PURE_CALLS,
)

MAX_SWITCHES = 5
_TERMINATORS = (cst.Continue, cst.Break, cst.Return, cst.Raise)
_STREAM_CALLS = {"count", "cycle", "iter", "repeat", "infinite_loader", "InfiniteDataLoader", "infinite"}
_ITERABLE_WRAPPERS = {"tqdm", "enumerate", "auto", "notebook", "progress_bar", "track"}


class _Frame(NamedTuple):
    """Where a statement sits: its block and the statement owning that block (a tuple: one
    is made for every statement of the module)."""

    owner: cst.CSTNode | None  # None for the module
    block: tuple[cst.CSTNode, ...]
    index: int


@dataclass(frozen=True)
class _RawCondition:
    expression: cst.BaseExpression | None  # None: opaque (an `except:` body, a `match` case)
    polarity: bool
    # For the test of an `if ...: continue` ahead of the statement: how many
    # statements of the loop came up to the end of that `if`.
    early_exit_after: int | None = None
    breaks: bool = False  # failing the test leaves the loop (`if ...: break`)
    # An `except` handler of a `try` whose body backpropagates: it runs when that failed.
    fallback: bool = False


@dataclass
class _Visit:
    statement: cst.CSTNode
    raw_conditions: list[_RawCondition]
    order: int
    in_inner_loop: bool
    in_window_loop: bool
    editable: bool
    contexts: tuple[str, ...]
    block: object = None  # the sequence of statements it sits in


class _VisitWalk:
    """What one walk over a loop's statements (`_Builder._visits`) carries from block to block."""

    def __init__(self, window_loop: LoopNode | None) -> None:
        self.window_loop = window_loop
        self.order = itertools.count()
        self.visited = 0  # statements yielded so far, for early exits


@dataclass
class ModuleModel:
    module: cst.Module
    facts: ModuleFacts
    loops: list[TrainingLoop]
    frames: dict[int, list[_Frame]] = field(default_factory=dict)  # id(statement) -> ancestry
    # Functions holding a backward and a step with no loop around them (GA402).
    step_helpers: list[TrainingLoop] = field(default_factory=list)


def build_model(module: cst.Module, layout: Layout | None = None) -> ModuleModel:
    """`layout`: the source's places and text, for a lean tree (gacclint/loops/lean.py)."""
    forget_code(layout)
    facts = collect_facts(module)
    builder = _Builder(module, facts)
    if not _another_framework(facts):
        builder.walk_block(tuple(module.body), [], None, [])
    return ModuleModel(module, facts, builder.loops, builder.frames, builder.step_helpers)


# Frameworks whose `backward()` and `step()` are not PyTorch's: MXNet's gluon writes gradients
# on each backward (they do not add up), and its `Trainer.step(batch_size)` has no `zero_grad`.
_OTHER_FRAMEWORKS = frozenset({"mxnet"})


def _another_framework(facts: ModuleFacts) -> bool:
    """The module imports such a framework and not torch: its loops are not PyTorch training loops."""
    roots = {source.split(".")[0] for source in facts.imported_from.values()}
    roots |= {source.split(".")[0] for source in facts.star_imported}
    return bool(roots & _OTHER_FRAMEWORKS) and "torch" not in roots


# A counter the loop resets compared with these against a configuration value counts a window.
_WINDOW_TESTS = (cst.GreaterThanEqual, cst.GreaterThan, cst.Equal)


def _unconditional_statements(block: cst.BaseSuite) -> Iterator[cst.BaseSmallStatement]:
    """The small statements of `block` that run whenever it runs: through `with` blocks, not
    into tests, loops, `try` or nested definitions."""
    if not isinstance(block, cst.IndentedBlock):
        yield from getattr(block, "body", ())
        return
    for statement in block.body:
        if isinstance(statement, cst.SimpleStatementLine):
            yield from statement.body
        elif isinstance(statement, cst.With):
            yield from _unconditional_statements(statement.body)


def _block_chains(suite: cst.BaseSuite, chain: tuple[int, ...], found: dict[int, tuple[int, ...]]) -> None:
    """For each simple statement line under `suite`, the blocks around it that it runs whenever
    they run (LoopStatement.blocks), by id of the statement line."""
    for statement in _statements(suite):
        if matches(type(statement), _SIMPLE):
            found[id(statement)] = chain
        elif isinstance(statement, cst.With):
            _block_chains(statement.body, chain, found)
        elif isinstance(statement, cst.If):
            _block_chains(statement.body, chain + (id(statement.body),), found)
            orelse = statement.orelse
            if isinstance(orelse, cst.If):
                _block_chains(cst.IndentedBlock(body=(orelse,)), chain + (id(orelse),), found)
            elif orelse is not None:
                _block_chains(orelse.body, chain + (id(orelse.body),), found)
        elif isinstance(statement, (cst.For, cst.While, cst.Try, cst.TryStar)):
            parts = [statement.body, *getattr(statement, "handlers", ()), statement.orelse,
                     getattr(statement, "finalbody", None)]
            for part in parts:
                if part is not None:
                    inner = part if isinstance(part, cst.BaseSuite) else part.body
                    _block_chains(inner, chain + (id(inner),), found)


def _streams(call: cst.Call, iterable_datasets: set[str]) -> bool:
    """A dataset with no length: an `IterableDataset` of the module or one named as such
    (`PreprocessedIterableDataset`), `load_dataset(..., streaming=True)`, `.to_iterable_dataset()`."""
    called = (call_name(call) or "").rsplit(".", 1)[-1]
    if called in iterable_datasets or called.endswith("IterableDataset") or called == "to_iterable_dataset":
        return True
    streaming = keyword_argument(call, "streaming")
    return isinstance(streaming, cst.Name) and streaming.value == "True"


def _holds_any(tree: Tree, numbers: list[int], node: cst.CSTNode) -> bool:
    """Whether `node`'s subtree may hold one of the nodes numbered `numbers` (ascending,
    gacclint/loops/tree.py); a node made after the tree was read may hold anything."""
    span = tree.span(node)
    if span is None:
        return True
    first = bisect_left(numbers, span[0])
    return first < len(numbers) and numbers[first] < span[1]


def _is_loop(node: cst.CSTNode) -> bool:
    return matches(type(node), _LOOPS)


_LOOPS = (cst.For, cst.While)
_VALUE = attrgetter("value")
# Exact types, for a test run on every binding of the module (neither class has subclasses).
_NAME_TYPES = {cst.Name, cst.Attribute}
# For `matches` (a cached `isinstance`: these are asked once per statement of the module).
_T = TypeVar("_T")  # what `_Builder._agreed_at_call_sites` reads at each call site
_SIMPLE = (cst.SimpleStatementLine, cst.SimpleStatementSuite)
_DEFINITIONS = (cst.FunctionDef, cst.ClassDef)
_FUNCTION = (cst.FunctionDef,)
# What `_blocks_of` reads of each kind of compound statement, in the order it asks.
_BLOCK_SHAPES = (
    ((cst.If,), "if"),
    ((cst.For, cst.While), "loop"),
    ((cst.With, cst.FunctionDef, cst.ClassDef), "body"),
    ((cst.Try, cst.TryStar), "try"),
    ((cst.Match,), "match"),
)
_SHAPE_OF: dict[type, str] = {}  # node type -> its shape above ("" for none), as types are met


def _shape(node_type: type) -> str:
    shape = _SHAPE_OF.get(node_type)
    if shape is None:
        shape = _SHAPE_OF[node_type] = next((name for types, name in _BLOCK_SHAPES if matches(node_type, types)), "")
    return shape


def _statements(suite: cst.BaseSuite) -> Sequence[cst.CSTNode]:
    """The statements of a block: an indented block's own sequence (records compare blocks with
    `is`), or a one-line body (`if a: b(); c()`) as one simple statement, as it is one line."""
    return suite.body if isinstance(suite, cst.IndentedBlock) else (suite,)


def _blocks_of(node: cst.CSTNode) -> list[tuple[cst.BaseExpression | None, bool, tuple[cst.CSTNode, ...]]]:
    """Child statement blocks of a compound statement, each with its test and polarity."""
    shape = _shape(type(node))
    if not shape:
        return []

    body = _statements

    if shape == "if":
        blocks = [(node.test, True, body(node.body))]
        if node.orelse is not None:
            blocks.append((node.test, False, (node.orelse,) if isinstance(node.orelse, cst.If) else body(node.orelse.body)))
        return blocks
    if shape == "loop":
        blocks = [(None, True, body(node.body))]
        if node.orelse is not None:
            blocks.append((None, True, body(node.orelse.body)))
        return blocks
    if shape == "body":
        return [(None, True, body(node.body))]
    if shape == "try":
        blocks = [(None, True, body(node.body))]
        blocks += [(None, True, body(h.body)) for h in node.handlers]
        if node.orelse is not None:
            blocks.append((None, True, body(node.orelse.body)))
        if node.finalbody is not None:
            blocks.append((None, True, body(node.finalbody.body)))
        return blocks
    return [(None, True, body(case.body)) for case in node.cases]


def _own_simple_statements(block, found: list[cst.CSTNode] | None = None) -> list[cst.CSTNode]:
    """The simple statements of `block` and of its compound statements, in source order, except
    those inside loops and definitions. (A module function, not a closure: a closure that calls
    itself is a cycle, which would keep the statements alive until the cycle collector runs.)"""
    found = [] if found is None else found
    for statement in block:
        if matches(type(statement), _SIMPLE):
            found.append(statement)
        elif not (_is_loop(statement) or matches(type(statement), _DEFINITIONS)):
            for _, _, child in _blocks_of(statement):
                _own_simple_statements(child, found)
    return found


def _index_calls(tree: Tree, numbers: list[int], block: Sequence[cst.CSTNode], scope: cst.FunctionDef | None,
                 index: dict[str, list[tuple[cst.Call, cst.FunctionDef | None, cst.CSTNode]]]) -> None:
    """Files the calls of `block` by name, each with the function it sits in and its statement,
    entering only the statements that hold one of the calls numbered `numbers` (the tree's
    numbers, sorted)."""
    for statement in block:
        if not _holds_any(tree, numbers, statement):
            continue
        inner = statement if matches(type(statement), _FUNCTION) else scope
        roots = [statement] if matches(type(statement), _SIMPLE) else _tests_of(statement)
        for root in roots:
            for call in tree.find(root, cst.Call, enter_scopes=False):
                index.setdefault(call_name(call) or "", []).append((call, scope, statement))
        for _, _, child in _blocks_of(statement):
            _index_calls(tree, numbers, child, inner, index)


class _Builder:
    def __init__(self, module: cst.Module, facts: ModuleFacts) -> None:
        self.module = module
        self.facts = facts
        self.loops: list[TrainingLoop] = []
        self.step_helpers: list[TrainingLoop] = []
        self.frames: dict[int, list[_Frame]] = {}
        self.clear_helpers = self._clear_helpers()
        self._backward_cache: dict[int, bool] = {}
        # (id(loop), counter) -> index in the loop body of its `counter += 1`
        self._increment_positions: dict[tuple[int, str], int] = {}
        # The top-level statements of the current loop's body (see `_top_level_index`).
        self._top_level: tuple[cst.CSTNode, ...] = ()
        self._bound_cache: dict[int, frozenset[str]] = {}
        self._bound_in: dict[int, set[str]] | None = None  # id(scope) -> names bound in it
        self._wrapping: tuple[dict, dict] | None = None
        # Memos over the module, which does not change while it is read (keys: id of a node).
        self._events_memo: dict[int, list] = {}
        self._window_cache_memo: dict[int, frozenset[str]] = {}
        self._call_site_cache: dict[int, dict] = {}
        self._calls_index: dict[str, list] | None = None
        self._helper_kind_cache: dict[int, set[EventKind]] = {}
        # Numbers (gacclint/loops/tree.py) of the calls that may be a backward, ascending: a
        # statement, loop or function holding none of them holds no backward.
        # Likewise for the calls that may be a step.
        tree = facts.tree
        self._backward_numbers: list[int] = []
        self._step_numbers: list[int] = []
        for call in tree.ordered(cst.Call):
            func = call.func  # type: ignore[attr-defined]
            if type(func) is cst.Attribute:
                if func.attr.value in BACKWARD_METHODS:
                    self._backward_numbers.append(tree.span(call)[0])  # type: ignore[index]
                elif func.attr.value in STEP_METHODS:
                    self._step_numbers.append(tree.span(call)[0])  # type: ignore[index]

    # -- module walk -----------------------------------------------------------

    def walk_block(self, block: tuple[cst.CSTNode, ...], ancestry: list[_Frame],
                   owner: cst.CSTNode | None, functions: list[cst.FunctionDef]) -> None:
        frames_of, shape_of = self.frames, _SHAPE_OF
        for index, statement in enumerate(block):
            frames = ancestry + [_Frame(owner, block, index)]
            frames_of[id(statement)] = frames
            shape = shape_of.get(type(statement))
            if shape is None:
                shape = _shape(type(statement))
            if not shape:  # most statements: no block of their own, neither a loop nor a def
                continue
            if shape == "loop" and self._directly_contains_backward(statement):
                self._build_loop(statement, frames, functions[-1] if functions else None)
            if matches(type(statement), _FUNCTION):
                self._step_helper(statement)
            inner_functions = functions + [statement] if matches(type(statement), _FUNCTION) else functions
            for _, _, child_block in _blocks_of(statement):
                self.walk_block(child_block, frames, statement, inner_functions)

    def _clear_helpers(self) -> dict[str, ClearedParameter | None]:
        """Functions of this module whose body clears gradients (RULES.md, *clear*), each with
        the parameter whose optimizer or model every call clears, when that is visible."""
        helpers: dict[str, ClearedParameter | None] = {}
        # The module's clears are few: each function asks whether its own body (not a def,
        # class or lambda within) holds one, instead of reading every event of its body.
        tree = self.facts.tree
        clears = plain_clears(self.facts)
        numbers = sorted(tree.span(node)[0] for node in clears)  # type: ignore[index]
        for name, defs in self.facts.functions.items():
            for func in defs:
                if _holds_any(tree, numbers, func.body) and any(
                        tree.contains(func.body, node, enter_scopes=False) for node in clears):
                    helpers[name] = None
            if name in helpers:
                cleared = {self._cleared_parameter(func, clears) for func in defs}
                helpers[name] = cleared.pop() if len(cleared) == 1 else None
        return helpers

    def _cleared_parameter(self, func: cst.FunctionDef, clears: list[cst.CSTNode]) -> ClearedParameter | None:
        """What every run of `func` clears, when it is one object: a `.zero_grad()` among the body's
        own top-level statements (no `if`, loop or `try` around it) on a parameter the body never
        rebinds (`def reset(opt): opt.zero_grad()`), on a name bound only at module level, or on
        `self.x` in a method."""
        parameters = [p.name.value for p in func.params.params]
        method = bool(parameters) and parameters[0] == "self"
        found: set[ClearedParameter] = set()
        top_level = 0
        for statement in _statements(func.body):
            if not isinstance(statement, cst.SimpleStatementLine):
                continue
            for small in statement.body:
                call = small.value if isinstance(small, cst.Expr) else None
                if not (isinstance(call, cst.Call) and any(call is node for node in clears)
                        and isinstance(call.func, cst.Attribute)):
                    continue
                top_level += 1
                owner = call.func.value
                name = owner.value if isinstance(owner, cst.Name) else None
                bindings = self.facts.bindings.get(name or "", ())
                if name in parameters and name != "self" and not any(b.scope is func for b in bindings):
                    index = parameters.index(name)
                    found.add(ClearedParameter(name, index - 1 if method else index))
                elif name is not None and name not in parameters and bindings and all(b.scope is None for b in bindings):
                    found.add(ClearedParameter(None, -1, name))
                elif method and isinstance(owner, cst.Attribute):
                    text = dotted_name(owner) or ""
                    if text.startswith("self.") and text.count(".") == 1:  # `self.g_optimizer`
                        found.add(ClearedParameter(None, -1, text))
        inside = sum(self.facts.tree.contains(func.body, node, enter_scopes=False) for node in clears)
        if inside != top_level:
            return None  # it also clears under a condition, or in a loop: not one known object
        return found.pop() if len(found) == 1 else None

    def _statement_events(self, statement: cst.CSTNode) -> list:
        """`events_in` of one statement, read once: the loop model, its program and the
        flush search all ask for the same statements."""
        found = self._events_memo.get(id(statement))
        if found is None:
            found = self._events_memo[id(statement)] = events_in(statement, self.facts, self.clear_helpers)
        return found

    def _may_hold_backward(self, node: cst.CSTNode) -> bool:
        return _holds_any(self.facts.tree, self._backward_numbers, node)

    def _directly_contains_backward(self, loop: LoopNode) -> bool:
        key = id(loop)
        if key not in self._backward_cache:
            # Only a statement holding a call of a backward method can hold a backward: the
            # events of the rest are not read.
            self._backward_cache[key] = self._may_hold_backward(loop) and not _runs_once(loop) and any(
                e.kind is EventKind.BACKWARD
                for statement in self._own_statements(_statements(loop.body), enter_loops=False)
                if self._may_hold_backward(statement)
                for e in self._statement_events(statement)
            )
        return self._backward_cache[key]

    def _own_statements(self, block, enter_loops: bool):
        for statement in block:
            if matches(type(statement), _DEFINITIONS):
                continue
            if _is_loop(statement) and not enter_loops:
                if not self._directly_contains_backward(statement):
                    yield from self._own_statements(_statements(statement.body), enter_loops)
                continue
            if matches(type(statement), _SIMPLE):
                yield statement
                continue
            for _, _, child in _blocks_of(statement):
                yield from self._own_statements(child, enter_loops)

    # -- one loop ----------------------------------------------------------------

    def _build_loop(self, micro: LoopNode, frames: list[_Frame], function: cst.FunctionDef | None) -> None:
        shape = Shape.PER_ITERATION
        training: LoopNode = micro
        window_k: cst.BaseExpression | None = None
        has_step = any(e.kind is EventKind.STEP for s in self._own_statements(_statements(micro.body), False)
                       for e in self._statement_events(s))
        if not has_step:
            # The window loop's enclosing loop, or a function stepping once after it (a `train_step`).
            outer = self._enclosing_loop(frames) or self._enclosing_function(frames)
            if outer is not None and self._step_follows(micro, outer) and not self._one_micro_step(micro, function) \
                    and not self._harvests_gradients(micro):
                shape, training = Shape.INNER_WINDOW, outer
                window_k = _single_range_argument(micro)
        counters = self._counters(training, frames if training is micro else self.frames.get(id(training), frames), function)
        if shape is Shape.INNER_WINDOW:
            counters.update(self._counters(micro, frames, function))
        self._top_level = tuple(_statements(training.body))
        varying = self._varying(training)
        aliases = self._aliases(training)
        visits = list(self._visits(training, micro if shape is Shape.INNER_WINDOW else None))
        context = GuardContext(counters=counters, varying=varying, tree=self.facts.tree, aliases=aliases)
        events = self._events(visits, context, training, function)
        chains: dict[int, tuple[int, ...]] = {}
        _block_chains(training.body, (id(training.body),), chains)
        body = tuple(
            LoopStatement(v.statement, v.order, v.contexts, v.in_inner_loop, v.in_window_loop, v.editable, v.block,
                          chains.get(id(v.statement), ()))
            for v in visits)
        iterable = self._iterable(micro, function)
        program = self._program(training, visits, context, counters, function, iterable.len_text) \
            if shape is Shape.PER_ITERATION else None
        loop = TrainingLoop(
            node=micro,
            shape=shape,
            function=function,
            iterable=iterable,
            counter=next((c for c in counters.values() if c.source is not CounterSource.MANUAL), None),
            events=events,
            variants=_variants(events, self._frameworks, program, iterable.literal_length,
                               self._constant_switches(events, function)),
            frameworks=frozenset(self._frameworks(events)),
            window_loop=training if shape is Shape.INNER_WINDOW else None,
            window_k=window_k,
            flush_after_loop=shape is Shape.PER_ITERATION and self._flush_after(micro, frames),
            flush_after_run=shape is Shape.PER_ITERATION and self._flush_after(micro, frames, across=True),
            backpropagated_after=self._backpropagated_after(micro, frames),
            length_multiples=self._length_multiples(micro, frames, iterable),
            single_budgeted_pass=self._single_budgeted_pass(micro, frames),
            breaks_early=self._capped_per_pass(micro, counters, iterable.len_text),
            bound_names=self._bound_names(function),
            fresh_optimizers=frozenset(self._fresh_optimizers(training, varying)),
            body=body,
        )
        loop.window_blocks = self._window_blocks(loop, training)
        if shape is Shape.PER_ITERATION and self._pass_bounded(micro, events, iterable.literal_length):
            loop.remade_each_pass = self._remade_each_pass(micro, frames)
        loop.loss_parameters = self._loss_parameters(function)
        loop.graph = GraphFlow(loop, self.facts, varying)
        loop.micro_steps_take_batches = shape is Shape.INNER_WINDOW and (
            self._splits_one_batch(micro, loop.graph) or self._draws_from_one_stream(micro))
        loop.optimizer_windows = self._optimizer_windows(loop)
        self._step_hygiene(loop, training, function, varying)
        self.loops.append(loop)

    # -- evaluated guards -----------------------------------------------------------

    def _program(self, loop: LoopNode, visits: list[_Visit], context: GuardContext,
                 counters: dict[str, Counter], function: cst.FunctionDef | None,
                 length: str | None = None) -> LoopProgram | None:
        """The loop's counter arithmetic, ready to run (gacclint/loops/evaluate.py)."""
        found = [(visit, self._statement_events(visit.statement)) for visit in visits]
        first_event = next((index for index, (_, raw) in enumerate(found) if raw), len(found))
        tests_of: dict[int, tuple[Test, ...]] = {}
        read: set[str] = set()
        has_tests = False
        for visit, raw_events in found:
            tests: list[Test] = []
            for raw in visit.raw_conditions:
                if raw.expression is None:
                    tests.append(Test(None, raw.polarity))
                    continue
                ahead = raw.early_exit_after is not None and raw.early_exit_after <= first_event
                if self._resume_skip(raw, context, first_event) and not is_switch(raw.expression, context):
                    continue  # it removes whole iterations
                skips = ahead and not raw.breaks
                tests.append(Test(raw.expression, raw.polarity, raw.breaks, skips=skips,
                                  prefix=skips and not raw.polarity and self._below_bound(raw.expression, context)))
                if raw_events:
                    has_tests = True
                    read |= self._names_read(raw.expression)
            tests_of[id(visit.statement)] = tuple(tests)
        if not has_tests:
            return None
        # Names the tests read, and what those are computed from, through the body's assignments.
        assigned: dict[int, list[tuple[str, cst.BaseExpression | None, str | None]]] = {}
        for visit in visits:
            assigned[id(visit.statement)] = _assignments(visit.statement, visit.in_inner_loop)
        # ... and the tests those assignments run under.
        relevant = set(read)
        changed = True
        while changed:
            changed = False
            for key, items in assigned.items():
                if not any(target in relevant for target, _, _ in items):
                    continue
                new: set[str] = set()
                for target, value, _ in items:
                    if target in relevant and value is not None:
                        new |= self._names_read(value)
                for test in tests_of.get(key, ()):
                    if test.expression is not None:
                        new |= self._names_read(test.expression)
                if new - relevant:
                    relevant |= new
                    changed = True
        steps: list[Step] = []
        for visit, raw_events in found:
            assigns = tuple(a for a in assigned[id(visit.statement)] if a[0] in relevant)
            if raw_events or assigns:
                steps.append(Step(id(visit.statement), tests_of[id(visit.statement)], assigns))
        # Statements that step or clear: the tests of the others (`if n % 100 == 0: log(...)`)
        # name other periods, not the accumulation count.
        stepping = {id(visit.statement) for visit, raw_events in found
                    if any(e.kind in (EventKind.STEP, EventKind.CLEAR) for e in raw_events)}
        k_atoms, k_literal, n_atoms, k_nodes = self._atom_roles(loop, steps, counters, relevant, context, function,
                                                                length, stepping)
        if not k_atoms and k_literal is None:
            return None
        loop_counter = next((c for c in counters.values() if c.source is not CounterSource.MANUAL), None)
        initial: dict[str, object] = {}
        for step in steps:
            for target, _, operator in step.assigns:
                if target in initial or (loop_counter is not None and target == loop_counter.text):
                    continue
                counter = counters.get(target)
                if counter is not None and counter.source is CounterSource.MANUAL:
                    initial[target] = CARRIED if counter.first_value is None else counter.first_value
                elif operator is not None:
                    init = self._counter_init(target, self.frames.get(id(loop), []), loop)[0]
                    initial[target] = CARRIED if init is None else init
                else:
                    initial[target] = None
        if isinstance(loop, cst.For):
            for name in _target_names(loop.target):
                if loop_counter is None or name != loop_counter.text:
                    initial.setdefault(name, None)
        # `epoch` of `iterations = epoch * len(loader) + step + 1`: the same all pass long, an
        # integer the pass does not show (a global step spelt through the epoch): sampled starts.
        pass_indices = {name for name in self._pass_indices(loop, function) if name in relevant and name not in initial}
        for name in pass_indices:
            initial[name] = CARRIED
        constant = self._constant_reader(loop, function, context, n_atoms)
        return LoopProgram(
            steps=steps,
            loop_counter=loop_counter.text if loop_counter is not None else None,
            loop_start=loop_counter.first_value if loop_counter is not None else None,
            initial=initial,
            k_atoms=frozenset(k_atoms),
            n_atoms=frozenset(n_atoms),
            k_literal=k_literal,
            constant=constant,
            predicate=self._predicate,
            k_nodes=k_nodes,
            counter_of=lambda node: self._counter_at_test(node, counters, steps, loop, pass_indices),
        )

    def _counter_at_test(self, node: cst.BaseExpression, counters: dict[str, Counter], steps: list[Step],
                         loop: LoopNode, pass_indices: set[str] = frozenset()) -> Counter | None:
        """The counter a test reads, as it reads there (Counter.first_value: at the test)."""
        counter = self._counter_read(node, counters, steps, pass_indices)
        return None if counter is None else self._counter_at(counter, loop, self._top_level_index(node))

    def _counter_read(self, node: cst.BaseExpression, counters: dict[str, Counter], steps: list[Step],
                      pass_indices: set[str] = frozenset()) -> Counter | None:
        """The counter a test reads, directly or through names bound in the loop. Read together
        with the index of a loop around it (`epoch * len(dl) + i`), it goes on across passes."""
        values = {target: value for step in steps for target, value, _ in step.assigns if value is not None}
        seen: set[str] = set()
        pending = list(self._names_read(node))
        found = None
        while pending:
            name = pending.pop(0)
            if name in seen:
                continue
            seen.add(name)
            if name in counters:
                found = found or counters[name]
            elif name in values:
                pending += sorted(self._names_read(values[name]))
        if found is not None and seen & pass_indices:
            return replace(found, per_pass=False, first_value=None)
        return found

    def _window_caches(self, loop: LoopNode) -> frozenset[str]:
        """Names that grow over the loop's iterations (`feats.append(...)`, `feats += [...]`),
        whether or not they are reset at a boundary."""
        cache = self._window_cache_memo
        if id(loop) not in cache:
            grown: set[str] = set()
            for call in self.facts.tree.find(loop.body, cst.Call, enter_scopes=False):
                name = call_name(call) or ""
                owner, _, method = name.rpartition(".")
                if method in {"append", "extend", "insert"} and owner:
                    grown.add(owner)
            for found in self.facts.tree.find(loop.body, cst.AugAssign, enter_scopes=False):
                if isinstance(found.operator, cst.AddAssign) and isinstance(found.value, (cst.List, cst.ListComp)):
                    grown.add(dotted_name(found.target) or "")
            # `outs = []` on every micro-batch, in the loop's own block: it holds one micro-batch's values
            for statement in _statements(loop.body):
                for small in getattr(statement, "body", ()) if isinstance(statement, cst.SimpleStatementLine) else ():
                    if type(small) is cst.Assign and _empty_container(small.value):
                        grown -= {name for target in small.targets for name in _target_names(target.target)}
            cache[id(loop)] = frozenset(g for g in grown if g)
        return cache[id(loop)]

    def _names_read(self, node: cst.CSTNode) -> set[str]:
        """The names `node` reads, those of the same-module predicates it calls, and the lengths
        it reads of named lists (`len(window)`: a count the loop keeps by appending, see
        `_assignments`)."""
        names = self.facts.tree.names_read(node)
        for found in self.facts.tree.find(node, cst.Subscript):
            if (entry := keyed_entry(found)) is not None:
                names.add(entry)  # `state["step"]`: a count kept in a dictionary
        for found in self.facts.tree.find(node, cst.Call):
            name = call_name(found) or ""
            if name == "len" and len(found.args) == 1 and (measured := dotted_name(found.args[0].value)):
                names.add(f"len({measured})")
                continue
            predicate = self._predicate(name)
            if predicate is not None:
                names |= self._names_read(predicate[1])
        return names

    def _predicate(self, name: str) -> tuple[list[str], cst.BaseExpression] | None:
        """A same-module `def f(i): return <expr>` (or a method reached as `self.f`)."""
        short = name[len("self."):] if name.startswith("self.") else name
        if "." in short:
            return None
        func = self.facts.function_named(short)
        if func is None:
            return None
        body = function_statements(func)
        if len(body) != 1 or not isinstance(body[0], (cst.SimpleStatementLine, cst.SimpleStatementSuite)) \
                or len(body[0].body) != 1:
            return None
        returned = body[0].body[0]
        if not isinstance(returned, cst.Return) or returned.value is None:
            return None
        params = [p.name.value for p in func.params.params]
        if name.startswith("self.") and params and params[0] in {"self", "cls"}:
            params = params[1:]
        if func.params.star_arg is not cst.MaybeSentinel.DEFAULT and func.params.star_arg is not None or func.params.kwonly_params:
            return None
        return params, returned.value

    def _atom_roles(self, loop: LoopNode, steps: list[Step], counters: dict[str, Counter], relevant: set[str],
                    context: GuardContext, function: cst.FunctionDef | None = None, length: str | None = None,
                    stepping: set[int] | None = None):
        """Which configuration values are the accumulation count `k` (a divisor of a
        counter, or the limit of a counter reset in the loop) and which the pass length
        `n` (`len(...)`, `range(n)`'s bound, a value a counter is compared with)."""
        k_atoms: set[str] = set()
        k_nodes: dict[str, cst.BaseExpression] = {}
        literals: set[int] = set()
        n_atoms: set[str] = set()
        resets = {target for step in steps for target, value, op in step.assigns
                  if op is None and isinstance(value, cst.Integer)}
        counting = set(counters) | {target for step in steps for target, _, op in step.assigns if op is not None}
        # Names bound in the body to arithmetic of a count (`actual_step = step + 1`) count too.
        derived = [(target, self._names_read(value)) for step in steps for target, value, op in step.assigns
                   if op is None and value is not None and _count_arithmetic(value)]
        grew = True
        while grew:
            grew = False
            for target, names in derived:
                if target not in counting and names & counting:
                    counting.add(target)
                    grew = True
        expressions: list[cst.BaseExpression] = []
        side: set[int] = set()  # tests of statements that neither step nor clear
        for step in steps:
            tests = [t.expression for t in step.tests if t.expression is not None]
            if stepping is not None and step.key not in stepping:
                side.update(id(t) for t in tests)
            expressions += tests
            expressions += [value for _, value, _ in step.assigns if value is not None]
        side_literals: set[int] = set()
        for expression in list(expressions):
            for call in self.facts.tree.find(expression, cst.Call):
                predicate = self._predicate(call_name(call) or "")
                if predicate is not None:
                    expressions.append(_inlined(predicate, call))

        def configuration(node: cst.BaseExpression) -> bool:
            names = self._names_read(node)
            return bool(names) and not any(context.is_varying(n) or n in counting for n in names) and is_switch(node, context)

        def reads_counter(node: cst.BaseExpression) -> bool:
            return any(n in counting for n in self._names_read(node))

        def counted_by_a_method(node: cst.BaseExpression) -> bool:
            """`train.gradient_accumulation_iters(devices)`: a method of an object the loop does not
            change, handed only what the loop does not change: the same count on every micro-batch
            (not a library's random, clock or tensor function, nor `next`)."""
            if type(node) is not cst.Call or type(node.func) is not cst.Attribute:
                return False
            receiver = dotted_name(node.func.value)
            if receiver is None or receiver.split(".")[0] in _NOT_A_COUNT_MODULES:
                return False
            names = self._names_read(node)
            return not any(context.is_varying(n) or n in counting for n in names) and all(
                is_switch(arg.value, context) for arg in node.args)

        for expression in expressions:
            for found in self.facts.tree.walk(expression):
                if isinstance(found, cst.BinaryOperation) and isinstance(found.operator, (cst.Modulo, cst.FloorDivide)):
                    if not reads_counter(found.left):
                        continue
                    divisor = found.right
                    if isinstance(divisor, cst.Integer):
                        (side_literals if id(expression) in side else literals).add(integer_value(divisor))
                    elif configuration(divisor) or counted_by_a_method(divisor):
                        value = self.facts.evaluate_int(divisor, loop, function)
                        if value is None and function is not None and isinstance(divisor, cst.Name):
                            value = self._parameter_literal(function, divisor.value)
                        if value is not None:
                            literals.add(value)
                            k_nodes.setdefault(str(value), divisor)  # how the loop names it
                        else:
                            k_atoms.add(bare(code_of(divisor)))
                            k_nodes.setdefault(bare(code_of(divisor)), divisor)
                elif isinstance(found, cst.Call) and call_name(found) == "len" and bare(code_of(found)) not in counting:
                    n_atoms.add(bare(code_of(found)))  # not `len(window)` of a list the loop keeps as a count
        for expression in expressions:
            for found in self.facts.tree.walk(expression):
                if not isinstance(found, cst.Comparison):
                    continue
                sides = [found.left] + [c.comparator for c in found.comparisons]
                if not any(reads_counter(side) for side in sides):
                    continue
                operators = [c.operator for c in found.comparisons]
                counted_here = [n for side in sides for n in self._names_read(side) if n in counting]
                for side in sides:
                    atom = _strip_constant_terms(side)
                    if (isinstance(side, cst.Integer) and all(isinstance(op, _WINDOW_TESTS) for op in operators)
                            and any(n in resets for n in counted_here)):
                        # `count >= 4` or `== 4` with `count = 0` at the step; not the `== 0` of
                        # `len(window) % k == 0` (a list's length kept as a count: no window is empty)
                        if integer_value(side) > 0 or not any(n.startswith("len(") for n in counted_here):
                            literals.add(integer_value(side))
                        continue
                    if atom is None or reads_counter(atom) or not configuration(atom):
                        continue
                    text = bare(code_of(atom))
                    value = self.facts.evaluate_int(atom, loop, function)
                    if value is not None and all(isinstance(op, _WINDOW_TESTS) for op in operators) and any(
                            n in resets for n in counted_here):
                        literals.add(value)  # `count == k` with `k = 4`, `count = 0` at the step
                        k_nodes.setdefault(str(value), atom)
                        continue
                    if text in k_atoms or text in n_atoms or value is not None:
                        continue
                    if all(isinstance(op, _WINDOW_TESTS) for op in operators) and any(
                            n in resets for n in counted_here):
                        # `count >= k` or `count == k`, with `count = 0` where it holds: a window of k
                        k_atoms.add(text)
                        k_nodes.setdefault(text, atom)
                    elif all(isinstance(op, (cst.Equal, cst.NotEqual)) for op in operators):
                        n_atoms.add(text)  # `i == n - 1`: the last micro-batch (a `>=` is a run limit)
        if isinstance(loop, cst.For):
            bound = _range_arguments(loop.iter)
            if bound is not None and len(bound) == 1:
                n_atoms.add(bare(code_of(bound[0])))
        if length is not None and length.startswith("len("):
            n_atoms.add(bare(length))  # `iters = len(loader) // k` before the loop reads the pass length too
        if not literals and not k_atoms:
            literals = side_literals  # no step reads a count: the others' periods are all there is
        if 1 in literals and (k_atoms or len(literals) > 1):
            literals.discard(1)  # `count % scheduling_step` with `scheduling_step = 1` beside a window: every micro-batch
        k_literal = next(iter(literals)) if len(literals) == 1 and not k_atoms else None
        if len(literals) > 1 or (literals and k_atoms):
            return set(), None, set(), {}
        return k_atoms, k_literal, n_atoms - k_atoms, k_nodes

    def _agreed_at_call_sites(self, function: cst.FunctionDef, name: str,
                              read: Callable[[cst.BaseExpression, cst.CSTNode | None, cst.FunctionDef | None], _T | None],
                              defaults: bool = True) -> _T | None:
        """RULES.md, *facts along calls*: the one value `read` finds for parameter `name` of
        `function` at every call site of the module: what a call hands it, read in the caller
        before the call, or, where a call leaves it out and `defaults`, the parameter's default,
        read at the function. None where the calls disagree, one is unknown, or none is seen."""
        arguments = self._call_site_arguments(function).get(name)
        if not arguments:
            return None
        param = next((p for p in (*function.params.params, *function.params.kwonly_params) if p.name.value == name),
                     None)
        values: set[_T | None] = set()
        for argument, caller, statement in arguments:
            if argument is not None:
                values.add(read(argument, statement, caller))
            elif defaults and param is not None and param.default is not None:
                values.add(read(param.default, None, None))
            else:
                return None
        return values.pop() if len(values) == 1 else None

    def _loss_parameters(self, function: cst.FunctionDef | None) -> frozenset[str]:
        """Parameters of `function` it calls that every call site hands a loss module: made in the
        call (`train(..., nn.BCEWithLogitsLoss())`) or bound to one in the caller (`BCE = ...`)."""
        if function is None:
            return frozenset()
        parameters = parameter_names(function)
        called = {call.func.value for call in self.facts.tree.find(function.body, cst.Call, enter_scopes=False)
                  if type(call.func) is cst.Name and call.func.value in parameters}

        def loss_module(value: cst.BaseExpression, statement: cst.CSTNode | None,
                        caller: cst.FunctionDef | None) -> bool | None:
            if type(value) is cst.Name:
                binding = self.facts.latest_binding(value.value, statement, caller)
                value = binding.value if binding is not None and binding.tuple_index is None else value
            return True if makes_loss_module(value) else None

        return frozenset(name for name in called
                         if self._agreed_at_call_sites(function, name, loss_module, defaults=False))

    def _framework_counts_handed(self, loop: TrainingLoop, function: cst.FunctionDef | None) -> frozenset[str]:
        """Parameters of the loop's function that divide a loss and that every call site of the
        module hands a framework's accumulation count (`train_one_epoch(..., args.accum, ...)`
        beside `Accelerator(gradient_accumulation_steps=args.accum)`): RULES.md, facts along calls."""
        if function is None or not any(e.kind is EventKind.BACKWARD and e.framework for e in loop.events):
            return frozenset()
        parameters = parameter_names(function)
        divisors = {d.divisor.value for e in loop.events if e.loss_flow is not None for d in e.loss_flow.divisions
                    if type(d.divisor) is cst.Name and d.divisor.value in parameters}
        return frozenset(name for name in divisors if self._agreed_at_call_sites(
            function, name, lambda value, _, __: self.facts.framework_count(value), defaults=False))

    def _parameter_literal(self, function: cst.FunctionDef, name: str) -> int | None:
        """RULES.md, *provable from literals*: a parameter that every call site in the module
        leaves at its literal default, or passes the same literal."""
        return self._agreed_at_call_sites(
            function, name, lambda value, _, __: integer_value(value) if isinstance(value, cst.Integer) else None)

    def _parameter_int(self, function: cst.FunctionDef, name: str) -> int | None:
        """The integer every call site of `function` in the module passes as parameter `name`
        (or leaves at its default), where it follows from literals there."""
        return self._agreed_at_call_sites(function, name, self.facts.evaluate_int)

    def _parameter_length(self, function: cst.FunctionDef, name: str, depth: int = 0) -> int | None:
        """RULES.md, *facts along calls*: the length of what parameter `name` of `function` holds,
        when every call site in the module passes a value whose length follows from literals
        there (`loader = DataLoader(..., batch_size=4)` in `main`, then `train(loader)`), through
        callers that hand on a parameter of their own; None where the function rebinds it."""
        if depth > 3 or any(b.scope is function for b in self.facts.bindings.get(name, ())):
            return None

        def length(argument: cst.BaseExpression, statement: cst.CSTNode | None,
                   caller: cst.FunctionDef | None) -> int | None:
            found = self.facts.evaluate_length(argument, statement, caller)
            if found is None and isinstance(argument, cst.Name) and caller is not None:
                found = self._parameter_length(caller, argument.value, depth + 1)
            return found
        return self._agreed_at_call_sites(function, name, length, defaults=False)

    def _constant_reader(self, loop: LoopNode, function: cst.FunctionDef | None, context: GuardContext,
                         lengths: frozenset[str] | set[str] = frozenset()):
        """A name bound outside the loop: a literal (module constants, keyword defaults at the
        only call site) or the expression it was bound to; bound to the pass length (`steps =
        len(loader)`, one of `lengths`), that expression, whatever literals say it is: the samples
        run passes of other lengths too."""
        def read(node: cst.BaseExpression):
            text = dotted_name(node)
            if text is None and type(node) is cst.Subscript:  # `cfg["k"]` of a dictionary literal
                root = dotted_name(node.value)
                return None if root is None or context.is_varying(root) else \
                    self.facts.evaluate_int(node, loop, function)
            if text is None or context.is_varying(text):
                return None
            binding = self.facts.latest_binding(text, loop, function)
            single = binding is not None and binding.tuple_index is None and len(
                [b for b in self.facts.bindings.get(text, []) if b.scope is binding.scope]) == 1
            if single and bare(code_of(binding.value)) in lengths:
                return binding.value
            value = self.facts.evaluate_int(node, loop, function)
            if value is None and function is not None and isinstance(node, cst.Name):
                value = self._parameter_literal(function, node.value)
            if value is not None:
                return value
            return binding.value if single else None
        return read

    # -- step hygiene (GA4xx, GA501) ---------------------------------------------

    def _step_hygiene(self, loop: TrainingLoop, training: cst.CSTNode, function: cst.FunctionDef | None,
                      varying: set[str]) -> None:
        """Scalers in use, DDP models and sync control, for the GA4xx/GA501 rules."""
        loop.varying = frozenset(varying)
        loop.scalers_in_use = frozenset(self._scalers_in_use(loop.events, function))
        loop.scaler_flags = {name: flags for name in loop.scalers_in_use
                             if (flags := self._scaler_flags(name)) is not None}
        loop.unscale_in_helper = self._calls_helper_with(training, EventKind.UNSCALE)
        loop.sync_tests = self._sync_tests(training)
        loop.handed_unseen = self._handed_unseen(training)
        loop.handed_to_project_objects = self._handed_to_project_objects(training)
        loop.framework_counts_handed = self._framework_counts_handed(loop, function)
        wraps = self._ddp_wraps(training, function)
        if not wraps:
            return
        # Forward calls that can feed the backward: before the last backward, with grad enabled.
        order = self.facts.statement_order
        last_backward = max((order.get(id(e.statement), 0) for e in loop.events if e.kind is EventKind.BACKWARD),
                            default=0)
        without_grad = {id(s.statement) for s in loop.body if s.without_grad}
        statements = [s for s in self._own_statements(_statements(training.body), enter_loops=True)
                      if order.get(id(s), 0) <= last_backward and id(s) not in without_grad]
        called: dict[str, list[cst.CSTNode]] = {}
        referenced: set[str] = set()
        # The forward calls whose graphs reach a backward: a DDP model whose output is only used
        # detached (a frozen teacher) syncs nothing.
        feeding: set[int] = set()
        if loop.graph is not None:
            for event in loop.events:
                if event.kind is EventKind.BACKWARD and event.loss is not None:
                    feeding |= loop.graph.forwards(event.loss, event.position)
        detached_only: dict[str, bool] = {}
        for statement in statements:
            for call in self.facts.tree.find(statement, cst.Call, enter_scopes=False):
                name = call_name(call)
                if name is not None:
                    target = _module_called(name)
                    if target in wraps:
                        called.setdefault(target, []).append(statement)
                        known = bool(feeding) and UNKNOWN_GRAPH not in feeding
                        detached_only[target] = detached_only.get(target, True) and known and id(call) not in feeding
                    for through in self._method_forwards(name, call, wraps):  # `loss = self.train_on_batch(batch)`
                        called.setdefault(through, []).append(statement)
                if (name or "").rsplit(".", 1)[-1] not in PURE_CALLS:  # `isinstance(model, DDP)` runs nothing of it
                    referenced.update(dotted_name(a.value) or "" for a in call.args)
        # The model the loop calls first leads; `ddp_forwards` are its calls.
        used = sorted((wraps[name] for name in wraps if (name in called and not detached_only.get(name))
                       or (name in referenced and name not in called)),
                      key=lambda w: min((order.get(id(s), 0) for s in called.get(w.name, [])), default=1 << 30))
        if not used:
            return
        loop.ddp = tuple(used)
        loop.ddp_forwards = tuple(called.get(used[0].name, []))
        names = {w.name for w in used}
        handed = self._sync_handed(training, names)
        spellings, in_helpers = self._sync_spellings(training, function)
        loop.sync_control = bool(spellings) or in_helpers or handed
        if loop.sync_control and not handed and not in_helpers:  # a helper's: for which model is not read here
            loop.sync_controlled = self._sync_controlled(spellings, names)

    def _method_forwards(self, name: str, call: cst.Call, wraps: dict[str, DdpWrap]) -> set[str]:
        """The wrapped models a same-class method (`self.train_on_batch`, one definition) calls
        in its own body, as `self.model` or as the parameter this call hands the model to: its
        call is their forward."""
        if not name.startswith("self.") or name.count(".") != 1:
            return set()
        method = self.facts.function_named(name[len("self."):])
        if method is None:
            return set()
        parameters = [p.name.value for p in method.params.params][1:]  # after `self`
        handed = {parameter: dotted_name(arg.value) for parameter, arg in zip(parameters, call.args)
                  if arg.keyword is None and not arg.star}
        handed.update({arg.keyword.value: dotted_name(arg.value) for arg in call.args if arg.keyword is not None})
        found = set()
        for inner_call in self.facts.tree.find(method.body, cst.Call, enter_scopes=False):
            inner = _module_called(call_name(inner_call) or "")
            model = inner if inner.startswith("self.") else handed.get(inner)
            if model in wraps:
                found.add(model)
        return found

    def _scaler_flags(self, name: str) -> frozenset[str] | None:
        """The `enabled=` texts of the scaler's constructions (none: always on); None when no
        construction is visible."""
        flags = set()
        made = False
        for binding in self.facts.bindings.get(name, ()):
            value = binding.value
            if isinstance(value, cst.Call) and binding.tuple_index is None:
                made = True
                enabled = keyword_argument(value, "enabled")
                if enabled is not None:
                    flags.add(code_of(enabled).strip())
        return frozenset(flags) if made else None

    def _scalers_in_use(self, events: list[Event], function: cst.FunctionDef | None) -> set[str]:
        """RULES.md, *scaler in use*: every visible construction is `enabled=False` (or None) means not."""
        in_use: set[str] = set()
        for name in {e.via_scaler for e in events if e.via_scaler}:
            bindings = [b for b in self.facts.bindings.get(name, [])
                        if b.scope is function or b.scope is None or name.startswith("self.")]
            if not bindings or not all(b.tuple_index is None and scaler_disabled(b.value) for b in bindings):
                in_use.add(name)
        return in_use

    def _ddp_wraps(self, training: cst.CSTNode, function: cst.FunctionDef | None) -> dict[str, DdpWrap]:
        """`model = DDP(model)` in the loop's function (before the loop), the module, or `self.model = DDP(...)`."""
        loop_order = self.facts.statement_order.get(id(training), 1 << 30)
        wraps: dict[str, DdpWrap] = {}
        self_syncing: set[str] = set()
        wrapping, aliases = self._wrapping_bindings()
        for name, bindings in wrapping.items():
            for binding in bindings:
                if syncs_itself(binding.value):
                    self_syncing.add(name)
                    continue
                wrapper = wrapper_name(binding.value)
                if wrapper not in DDP_CONSTRUCTORS or binding.tuple_index is not None:
                    continue
                if binding.scope is function and function is not None:
                    if self.facts.binding_order.get(id(binding.statement), 0) > loop_order:
                        continue
                elif not (binding.scope is None or name.startswith("self.")):
                    continue
                # Wrapped in another method than `__init__` (`self._wrap()` under `if distributed:`):
                # whether that method runs, in every configuration, is not visible.
                conditional = self._under_condition(binding.statement, binding.scope) or (
                    binding.scope is not None and binding.scope is not function
                    and binding.scope.name.value != "__init__")
                previous = wraps.get(name)
                wraps[name] = DdpWrap(name, conditional or (previous is not None and previous.conditional),
                                      self._torch_ddp(binding.value) and (previous is None or previous.torch))
        wraps = {name: wrap for name, wrap in wraps.items() if name not in self_syncing}
        if function is not None:
            wraps.update(self._wraps_through_calls(function, wraps, self_syncing))
        # `context_model = self.context_encoder` in the loop's function: the same model.
        if function is not None:
            for name, bindings in aliases.get(id(function), {}).items():
                if name in wraps or name in self_syncing:
                    continue
                for binding in bindings:
                    source = dotted_name(binding.value) if binding.tuple_index is None else None
                    if (binding.scope is function and source in wraps
                            and self.facts.binding_order.get(id(binding.statement), 0) < loop_order):
                        wrap = wraps[source]
                        wraps[name] = DdpWrap(name, wrap.conditional, wrap.torch)
        return wraps

    def _wraps_through_calls(self, function: cst.FunctionDef, known: dict[str, DdpWrap],
                             self_syncing: set[str]) -> dict[str, DdpWrap]:
        """RULES.md, *facts along calls*: a parameter is a DDP model when every call site of
        the function in this module passes one, wrapped in the caller before the call."""
        found: dict[str, DdpWrap] = {}
        wrapping, _ = self._wrapping_bindings()
        for param, arguments in self._call_site_arguments(function).items():
            if param in known or not arguments:
                continue
            wraps: list[DdpWrap] = []
            for argument, caller, statement in arguments:
                name = dotted_name(argument) if argument is not None else None
                if name is None or name in self_syncing:
                    break
                call_order = self.facts.statement_order.get(id(statement), 1 << 30)
                bindings = [b for b in wrapping.get(name, []) if b.tuple_index is None
                            and wrapper_name(b.value) in DDP_CONSTRUCTORS
                            and (b.scope is None or b.scope is caller)
                            and (b.scope is None or self.facts.binding_order.get(id(b.statement), 0) < call_order)]
                if not bindings:
                    break
                wraps.append(DdpWrap(param, any(self._under_condition(b.statement, b.scope) for b in bindings),
                                     all(self._torch_ddp(b.value) for b in bindings)))
            else:
                found[param] = DdpWrap(param, any(w.conditional for w in wraps), all(w.torch for w in wraps))
        return found

    def _call_site_arguments(self, function: cst.FunctionDef):
        """For each parameter, the argument every call site of `function` passes (with the
        calling function and the call); computed once per function."""
        cache = self._call_site_cache
        if id(function) in cache:
            return cache[id(function)]
        name = function.name.value
        result: dict[str, list] = {}
        defs = self.facts.functions.get(name, [])
        if len(defs) == 1:
            params = [p.name.value for p in function.params.params]
            method = bool(params) and params[0] in {"self", "cls"}
            if method:
                params = params[1:]
            calls = self._calls_named(name, method)
            for param in params:
                result[param] = []
            for call, caller, statement in calls:
                if any(a.star for a in call.args):
                    return cache.setdefault(id(function), {})
                positional = [a.value for a in call.args if a.keyword is None]
                keywords = {a.keyword.value: a.value for a in call.args if a.keyword is not None}
                for index, param in enumerate(params):
                    argument = positional[index] if index < len(positional) else keywords.get(param)
                    result[param].append((argument, caller, statement))
        cache[id(function)] = result
        return result

    def _calls_named(self, name: str, method: bool) -> list[tuple[cst.Call, cst.FunctionDef | None, cst.CSTNode]]:
        """Calls of the module's function `name` (`self.name(...)` for a method): the call,
        the function it sits in and its statement."""
        index = self._calls_index
        if index is None:
            index = {}
            # Only calls of the module's own functions are asked for: the walk enters only the
            # statements holding one (most hold none).
            tree = self.facts.tree
            calls = self.facts.calls
            numbers = sorted(tree.span(call)[0]  # type: ignore[index]
                             for function in self.facts.functions for name in (function, f"self.{function}")
                             for call in calls.get(name, ()))
            _index_calls(tree, numbers, self.module.body, None, index)
            self._calls_index = index
        return list(index.get(f"self.{name}" if method else name, []))

    def _wrapping_bindings(self):
        """Bindings that wrap a model (DDP, FSDP, prepare, ...) and, per function, plain
        `a = b.c` aliases; computed once per module, not once per loop."""
        if self._wrapping is None:
            wrapping: dict[str, list] = {}
            aliases: dict[int, dict[str, list]] = {}
            functions = self.facts.functions
            for name, bindings in self.facts.bindings.items():
                for binding in bindings:
                    if wraps_model(binding.value):
                        wrapping.setdefault(name, []).append(binding)
                    elif type(binding.value) is cst.Call and own_function_name(binding.value) in functions:
                        # `optimizer, model = prep(args, model)` with `model = DDP(model)` returned
                        # there: the binding gives what the function wraps (facts along calls).
                        made = self._returned(binding)
                        if made is not None and wraps_model(made[0]):
                            wrapping.setdefault(name, []).append(replace(binding, value=made[0], tuple_index=None))
                    elif binding.scope is not None and type(binding.value) in _NAME_TYPES:
                        aliases.setdefault(id(binding.scope), {}).setdefault(name, []).append(binding)
            self._wrapping = (wrapping, aliases)
        return self._wrapping

    def _under_condition(self, node: cst.CSTNode, scope: cst.FunctionDef | None) -> bool:
        root = scope.body if scope is not None else self.module
        for compound in self.facts.tree.find(root, cst.If, cst.Try, cst.TryStar, cst.For, cst.While, cst.Match,
                                             enter_scopes=False):
            if self.facts.tree.contains(compound, node, enter_scopes=False):
                return True
        return False

    def _torch_ddp(self, value: cst.BaseExpression) -> bool:
        """torch's DistributedDataParallel, by its spelling or its import."""
        name = call_name(value) or ""  # type: ignore[arg-type]
        if "." in name:
            return name.startswith(("torch.", "nn.", "parallel.", "distributed."))
        for found in self.facts.tree.find(self.module, cst.ImportFrom):
            if found.module is None or isinstance(found.names, cst.ImportStar):
                continue
            for alias in found.names:
                local = dotted_name(alias.asname.name) if alias.asname is not None else dotted_name(alias.name)
                if local == name:
                    return (dotted_name(found.module) or "").startswith("torch")
        return False

    def _sync_spellings(self, training: cst.CSTNode, function: cst.FunctionDef | None) -> tuple[list[cst.CSTNode], bool]:
        """The names and attributes spelling a way of turning sync off in the loop's function (the
        module for a module-level loop), and whether a function of the module the loop calls
        spells one too. Only a name or an attribute can spell it."""
        def spelt(root: cst.CSTNode) -> list[cst.CSTNode]:
            return [node for node in self.facts.tree.find(root, cst.Name, cst.Attribute) if turns_sync_off(node)]

        helpers = []
        for call in self.facts.tree.find(training, cst.Call):
            name = call_name(call) or ""
            helpers += self.facts.functions.get(name[len("self."):] if name.startswith("self.") else name, [])
        return spelt(function if function is not None else self.module), any(spelt(helper) for helper in helpers)

    @staticmethod
    def _sync_controlled(spellings: list[cst.CSTNode], models: set[str]) -> frozenset[str] | None:
        """The DDP models whose sync the loop's function turns off, where every way it does is
        spelt on one of them (`gen.no_sync()`, `disc.require_backward_grad_sync = ...`); None when
        some is not (`fabric.no_backward_sync(model)`)."""
        found: set[str] = set()
        attributes = {id(node.attr) for node in spellings if type(node) is cst.Attribute}
        for node in spellings:
            if id(node) in attributes:
                continue  # the `no_sync` of `G.no_sync`: read with its owner
            owner = dotted_name(node.value) if type(node) is cst.Attribute else None
            if owner not in models:
                return None
            found.add(owner)  # type: ignore[arg-type]
        return frozenset(found)

    def _handed_unseen(self, training: cst.CSTNode) -> frozenset[str]:
        """What the loop hands to calls whose bodies the module cannot see (RULES.md, *values the
        module cannot see*): the arguments of a function imported from the project
        (`trades_loss(model, x, y, optimizer)`), and `self` itself for a method of `self` this
        module does not define (inherited from a class elsewhere)."""
        found: set[str] = set()
        for call in self.facts.tree.find(training, cst.Call, enter_scopes=False):
            name = call_name(call) or ""
            if name.startswith("self.") and name.count(".") == 1:
                methods = self.facts.functions.get(name[len("self."):], [])
                if not methods and name not in self.facts.bindings:
                    found.add("self")  # `self.net(x)` with `self.net = nn.Linear(...)` is handed `x` only
                # A method of the class handing `self.optimizer` on to such a call (facts along calls).
                for method in methods:
                    found |= {text for text in self._handed_to_the_project(method) if text.startswith("self.")}
                continue
            found |= self._handed_to_the_project(call)
        return frozenset(found)

    def _handed_to_the_project(self, node: cst.CSTNode) -> set[str]:
        """What the calls in `node` (a call, or a function's body) hand to functions imported
        from the project, whose bodies the module cannot see."""
        found: set[str] = set()
        for call in self.facts.tree.find(node, cst.Call):
            if self._from_the_project((call_name(call) or "").split(".")[0]):
                found.update(text for a in call.args if (text := dotted_name(a.value)))
        return found

    def _handed_to_project_objects(self, training: cst.CSTNode) -> frozenset[str]:
        """What the loop hands to methods of objects built by classes imported from the project
        (`architect.step(x, y, optimizer)` with `architect = Architect(model)`): unseen bodies too."""
        found: set[str] = set()
        for call in self.facts.tree.find(training, cst.Call, enter_scopes=False):
            if self._made_by_the_project((call_name(call) or "").split(".")[0], call):
                found.update(text for a in call.args if (text := dotted_name(a.value)))
        return frozenset(found)

    def _from_the_project(self, name: str) -> bool:
        source = self.facts.imported_from.get(name)
        return source is not None and source.split(".")[0] not in LIBRARY_ROOTS

    def _made_by_the_project(self, name: str, call: cst.Call) -> bool:
        """`architect.step(x, y, optimizer)` with `architect = Architect(model)` of a class imported
        from the project: a method whose body the module cannot see either."""
        if type(call.func) is not cst.Attribute or not name:
            return False
        bound = [b for b in self.facts.bindings.get(name, ()) if b.tuple_index is None]
        return bool(bound) and all(type(b.value) is cst.Call and self._from_the_project(
            (call_name(b.value) or "").split(".")[0]) for b in bound)

    def _sync_tests(self, training: cst.CSTNode) -> tuple[SyncTest, ...]:
        """The tests that decide, inside the loop, whether gradient sync is off: the `enabled=`
        of `no_backward_sync(model, enabled=...)`, the test of an `if` or of a conditional
        expression that turns it off (`model.no_sync() if ... else nullcontext()`), the value
        assigned to `require_backward_grad_sync`."""
        tree = self.facts.tree

        def turns_off(node: cst.CSTNode) -> bool:
            return any(turns_sync_off(n) for n in tree.find(node, cst.Name, cst.Attribute, enter_scopes=False))

        if not turns_off(training):
            return ()
        found: list[cst.BaseExpression] = []
        for node in tree.find(training, cst.Call, cst.If, cst.IfExp, cst.Assign, enter_scopes=False):
            if isinstance(node, cst.Call):
                if turns_sync_off(node.func) and (enabled := keyword_argument(node, "enabled")) is not None:
                    found.append(enabled)
            elif isinstance(node, cst.If):
                if turns_off(node.body) or (node.orelse is not None and turns_off(node.orelse)):
                    found.append(node.test)
            elif isinstance(node, cst.IfExp):
                if turns_off(node.body) or turns_off(node.orelse):
                    found.append(node.test)
            elif any(turns_sync_off(t.target) for t in node.targets):
                found.append(node.value)
        # A flag bound in the loop (`skip_sync = (i + 1) % k != 0`, then `no_sync() if skip_sync`)
        # reads what its value reads: the same counter, a second spelling of the boundary.
        values: dict[str, list[cst.BaseExpression]] = {}
        for node in tree.find(training, cst.Assign, enter_scopes=False):
            for target in node.targets:
                if (name := dotted_name(target.target)) is not None:
                    values.setdefault(name, []).append(node.value)

        def reads(test: cst.BaseExpression) -> tuple[frozenset[str], tuple[cst.BaseExpression, ...]]:
            found_names, through, pending = set(), [], list(self._names_read(test))
            while pending:
                name = pending.pop()
                if name not in found_names:
                    found_names.add(name)
                    for value in values.get(name, ()):
                        pending += self._names_read(value)
                        through.append(value)
            return frozenset(found_names), tuple(through)
        return tuple(SyncTest(test, *reads(test)) for test in found)

    def _sync_handed(self, training: cst.CSTNode, models: set[str]) -> bool:
        """RULES.md GA501: a context manager of the loop handed the DDP model together with a
        flag (`with maybe_no_sync(model, accumulating):`) controls its sync."""
        for item in self.facts.tree.find(training, cst.WithItem):
            call = item.item
            if not isinstance(call, cst.Call):
                continue
            values = [a.value for a in call.args]
            name = (call_name(call) or "").rsplit(".", 1)[-1]
            if name in self.facts.functions:
                continue  # a context manager of this module: its body was read (`_sync_control`)
            if len(values) >= 2 and any(dotted_name(v) in models for v in values):
                return True
        return False

    def _calls_helper_with(self, training: cst.CSTNode, kind: EventKind) -> bool:
        """The loop calls a function of this module (`helper()`, `self.helper()`) holding a `kind` event."""
        for call in self.facts.tree.find(training, cst.Call):
            name = call_name(call) or ""
            short = name[len("self."):] if name.startswith("self.") else name
            for helper in self.facts.functions.get(short, []):
                if helper is not training and kind in self._helper_kinds(helper):
                    return True
        return False

    def _helper_kinds(self, helper: cst.FunctionDef) -> set[EventKind]:
        cache = self._helper_kind_cache
        if id(helper) not in cache:
            cache[id(helper)] = {e.kind for e in events_in(helper, self.facts, set())}
        return cache[id(helper)]

    def _step_helper(self, func: cst.FunctionDef) -> None:
        """`def train_step(...)`: a backward and a step in the function, no loop around them."""
        if not self._may_hold_backward(func):
            return
        own = _own_simple_statements(_statements(func.body))
        # Most such functions hold their backward in a loop: their own statements then hold
        # none, and their events are not read.
        if not any(self._may_hold_backward(s) for s in own):
            return
        kinds = {e.kind for s in own for e in self._statement_events(s)}
        if EventKind.BACKWARD not in kinds or EventKind.STEP not in kinds:
            return
        self._top_level = tuple(_statements(func.body))
        varying = self._varying(func)  # type: ignore[arg-type]
        context = GuardContext(counters={}, varying=varying, tree=self.facts.tree, aliases=self._aliases(func))  # type: ignore[arg-type]
        visits = list(self._visits(func, None))  # type: ignore[arg-type]
        events = self._events(visits, context, func, func)  # type: ignore[arg-type]
        helper = TrainingLoop(
            node=func,  # type: ignore[arg-type]
            shape=Shape.STEP_HELPER,
            function=func,
            iterable=IterableInfo(IterableKind.UNKNOWN, None, None),
            counter=None,
            events=events,
            variants=_variants(events, self._frameworks, constants=self._constant_switches(events, func)),
            frameworks=frozenset(self._frameworks(events)),
        )
        self._step_hygiene(helper, func, func, varying)
        self.step_helpers.append(helper)

    def _pass_bounded(self, micro: LoopNode, events: list[Event], literal_length: int | None) -> bool:
        """A pass of the loop is a handful of steps, not the data: each iteration steps another
        optimizer (`opts_d[i].step()`: a loop over models), or it runs `range(k)` where `k` is
        a framework's accumulation count, or as many micro-batches as that count holds
        (`range(0, 64, 16)` beside `Accelerator(gradient_accumulation_steps=4)`): a pass is one window."""
        steps = [e for e in events if e.kind is EventKind.STEP]
        if steps and all(e.iterated for e in steps):
            return True
        count = _single_range_argument(micro)
        if count is not None and code_of(count) in self.facts.framework_counts:
            return True
        return literal_length is not None and literal_length > 1 and any(
            self._framework_count_value(text) == literal_length for text in self.facts.framework_counts)

    def _framework_count_value(self, text: str) -> int | None:
        """The integer a framework's accumulation count holds: a literal, or a name every binding
        of the module sets to one literal."""
        try:
            return int(text, 0)
        except ValueError:
            return self.facts.bound_integer(text)

    def _remade_each_pass(self, micro: LoopNode, frames: list[_Frame]) -> frozenset[str]:
        """Names the loop around `micro` binds anew, each of its iterations, before `micro` runs."""
        outer = self._enclosing_loop(frames)
        if outer is None:
            return frozenset()
        start = self.facts.statement_order.get(id(micro), 0)
        names: set[str] = set()
        for statement in self._own_statements(_statements(outer.body), enter_loops=False):
            if self.facts.statement_order.get(id(statement), 1 << 30) > start:
                continue
            for small in getattr(statement, "body", ()):
                if type(small) is cst.Assign:
                    names.update(name for target in small.targets if (name := dotted_name(target.target)))
        return frozenset(names)

    def _splits_one_batch(self, micro: LoopNode, graph: GraphFlow) -> bool:
        """Each micro-step feeds a forward a slice of one batch picked by the micro-step's index
        (`model(x[i::k])`, `model(x[i * m:(i + 1) * m])`): the window is that batch, cut up."""
        if not isinstance(micro, cst.For) or not isinstance(micro.target, cst.Name):
            return False
        index = micro.target.value
        tree = self.facts.tree
        # `xs = x[j::k]` in the micro-step's own block, then `net(xs)`: the slice under a name
        sliced = {name for found in tree.find(micro.body, cst.Assign, enter_scopes=False)
                  if self._slices_by(found.value, index)
                  for target in found.targets for name in _target_names(target.target)}
        for call in tree.find(micro.body, cst.Call, enter_scopes=False):
            if not graph.is_forward(call):
                continue
            if self._slices_by(call, index) or any(
                    dotted_name(arg.value) in sliced for arg in call.args):
                return True
        return False

    def _slices_by(self, node: cst.CSTNode, index: str) -> bool:
        """`node` holds a slice whose bounds or step read `index` (`x[i::k]`, `x[i * m:(i + 1) * m]`)."""
        for part in self.facts.tree.find(node, cst.Slice):
            bounds = [b for b in (part.lower, part.upper, part.step) if b is not None]
            if any(index in self._names_read(bound) for bound in bounds):
                return True
        return False

    def _draws_from_one_stream(self, micro: LoopNode) -> bool:
        """Each micro-step, in the window loop's own block, takes the next item of one iterator
        that the window does not rebind or pick by its index (`z = next(batches)`): the window
        is that many micro-batches of one stream (`next(task_iters[t])` is a task's own)."""
        tree = self.facts.tree
        rebound = {name for found in tree.find(micro.body, cst.Assign, cst.AnnAssign, cst.AugAssign, cst.For,
                                               enter_scopes=False)
                   for target in (getattr(found, "targets", None) or [found])
                   for name in _target_names(target.target)}
        for statement in _statements(micro.body):
            if not matches(type(statement), _SIMPLE):
                continue
            for call in tree.find(statement, cst.Call, enter_scopes=False):
                args = positional_args(call)
                stream = dotted_name(args[0]) if call_name(call) == "next" and len(args) == 1 else None
                if stream is not None and stream not in rebound:
                    return True
        return False

    def _window_blocks(self, loop: TrainingLoop, training: LoopNode) -> frozenset[int]:
        """Ids of the blocks that run once per window or more often: the loop's own body, a block
        that steps or clears, the block of an `if` that tests what a step's `if` tests
        (`if (i + 1) % k == 0:` again), and, where accelerate's `accumulate()` owns the window,
        the block of an `if` on its boundary (`if accelerator.sync_gradients:`)."""
        block_of = {id(record.statement): record.block for record in loop.body}
        blocks = {id(getattr(training.body, "body", None))} | {
            id(block_of.get(id(e.statement))) for e in loop.events if e.kind in (EventKind.STEP, EventKind.CLEAR)}
        step_tests = {code_of(c.expression) for e in loop.events if e.kind is EventKind.STEP
                      for c in e.conditions if c.kind is not ConditionKind.SWITCH and c.expression is not None}
        owned = "accelerate-accumulate" in loop.frameworks
        for node in self.facts.tree.find(training, cst.If, enter_scopes=False):
            if code_of(node.test) in step_tests or (owned and is_framework_boundary(node.test)):
                blocks.add(id(node.body.body))
        return frozenset(blocks)

    def _enclosing_loop(self, frames: list[_Frame]) -> LoopNode | None:
        for frame in reversed(frames):
            if frame.owner is None or isinstance(frame.owner, (cst.FunctionDef, cst.ClassDef)):
                return None
            if _is_loop(frame.owner):
                return frame.owner  # type: ignore[return-value]
        return None

    def _one_micro_step(self, micro: LoopNode, function: cst.FunctionDef | None) -> bool:
        """`for i in range(GENER_ITERS):` with `GENER_ITERS = 1`: one micro-step, nothing accumulates."""
        count = _single_range_argument(micro)
        return count is not None and self.facts.evaluate_int(count, micro, function) == 1

    def _harvests_gradients(self, micro: LoopNode) -> bool:
        """The micro-step loop reads `.grad` itself (`grads.append(p.grad.clone())`): each
        micro-step's gradient is taken as it is (per-task gradient surgery: PCGrad, MGDA), and
        what the step applies after the loop is whatever the loop writes back, not a window's sum."""
        tree = self.facts.tree
        # ... or in the methods of the class the micro-step loop calls (`self._awp_attack_step()`)
        methods = [method for call in tree.find(micro.body, cst.Call, enter_scopes=False)
                   if (name := call_name(call) or "").startswith("self.") and name.count(".") == 1
                   for method in self.facts.functions.get(name[len("self."):], [])]
        # names a loop or comprehension binds to parameters
        over_parameters = self._parameter_loop_targets(micro, micro)
        for method in methods:
            over_parameters |= self._parameter_loop_targets(method.body)

        def is_parameter(owner: cst.BaseExpression) -> bool:
            text = dotted_name(owner) or ""
            return text in over_parameters or text.split(".")[0] in self.facts.modules_with_parameters
        blocks = [micro.body, *(method.body for method in methods)]
        return any(reads_gradients(statement, tree, is_parameter)
                   for block in blocks for statement in self._own_statements(_statements(block), enter_loops=True))

    def _parameter_loop_targets(self, root: cst.CSTNode, loop: LoopNode | None = None) -> set[str]:
        """The names the loops and comprehensions in `root` bind to parameters (`for p in
        model.parameters()`). Inside a micro-step `loop`, not entering nested scopes, a loop over a
        name bound to them (`params = list(model.parameters())`) counts too."""
        tree = self.facts.tree
        found: set[str] = set()
        for node in tree.find(root, cst.For, cst.CompFor, enter_scopes=loop is None):
            iterable = node.iter
            if loop is not None:
                if isinstance(iterable, cst.Name):
                    binding = self.facts.latest_binding(iterable.value, loop, tree.enclosing_function(loop))
                    iterable = binding.value if binding is not None and binding.tuple_index is None else iterable
                if isinstance(iterable, cst.Call) and (call_name(iterable) or "") in ("list", "tuple") and iterable.args:
                    iterable = iterable.args[0].value
            if isinstance(iterable, cst.Call) and (call_name(iterable) or "").rsplit(".", 1)[-1] in (
                    "parameters", "named_parameters"):
                found.update(_target_names(node.target))
        return found

    def _enclosing_function(self, frames: list[_Frame]) -> cst.FunctionDef | None:
        """The function whose own body holds the loop (no loop between them)."""
        for frame in reversed(frames):
            if isinstance(frame.owner, cst.FunctionDef):
                return frame.owner
            if frame.owner is None or isinstance(frame.owner, cst.ClassDef) or _is_loop(frame.owner):
                return None
        return None

    def _step_follows(self, micro: LoopNode, outer: LoopNode) -> bool:
        """A step in the outer loop's body after the micro-step loop (nanoGPT)."""
        seen = False
        for statement in self._ordered(_statements(outer.body)):
            if statement is micro:
                seen = True
                continue
            if seen and matches(type(statement), _SIMPLE) and not self.facts.tree.contains(micro, statement):
                kinds = {e.kind for e in self._statement_events(statement)}
                if EventKind.STEP in kinds:
                    return True
                if EventKind.CLEAR in kinds:
                    return False  # the inner loop's gradients are wiped before any step: probes, not a window
        return False

    def _ordered(self, block):
        """Every statement of a block in source order, entering compound statements."""
        for statement in block:
            yield statement
            if matches(type(statement), _DEFINITIONS):
                continue
            for _, _, child in _blocks_of(statement):
                yield from self._ordered(child)

    def _counters(self, loop: LoopNode, frames: list[_Frame], function: cst.FunctionDef | None) -> dict[str, Counter]:
        counters: dict[str, Counter] = {}
        if isinstance(loop, cst.For):
            iterable = loop.iter
            if isinstance(iterable, cst.Name):  # `iterator = tqdm(range(n))` before the loop
                # The binding that reaches the loop: the last before it in the same scope (a warm-up
                # loop's own `progress = tqdm(enumerate(warm))` earlier does not).
                binding = self.facts.latest_binding(iterable.value, loop, function)
                if (binding is not None and binding.tuple_index is None and isinstance(binding.value, (cst.Call, cst.IfExp))
                        and (binding.scope is function or len(
                            [b for b in self.facts.bindings.get(iterable.value, []) if b.scope is binding.scope]) == 1)):
                    iterable = binding.value
            if isinstance(iterable, cst.IfExp):
                # `tqdm(enumerate(dl)) if rank == 0 else enumerate(dl)`: a counter both branches agree on
                first = self._loop_counter(loop.target, iterable.body, loop, function)
                second = self._loop_counter(loop.target, iterable.orelse, loop, function)
                found = first if first == second else None
            else:
                found = self._loop_counter(loop.target, iterable, loop, function)
            if found is not None:
                counters[found.text] = found
        counters.update(self._manual_counters(loop, frames, function))
        return counters

    def _loop_counter(self, target: cst.BaseExpression, iterable: cst.BaseExpression, loop: LoopNode,
                      function: cst.FunctionDef | None) -> Counter | None:
        """The index `enumerate(...)` or `range(...)` gives the loop's target, through progress wrappers."""
        while (isinstance(iterable, cst.Call) and not (call_name(iterable) or "").endswith("enumerate")
               and _passed_through(iterable) is not None):
            iterable = _passed_through(iterable)  # type: ignore[assignment]
        if isinstance(iterable, cst.Call) and (call_name(iterable) or "").endswith("enumerate"):
            if isinstance(target, (cst.Tuple, cst.List)) and target.elements:
                name = dotted_name(target.elements[0].value)
                if name:
                    start_node = keyword_argument(iterable, "start")
                    positional = positional_args(iterable)
                    if start_node is None and len(positional) > 1:
                        start_node = positional[1]
                    start = 0 if start_node is None else self.facts.evaluate_int(start_node, loop, function)
                    return Counter(name, CounterSource.ENUMERATE, start, per_pass=True)
        elif (range_args := _range_arguments(iterable)) is not None:
            name = dotted_name(target)
            if name:
                start = 0 if len(range_args) == 1 else self.facts.evaluate_int(range_args[0], loop, function)
                return Counter(name, CounterSource.RANGE, start, per_pass=True)
        return None

    def _manual_counters(self, loop: LoopNode, frames: list[_Frame], function: cst.FunctionDef | None) -> dict[str, Counter]:
        """`step += 1` directly in the loop body; its first value depends on the init."""
        found: dict[str, Counter] = {}
        increments: dict[str, list[tuple[int, cst.SimpleStatementLine]]] = {}
        for index, statement in enumerate(_statements(loop.body)):
            for line in _once_lines(statement):
                for small in line.body:
                    name = _increment_target(small)
                    if name:
                        increments.setdefault(name, []).append((index, line))
        for name, positions in increments.items():
            if len(positions) != 1:
                continue
            index, line = positions[0]
            init, per_pass, switched = self._counter_init(name, frames, loop)
            found[name] = Counter(name, CounterSource.MANUAL, init, per_pass, line,
                                  resets_in_pass=self._assigned_in(loop, name), pass_reset_switched=switched)
            self._increment_positions[id(loop), name] = index
        return found

    def _assigned_in(self, loop: LoopNode, name: str) -> bool:
        """`name = 0` anywhere in the loop's body (its own statements and blocks): a value not
        built on its own (`name = name + 1` counts on)."""
        return any(name in _target_names(target.target) and name not in self._names_read(found.value)
                   for found in self.facts.tree.find(loop.body, cst.Assign, enter_scopes=False)
                   for target in found.targets)

    def _counter_init(self, name: str, frames: list[_Frame], inner: LoopNode) -> tuple[int | None, bool, str | None]:
        """The literal `name = 0` before the loop; whether it is re-run per pass; and the
        configuration switch it is re-run under, if only under one (then it restarts each pass
        in that variant only)."""
        pass_loop: cst.CSTNode | None = None  # the loop around this one, whose passes re-run it
        for frame in reversed(frames):
            for statement in reversed(frame.block[: frame.index]):
                if isinstance(statement, cst.SimpleStatementLine):
                    for small in statement.body:
                        value = _assigned_value(small, name)
                        if value is not None:
                            if not isinstance(value, cst.Integer):
                                return None, False, None
                            init = integer_value(value)
                            if pass_loop is None:
                                return init, True, None
                            reset = self._pass_reset(pass_loop, inner, name, init)
                            return init, reset is not None, reset or None
            if isinstance(frame.owner, cst.FunctionDef) and pass_loop is None and self._restarts_per_call(frame.owner, name):
                # A parameter the function counts on and does not hand back: each call, a pass over
                # the data, starts from what the caller passes (RULES.md, facts along calls).
                return self._parameter_int(frame.owner, name), True, None
            if frame.owner is None or isinstance(frame.owner, (cst.FunctionDef, cst.ClassDef)):
                break
            if _is_loop(frame.owner) and pass_loop is None:
                pass_loop = frame.owner
        if name.startswith("self."):
            # `self.n_iter = 0` in `__init__` (RULES.md, facts along calls): the value the first
            # pass starts from; carried from call to call, so never re-run per pass.
            return self.facts.bound_integer(name), False, None
        return None, False, None

    def _restarts_per_call(self, function: cst.FunctionDef, name: str) -> bool:
        """`name` is a plain parameter of `function` that nothing hands back to the caller: no
        `return`/`yield` reads it and no `global`/`nonlocal` shares it."""
        params = function.params
        if name not in {p.name.value for p in (*params.params, *params.kwonly_params, *params.posonly_params)}:
            return False
        tree = self.facts.tree
        for node in tree.find(function.body, cst.Return, cst.Yield, cst.Global, cst.Nonlocal, enter_scopes=False):
            if isinstance(node, (cst.Global, cst.Nonlocal)):
                if any(item.name.value == name for item in node.names):
                    return False
            elif node.value is not None and name in tree.names_read(node.value):
                return False
        return True

    def _pass_reset(self, outer: LoopNode, inner: LoopNode, name: str, init: int) -> str | None:
        """How the loop around the micro-batch loop `inner` sets `name` back to its first value
        `init` (`step = 0` after the pass, perhaps under `if args.do_eval:`): "" when on every
        pass, the switch's text when only under configuration switches, None when it does not,
        or also binds another value, or under a test the loop changes (then which passes restart
        is unknown)."""
        context = GuardContext(counters={}, varying=self._varying(outer), tree=self.facts.tree)
        tree = self.facts.tree
        found: list[str] = []  # one per reset: the switch it is under, or ""
        # Blocks to read, with the switch they sit under (a work list: a recursive closure would
        # be a reference cycle holding the tree until the collector runs).
        pending: list[tuple[Sequence[cst.CSTNode], str]] = [(_statements(outer.body), "")]
        while pending:
            statements, switched = pending.pop()
            for statement in statements:
                if isinstance(statement, cst.SimpleStatementLine):
                    for small in statement.body:
                        value = _assigned_value(small, name)
                        if value is not None:
                            if not (isinstance(value, cst.Integer) and integer_value(value) == init):
                                return None
                            found.append(switched)
                        elif isinstance(small, cst.AugAssign) and name in _target_names(small.target):
                            return None
                elif isinstance(statement, cst.If) and is_switch(statement.test, context):
                    test = switched or code_of(statement.test)
                    pending.append((_statements(statement.body), test))
                    orelse = statement.orelse
                    if orelse is not None:
                        pending.append(([orelse] if isinstance(orelse, cst.If) else _statements(orelse.body),
                                        f"not {test}"))
                elif isinstance(statement, cst.With):
                    pending.append((_statements(statement.body), switched))
                elif any(name in _target_names(target) and not tree.contains(inner, assignment)
                         for assignment in tree.find(statement, cst.Assign, cst.AugAssign, enter_scopes=False)
                         for target in assignment_targets(assignment)):
                    # Bound under a test the pass changes, in a `try` an exception may cut short, or
                    # in another loop: which passes restart it is unknown.
                    return None
        if not found:
            return None
        return "" if "" in found else found[0]

    def _varying(self, loop: LoopNode) -> set[str]:
        names: set[str] = set()
        # name -> the value of each binding in the loop: a plain `name = value` ahead of the first
        # backward (what `_invariant_aliases` reads), None for any other binding
        values: dict[str, list[cst.BaseExpression | None]] = {}

        def bind(targets: Iterable[str], value: cst.BaseExpression | None = None) -> None:
            for name in targets:
                names.add(name)
                values.setdefault(name, []).append(value)

        tree = self.facts.tree
        top = list(_statements(loop.body))
        ahead = top[:next((i for i, s in enumerate(top) if self._may_hold_backward(s)), len(top))]
        if isinstance(loop, cst.For):
            bind(_target_names(loop.target))
        for found in tree.find(loop.body, cst.Assign, cst.AugAssign, cst.AnnAssign, cst.For, cst.WithItem, cst.NamedExpr,
                               enter_scopes=False):
            if isinstance(found, cst.Assign):
                plain = len(found.targets) == 1 and type(found.targets[0].target) is cst.Name and any(
                    tree.contains(statement, found) for statement in ahead)
                for target in found.targets:
                    bind(_target_names(target.target), found.value if plain else None)
                    names.update(_subscripted(target.target))
            elif isinstance(found, (cst.AugAssign, cst.AnnAssign)):
                bind(_target_names(found.target))
                names.update(_subscripted(found.target))
            elif isinstance(found, cst.For):
                bind(_target_names(found.target))
            elif isinstance(found, cst.WithItem) and found.asname is not None:
                bind(_target_names(found.asname.name))
            elif isinstance(found, cst.NamedExpr):
                bind(_target_names(found.target))
        return names - self._invariant_aliases(loop, names, values)

    def _invariant_aliases(self, loop: LoopNode, bound: set[str],
                           values: dict[str, list[cst.BaseExpression | None]]) -> set[str]:
        """Names the loop binds, on every binding, to one same value (`values`, from `_varying`):
        a literal, or an attribute path of a name the loop does not change (`max_grad_norm =
        cfg.max_grad_norm`). Bound again each iteration, they still hold one value for the whole
        loop (RULES.md *guard*: a condition nothing in the loop changes is a configuration switch).
        Only a binding ahead of the iteration's first backward counts: a fix that writes the name
        there (a divisor) reads it bound, on the first iteration too."""
        invariant: set[str] = set()
        changed = True
        while changed:
            changed = False
            for name, made in values.items():
                if name in invariant:
                    continue
                roots = set()
                for value in made:
                    if value is None:
                        break
                    if type(value) in (cst.Integer, cst.Float, cst.SimpleString):
                        continue
                    if type(value) is cst.Subscript and len(value.slice) == 1 and type(value.slice[0].slice) is cst.Index \
                            and type(value.slice[0].slice.value) in (cst.SimpleString, cst.Integer):
                        value = value.value  # `cfg["accum"]`: an entry under a literal key
                    text = dotted_name(value)
                    if text is None:
                        break
                    roots.add(text.split(".")[0])
                else:
                    if all(root not in bound or root in invariant for root in roots) \
                            and name not in roots \
                            and len({code_of(value) for value in made}) == 1 and self._same_outside(loop, name, made):
                        invariant.add(name)
                        changed = True
        return invariant

    def _same_outside(self, loop: LoopNode, name: str, made: list[cst.BaseExpression | None]) -> bool:
        """Wherever else the loop's function binds `name`, it binds the value the loop does (a flag
        set to `False` before the loop and `True` in it changes on the first iteration)."""
        texts = {code_of(value) for value in made if value is not None}
        tree = self.facts.tree
        function = tree.enclosing_function(loop)
        return all(code_of(binding.value) in texts and binding.tuple_index is None
                   for binding in self.facts.bindings.get(name, ())
                   if binding.scope is function and not tree.contains(loop.body, binding.statement))

    def _fresh_optimizers(self, loop: LoopNode, varying: set[str]) -> set[str]:
        fresh: set[str] = set()
        for found in self.facts.tree.find(loop.body, cst.Assign, enter_scopes=False):
            value = found.value
            if not (isinstance(value, cst.Call) and len(found.targets) == 1 and value.args):
                continue
            name = dotted_name(found.targets[0].target)
            if not name or not (name in self.facts.optimizers or looks_like_optimizer(name)):
                continue
            params = value.args[0].value
            roots = {text.split(".")[0] for text in self._names_read(params)}
            if roots and all(root in varying for root in roots):
                fresh.add(name)
        return fresh

    def _constant_switches(self, events: list[Event], function: cst.FunctionDef | None) -> dict[str, bool]:
        """Switches that read a name the module only ever binds to one literal `True` or `False`
        (`PROFILE = False`), and that no parameter of the loop's function shadows: the test's
        value, for the one variant that can run."""
        parameters = {p.name.value for p in function.params.params} if function is not None else set()
        found: dict[str, bool] = {}
        for event in events:
            for condition in event.conditions:
                expression = condition.expression
                if condition.kind is not ConditionKind.SWITCH:
                    continue
                if type(expression) is cst.Attribute:  # `class CFG: unscale = True`, then `if CFG.unscale:`
                    flag = self.facts.class_flag(expression)
                    if flag is not None:
                        found[condition.text] = flag
                    continue
                if not isinstance(expression, cst.Name) or expression.value in parameters:
                    continue
                values = {b.value.value if b.tuple_index is None and isinstance(b.value, cst.Name) else None
                          for b in self.facts.bindings.get(expression.value, ())}
                if len(values) == 1 and values <= {"True", "False"}:
                    found[condition.text] = values == {"True"}
        return found

    def _aliases(self, loop: LoopNode) -> dict[str, cst.BaseExpression]:
        """`should_step = (i + 1) % k == 0`: a name the loop binds once, on every iteration (not
        under an `if`, nor in an inner loop), reads as its expression. A name bound under a
        test (`if not done: ...; done = True`) holds what earlier iterations left in it."""
        counts: dict[str, int] = {}
        values: dict[str, cst.BaseExpression] = {}
        unconditional = {id(s) for s in _unconditional_statements(loop.body)}
        for found in self.facts.tree.find(loop.body, cst.Assign, cst.AugAssign, enter_scopes=False):
            for target in assignment_targets(found):
                for name in _target_names(target):
                    counts[name] = counts.get(name, 0) + 1
                    if isinstance(found, cst.Assign) and isinstance(target, cst.Name) and id(found) in unconditional:
                        values[name] = found.value
        return {name: value for name, value in values.items() if counts.get(name) == 1}

    def _visits(self, loop: LoopNode, window_loop: LoopNode | None):
        yield from self._walk_visits(_VisitWalk(window_loop), _statements(loop.body), [], False, False, (),
                                     isinstance(loop.body, cst.IndentedBlock))

    def _walk_visits(self, walk: _VisitWalk, block, conditions, inner: bool, in_window: bool,
                     contexts: tuple[str, ...], editable_block: bool):
        deeper = self._walk_visits
        pending = list(conditions)
        for statement in block:
            if matches(type(statement), _DEFINITIONS):
                continue
            if matches(type(statement), _SIMPLE):
                walk.visited += 1
                yield _Visit(statement, pending, next(walk.order), inner, in_window,
                             editable_block and isinstance(statement, cst.SimpleStatementLine), contexts, block)
                continue
            if isinstance(statement, cst.If):
                yield from deeper(walk, _statements(statement.body), pending + [_RawCondition(statement.test, True)],
                                  inner, in_window, contexts, isinstance(statement.body, cst.IndentedBlock))
                if statement.orelse is not None:
                    else_conditions = pending + [_RawCondition(statement.test, False)]
                    if isinstance(statement.orelse, cst.If):
                        yield from deeper(walk, (statement.orelse,), else_conditions, inner, in_window, contexts, True)
                    else:
                        yield from deeper(walk, _statements(statement.orelse.body), else_conditions, inner, in_window,
                                          contexts, isinstance(statement.orelse.body, cst.IndentedBlock))
                seen_through = walk.visited
                body_ends = _terminates(statement.body)
                else_ends = (statement.orelse is not None and not isinstance(statement.orelse, cst.If)
                             and _terminates(statement.orelse.body))
                if body_ends and statement.orelse is None:
                    pending = pending + [_RawCondition(statement.test, False, seen_through,
                                                       _terminator(statement.body) is cst.Break)]
                elif else_ends and not body_ends:
                    pending = pending + [_RawCondition(statement.test, True, seen_through,
                                                       _terminator(statement.orelse.body) is cst.Break)]
                continue
            if isinstance(statement, cst.With):
                items = tuple(code_of(item.item) for item in statement.items)
                yield from deeper(walk, _statements(statement.body), pending, inner, in_window, contexts + items,
                                  isinstance(statement.body, cst.IndentedBlock))
                continue
            if _is_loop(statement):
                is_window = statement is walk.window_loop
                nested_training = not is_window and self._directly_contains_backward(statement)
                yield from deeper(walk, _statements(statement.body), pending, inner or nested_training, in_window or is_window,
                                  contexts, isinstance(statement.body, cst.IndentedBlock))
                continue
            if isinstance(statement, (cst.Try, cst.TryStar)):
                yield from deeper(walk, _statements(statement.body), pending, inner, in_window, contexts, True)
                fallback = self._may_hold_backward(statement.body)
                for handler in statement.handlers:
                    yield from deeper(walk, _statements(handler.body), pending + [_RawCondition(None, True, fallback=fallback)],
                                      inner, in_window,
                                      contexts, True)
                for extra in (statement.orelse, statement.finalbody):
                    if extra is not None:
                        yield from deeper(walk, _statements(extra.body), pending, inner, in_window, contexts, True)
                continue
            for _, _, child in _blocks_of(statement):
                yield from deeper(walk, child, pending + [_RawCondition(None, True)], inner, in_window, contexts, True)

    def _cleared_module(self, loop: LoopNode, node: cst.CSTNode) -> str | None:
        """`M` for a `p.grad = None` (or `p.grad.zero_()`) in `for p in M.parameters():` inside the
        loop: the module whose every parameter it clears."""
        tree = self.facts.tree
        around = [f for f in tree.find(loop.body, cst.For) if tree.contains(f, node)]
        if not around:
            return None
        inner = around[-1]  # preorder: the innermost holds the node last
        iterable = inner.iter
        if not (isinstance(iterable, cst.Call) and not iterable.args and isinstance(iterable.func, cst.Attribute)
                and iterable.func.attr.value == "parameters" and isinstance(inner.target, cst.Name)):
            return None
        target = node.targets[0].target if isinstance(node, cst.Assign) else getattr(node.func, "value", None)
        while isinstance(target, cst.Attribute):
            target = target.value
        if not (isinstance(target, cst.Name) and target.value == inner.target.value):
            return None
        return dotted_name(iterable.func.value)

    def _events(self, visits: list[_Visit], context: GuardContext, loop: LoopNode,
                function: cst.FunctionDef | None) -> list[Event]:
        events: list[Event] = []
        statements = [v.statement for v in visits]
        # Statements every iteration runs that reaches them (none of their own tests, at most the
        # early exits ahead of them): a plain assignment there hides what the name held before.
        dominating = frozenset(id(v.statement) for v in visits if not v.in_inner_loop and all(
            c.early_exit_after is not None for c in v.raw_conditions))
        loop_variables = {name for inner in self.facts.tree.find(loop.body, cst.For, enter_scopes=False)
                          for name in _target_names(inner.target)}
        own_variables = set(_target_names(loop.target)) if isinstance(loop, cst.For) else set()
        data = frozenset(own_variables)  # what the loop binds to its items
        found = [(visit, self._statement_events(visit.statement)) for visit in visits]
        # An `if <resuming>: continue` ahead of every event only removes whole
        # iterations: what remains keeps its structure (RULES.md, *guard*).
        first_event = next((index for index, (_, raw) in enumerate(found) if raw), len(found))
        order = 0
        for visit, raw_events in found:
            if not raw_events:
                continue
            conditions = tuple(self._conditions(visit, context, loop, first_event, function))
            for raw in raw_events:
                flow = None
                if raw.kind is EventKind.BACKWARD and isinstance(raw.loss, cst.Name):
                    scaled = self._scaled_by_context(loop, visit.statement, raw.loss.value)
                    if scaled is not None:
                        raw = replace(raw, loss=scaled)
                if raw.kind is EventKind.BACKWARD and raw.loss is not None:
                    # ... and so do the statements before it in its own block
                    local = frozenset(id(v.statement) for v in visits if v.block is visit.block)
                    flow = loss_flow(raw.loss, visit.statement, statements, self.facts, function,
                                     self._window_caches(loop), dominating | local, data)
                events.append(Event(
                    kind=raw.kind, statement=visit.statement, node=raw.node, order=order, conditions=conditions,
                    receiver=raw.receiver, framework=raw.framework, loss=raw.loss, loss_flow=flow,
                    via_scaler=raw.via_scaler, retain_graph=raw.retain_graph, in_inner_loop=visit.in_inner_loop,
                    in_window_loop=visit.in_window_loop, editable=visit.editable, contexts=visit.contexts,
                    position=visit.order, by_helper=raw.by_helper,
                    cleared_module=self._cleared_module(loop, raw.node) if raw.receiver == "params" else None,
                    arm=self._arm(visit.statement, raw.node),
                    fallback=any(c.fallback for c in visit.raw_conditions),
                    iterated=raw.receiver in loop_variables or bool(
                        raw.kind is EventKind.STEP and own_variables and isinstance(raw.node, cst.Call)
                        and isinstance(raw.node.func, cst.Attribute)
                        and self._names_read(raw.node.func.value) & own_variables),
                ))
                order += 1
        return events

    def _arm(self, statement: cst.CSTNode, node: cst.CSTNode) -> tuple[int, bool] | None:
        """The innermost arm of a conditional expression of `statement` holding `node`."""
        tree = self.facts.tree
        found = None
        for expression in tree.find(statement, cst.IfExp, enter_scopes=False):
            if tree.contains(expression.body, node):
                found = (id(expression), True)
            elif tree.contains(expression.orelse, node):
                found = (id(expression), False)
        return found

    def _top_level_index(self, node: cst.CSTNode) -> int | None:
        """Index of the top-level statement of the current loop holding `node` (the last one,
        should a node sit in several)."""
        for index in range(len(self._top_level) - 1, -1, -1):
            if self.facts.tree.contains(self._top_level[index], node):
                return index
        return None

    def _conditions(self, visit: _Visit, context: GuardContext, loop: LoopNode, first_event: int,
                    function: cst.FunctionDef | None = None) -> list[Condition]:
        conditions: list[Condition] = []
        statement_index = self._top_level_index(visit.statement)
        for raw in visit.raw_conditions:
            if raw.expression is None:
                conditions.append(Condition(None, "<opaque>", True, ConditionKind.OPAQUE))
                continue
            test_index = self._top_level_index(raw.expression)
            if test_index is None:
                test_index = statement_index
            classified = classify(raw.expression, raw.polarity, self._context_at(context, loop, test_index))
            if self._resume_skip(raw, context, first_event) or self._early_break(raw, first_event):
                classified = [c for c in classified if c.kind is not ConditionKind.OPAQUE]
            conditions.extend(self._literal_count(c, loop, function) for c in classified)
        return conditions

    def _literal_count(self, condition: Condition, loop: LoopNode, function: cst.FunctionDef | None) -> Condition:
        """A boundary whose count is a name the module shows to be one literal (a module
        constant, a keyword default every call site leaves): that literal, as `k`."""
        boundary = condition.boundary
        if boundary is None or boundary.k_literal is not None or not isinstance(boundary.k, (cst.Name, cst.Attribute, cst.Subscript)):
            return condition
        value = self.facts.evaluate_int(boundary.k, loop, function)
        if value is None and function is not None and isinstance(boundary.k, cst.Name):
            value = self._parameter_literal(function, boundary.k.value)
        if value is None:
            return condition
        return replace(condition, boundary=replace(boundary, k_literal=value))

    def _resume_skip(self, raw: _RawCondition, context: GuardContext, first_event: int) -> bool:
        """An `if <resuming>: continue` ahead of every event that does not read the counter:
        it only removes whole iterations, and what remains keeps its structure (RULES.md, *guard*)."""
        return (raw.expression is not None and raw.early_exit_after is not None
                and raw.early_exit_after <= first_event and not self._reads_counter(raw.expression, context))

    def _pass_indices(self, loop: LoopNode, function: cst.FunctionDef | None) -> list[str]:
        """The indices of the loops around `loop` in its function (`epoch` of `for epoch in
        range(epochs):`, of `enumerate(...)`): each holds one integer for a whole pass of `loop`."""
        found = []
        for frame in reversed(self.frames.get(id(loop), [])):
            owner = frame.owner
            if owner is None or isinstance(owner, (cst.FunctionDef, cst.ClassDef)):
                break
            if isinstance(owner, cst.For):
                counter = self._loop_counter(owner.target, owner.iter, owner, function)
                if counter is not None:
                    found.append(counter.text)
        return found

    @staticmethod
    def _early_break(raw: _RawCondition, first_event: int) -> bool:
        """An `if <limit>: break` ahead of every event (`if it > args.num_train_iter: break`): it
        only ends the pass early, and every iteration that runs reaches the events (RULES.md,
        *guard*; the evaluated program reads it the same way, gacclint/loops/evaluate.py)."""
        return raw.breaks and raw.early_exit_after is not None and raw.early_exit_after <= first_event

    def _below_bound(self, expression: cst.BaseExpression, context: GuardContext) -> bool:
        """`step < resume_step`, or an `and` with such a term: true only while the loop's own
        counter is below some bound, so a `continue` on it skips part of a prefix of the pass."""
        while type(expression) is cst.BooleanOperation and type(expression.operator) is cst.And:
            if self._below_bound(expression.right, context):
                return True
            expression = expression.left
        if type(expression) is not cst.Comparison or len(expression.comparisons) != 1:
            return False
        comparison = expression.comparisons[0]
        if type(comparison.operator) in (cst.LessThan, cst.LessThanEqual):
            counter = expression.left
        elif type(comparison.operator) in (cst.GreaterThan, cst.GreaterThanEqual):
            counter = comparison.comparator
        else:
            return False
        found = context.counters.get(dotted_name(counter) or "")
        return found is not None and found.source is not CounterSource.MANUAL

    def _reads_counter(self, expression: cst.BaseExpression, context: GuardContext) -> bool:
        """A test on the micro-batch counter (`if it // k >= steps: continue`) shapes the
        windows (it may skip the tail); a resume skip on its own counter does not."""
        read = self.facts.tree.names_read(expression)
        for name in list(read):
            aliased = context.aliases.get(name or "")
            if aliased is not None:
                read |= self.facts.tree.names_read(aliased)
        return any(name in context.counters for name in read if name)

    def _context_at(self, context: GuardContext, loop: LoopNode, index: int | None) -> GuardContext:
        """Manual counters read differently before and after their increment."""
        counters = {name: self._counter_at(counter, loop, index) for name, counter in context.counters.items()}
        return GuardContext(counters=counters, varying=context.varying, tree=context.tree, aliases=context.aliases)

    def _counter_at(self, counter: Counter, loop: LoopNode, index: int | None) -> Counter:
        """`counter` as read by the loop's top-level statement `index`: a manual counter's first
        value is one more below its increment; unknown where the place is."""
        if counter.source is not CounterSource.MANUAL:
            return counter
        position = self._increment_positions.get((id(loop), counter.text))
        if position is None or index is None or counter.first_value is None:
            return replace(counter, first_value=None)
        first = counter.first_value + (1 if position < index else 0)
        return replace(counter, first_value=first)

    def _iterable(self, loop: LoopNode, function: cst.FunctionDef | None) -> IterableInfo:
        info = self._read_iterable(loop, function)
        if info.kind is IterableKind.LOADER and (
                self._through_iterator(loop, function) or self._measured_otherwise(loop, function, info.len_text)):
            # `for b in iter(loader)`: one pass over the loader, unless something pulled from the
            # iterator first (a resumed run skipping batches): its length is the loader's at most.
            # `tqdm(loader, total=n)`, an instance of the module's own iterator class without
            # `__len__`: `len()` of it is not a count of micro-batches, or raises.
            return replace(info, kind=IterableKind.SIZED)
        return info

    def _measured_otherwise(self, loop: LoopNode, function: cst.FunctionDef | None, length: str | None) -> bool:
        """What the fix would measure (`length`, `len(name)`) is a progress bar given its own
        `total=` (not the length of what it wraps), or an instance of a class of the module with no
        `__len__`, where it is bound or at every call site of the loop's function."""
        if length is None or not length.startswith("len(") or not length.endswith(")"):
            return False
        name = length[len("len("):-1]
        binding = self.facts.latest_binding(name, loop, function)
        if binding is not None and binding.tuple_index is None:
            value = binding.value
            if self.facts.unsized_instance(value):
                return True
            if type(value) is cst.Call and (total := keyword_argument(value, "total")) is not None:
                if type(total) is cst.Call and call_name(total) == "int" and len(total.args) == 1:
                    total = total.args[0].value  # `total=int(len(loader))`
                wrapped = positional_args(value)[0] if positional_args(value) else None
                while type(wrapped) is cst.Call and positional_args(wrapped) and (
                        (call_name(wrapped) or "").rsplit(".", 1)[-1] in (*_ITERABLE_WRAPPERS, "iter")):
                    wrapped = positional_args(wrapped)[0]  # `tqdm(enumerate(loader), total=len(loader))`
                return wrapped is None or bare(code_of(total)) != f"len({bare(code_of(wrapped))})"
            return False
        if function is not None and "." not in name:
            arguments = self._call_site_arguments(function).get(name) or []
            return any(argument is not None and (
                self.facts.unsized_instance(argument) or self._bound_unsized(argument, statement, caller))
                for argument, caller, statement in arguments)
        return False

    def _bound_unsized(self, argument: cst.BaseExpression, statement: cst.CSTNode,
                       caller: cst.FunctionDef | None) -> bool:
        name = dotted_name(argument)
        binding = self.facts.latest_binding(name, statement, caller) if name is not None else None
        return binding is not None and binding.tuple_index is None and self.facts.unsized_instance(binding.value)

    def _through_iterator(self, loop: LoopNode, function: cst.FunctionDef | None) -> bool:
        node = loop.iter  # type: ignore[union-attr]
        while type(node) is cst.Call and _iterator_of(node) is None and positional_args(node) and (
                (call_name(node) or "").rsplit(".", 1)[-1] == "enumerate" or _passed_through(node) is not None):
            node = positional_args(node)[0]
        if _iterator_of(node) is not None:
            return True
        text = dotted_name(node)
        binding = self.facts.latest_binding(text, loop, function) if text is not None else None
        return binding is not None and binding.tuple_index is None and _iterator_of(binding.value) is not None

    def _read_iterable(self, loop: LoopNode, function: cst.FunctionDef | None) -> IterableInfo:
        if isinstance(loop, cst.While):
            return IterableInfo(IterableKind.STREAM, None, None)
        node = loop.iter
        while isinstance(node, cst.NamedExpr) or isinstance(node, cst.Call) and (
                (call_name(node) or "").rsplit(".", 1)[-1] == "enumerate" or _passed_through(node) is not None
                or _iterator_of(node) is not None):
            if isinstance(node, cst.NamedExpr):  # `enumerate(pbar := tqdm(loader))`
                node = node.value
                continue
            positional = positional_args(node)  # type: ignore[arg-type]
            if not positional:
                break
            node = positional[0]
        literal = self.facts.evaluate_length(node, loop, function)
        if literal is None and isinstance(node, cst.Name) and function is not None:
            literal = self._parameter_length(function, node.value)
        if isinstance(node, (cst.List, cst.Tuple, cst.ListComp)):
            return IterableInfo(IterableKind.LIST, None, literal)
        if isinstance(node, cst.Call):
            name = (call_name(node) or "").rsplit(".", 1)[-1]
            if name in {"range", "trange"} and self._pulls_whole_run(loop):
                return IterableInfo(IterableKind.STREAM, None, None)
            if name in {"range", "trange"}:
                args = _range_arguments(node) if name == "range" else positional_args(node)
                length = code_of(args[0]) if args and len(args) == 1 else _offset_length(args)
                return IterableInfo(IterableKind.RANGE, length, literal,
                                    _product_factors(args[0]) if length is not None else frozenset())
            if self._makes_stream(node) or "infinite" in name.lower():
                return IterableInfo(IterableKind.STREAM, None, None)
            if name == "DataLoader":
                return IterableInfo(self._loader_kind(node, loop, function), None, literal)
            return IterableInfo(IterableKind.UNKNOWN, None, literal)
        text = dotted_name(node)
        if text is None:
            return IterableInfo(IterableKind.UNKNOWN, None, None)
        binding = self.facts.latest_binding(text, loop, function)
        if binding is None and self._streams_in_another_method(text):
            return IterableInfo(IterableKind.STREAM, None, None)
        # epoch_iterator = tqdm(train_dataloader): the wrapper has the loader's length,
        # and the wrapped name says what it is.
        wrapped = text
        unsized_wrapper = False
        while (binding is not None and binding.tuple_index is None and isinstance(binding.value, cst.Call)
               and ((call_name(binding.value) or "").rsplit(".", 1)[-1] in _ITERABLE_WRAPPERS
                    or _iterator_of(binding.value) is not None)):
            if _iterator_of(binding.value) is not None or (call_name(binding.value) or "").rsplit(".", 1)[-1] == "enumerate":
                # `it = iter(loader)`, `batches = enumerate(loader)`: the loader's pass, and `len(it)` would raise
                unsized_wrapper = True
            inner = positional_args(binding.value)
            # `pbar = tqdm(enumerate(loader))`: through every wrapper to the loader (and `len(pbar)`
            # would raise: an enumerate has no length)
            while inner and isinstance(inner[0], cst.Call) and \
                    (call_name(inner[0]) or "").rsplit(".", 1)[-1] in _ITERABLE_WRAPPERS:
                if (call_name(inner[0]) or "").rsplit(".", 1)[-1] == "enumerate":
                    unsized_wrapper = True
                inner = positional_args(inner[0])
            inner_text = dotted_name(inner[0]) if inner else None
            if inner_text is None:
                break
            wrapped = inner_text
            binding = self.facts.latest_binding(inner_text, binding.statement, binding.scope)
        if unsized_wrapper:
            text = wrapped  # its length is the loader's, asked of the loader
        made = self._returned(binding) if binding is not None else None
        if made is not None:  # `train_dl, eval_dl = create_dataloaders()`: what that function returns there
            value, at, scope = made
            if isinstance(value, cst.Call) and _streams(value, self.facts.iterable_datasets):
                return IterableInfo(IterableKind.STREAM, None, None)
            if isinstance(value, cst.Call) and (call_name(value) or "").rsplit(".", 1)[-1] == "DataLoader" \
                    and self._loader_kind(value, at, scope) is IterableKind.STREAM:
                return IterableInfo(IterableKind.STREAM, None, None)
        if binding is not None and binding.tuple_index is None and isinstance(binding.value, cst.Call):
            called = (call_name(binding.value) or "").rsplit(".", 1)[-1]
            if self._makes_stream(binding.value) or "infinite" in called.lower():
                return IterableInfo(IterableKind.STREAM, None, None)
            if called == "DataLoader":
                return IterableInfo(self._loader_kind(binding.value, loop, function), f"len({text})", literal)
            if called in {"range"}:
                return IterableInfo(IterableKind.RANGE, f"len({text})", literal)
        if binding is not None and isinstance(binding.value, (cst.GeneratorExp,)):
            return IterableInfo(IterableKind.STREAM, None, None)
        if binding is not None and binding.tuple_index is None and not unsized_wrapper and text == wrapped and (
                type(binding.value) is cst.ListComp
                or type(binding.value) is cst.Call and call_name(binding.value) == "list"):
            # `train_batches = [b for b in loader]`, `list(range(n))`: a list made whole, whose `len` is
            # certain (not `samples = []` filled later, which may still grow)
            return IterableInfo(IterableKind.LIST, f"len({text})", literal)
        if binding is None and self._handed_generators(text, function):
            return IterableInfo(IterableKind.STREAM, None, None)
        last = wrapped.rsplit(".", 1)[-1].lower()
        if "infinite" in last or "stream" in last:
            return IterableInfo(IterableKind.STREAM, None, None)
        if last.endswith("loader") and not self._maybe_iterable_style(text):
            return IterableInfo(IterableKind.LOADER, f"len({text})", literal)
        return IterableInfo(IterableKind.SIZED, f"len({text})", literal)

    def _streams_in_another_method(self, text: str) -> bool:
        """`self.loader`, bound in another method of the class only (`__init__`), to a stream in one
        of them (`DataLoader(TokenStream(rows))`, a generator): it may have no length."""
        if not text.startswith("self."):
            return False
        for binding in self.facts.bindings.get(text, ()):
            value = binding.value
            if binding.tuple_index is not None or not isinstance(value, cst.Call):
                continue
            if self._makes_stream(value) or (call_name(value) or "").rsplit(".", 1)[-1] == "DataLoader" \
                    and self._loader_kind(value, binding.statement, binding.scope) is IterableKind.STREAM:
                return True
        return False

    def _makes_stream(self, call: cst.Call) -> bool:
        """A call making an iterable with no length: a stream call (`itertools.cycle`, `count`), a
        generator function of the module, or an iterable-style dataset (`_streams`)."""
        called = (call_name(call) or "").rsplit(".", 1)[-1]
        return called in _STREAM_CALLS or self.facts.is_generator_function(called) \
            or _streams(call, self.facts.iterable_datasets)

    def _maybe_iterable_style(self, text: str) -> bool:
        """The module asks whether the loader, or its dataset, is iterable-style
        (`isinstance(loader.dataset, IterableDataset)`): then it may have no `len`."""
        for call in self.facts.calls.get("isinstance", ()):
            args = positional_args(call)
            if len(args) != 2 or dotted_name(args[0]) not in (text, f"{text}.dataset"):
                continue
            kinds = [e.value for e in args[1].elements] if isinstance(args[1], cst.Tuple) else [args[1]]
            if any((dotted_name(kind) or "").rpartition(".")[2] == "IterableDataset" for kind in kinds):
                return True
        return False

    def _scaled_by_context(self, loop: LoopNode, statement: cst.CSTNode, name: str) -> cst.BaseExpression | None:
        """`with amp.scale_loss(loss, optimizer) as scaled_loss: scaled_loss.backward()` (apex):
        the loss the backward propagates is `loss`, multiplied by the loss scale only."""
        tree = self.facts.tree
        for node in tree.find(loop.body, cst.With, enter_scopes=False):
            if not tree.contains(node.body, statement):
                continue
            for item in node.items:
                call = item.item
                if item.asname is not None and dotted_name(item.asname.name) == name and isinstance(call, cst.Call) \
                        and (call_name(call) or "").rsplit(".", 1)[-1] == "scale_loss" and positional_args(call):
                    return positional_args(call)[0]
        return None

    def _optimizer_windows(self, loop: TrainingLoop) -> dict[int, list[LoopVariant]]:
        """RULES.md, *ownership*: in a variant whose optimizers step at different times, one
        variant per optimizer, with its steps, the backwards whose graphs reach the modules it
        owns, and the clears that reach them. Nothing where ownership, a backward's graph or a
        clear cannot be read."""
        graph = loop.graph
        found: dict[int, list[LoopVariant]] = {}
        if graph is None or loop.shape is not Shape.PER_ITERATION:
            return found
        calls: dict[int, cst.Call] | None = None
        for variant in loop.variants:
            steps = variant.steps
            # Steps at different times, or on one boundary whose backwards do not all run on every
            # micro-batch (a discriminator accumulating while the generator updates in the step's block).
            if variant.managed or not steps or (variant_step_boundary(variant) is not None
                                                and accumulation_boundary(variant) is not None) or any(
                    s.event.framework is not None or s.event.in_inner_loop or s.event.iterated or not s.event.receiver
                    for s in steps):
                continue
            receivers = sorted({s.event.receiver for s in steps})  # type: ignore[type-var]
            owned = {r: self.facts.optimizer_models(r) for r in receivers}
            if len(receivers) < 2:
                continue
            if any(o is None for o in owned.values()):
                if calls is None:
                    calls = {id(c): c for c in self.facts.tree.find(loop.node.body, cst.Call, enter_scopes=False)}
                rest = self._without_closed_updates(graph, variant, receivers, calls, loop.function)
                if rest is not None:
                    found[id(variant)] = [rest]
                continue
            if any(_within(a, b) for r, q in itertools.combinations(receivers, 2) for a in owned[r] for b in owned[q]) \
                    or any(_within(b, a) for r, q in itertools.combinations(receivers, 2) for a in owned[r] for b in owned[q]):
                continue  # optimizers sharing modules: which parameters each step applies is not separable
            if calls is None:
                calls = {id(c): c for c in self.facts.tree.find(loop.node.body, cst.Call, enter_scopes=False)}
            reached: dict[int, set[str]] = {}  # backward -> the modules its graph runs
            for backward in variant.backwards:
                event = backward.event
                if event.loss is None:
                    break
                forwards = graph.forwards(event.loss, event.position)
                if UNKNOWN_GRAPH in forwards or any(f not in calls for f in forwards):
                    break
                reached[id(event)] = {self._forwarded_module(_module_called(call_name(calls[f]) or ""), loop.function)
                                      for f in forwards}
            else:
                windows = []
                for receiver in receivers:
                    modules = owned[receiver]
                    assert modules is not None

                    def reaches(names: set[str] | frozenset[str], modules: frozenset[str] = modules) -> bool:
                        return any(_within(n, m) or _within(m, n) for n in names for m in modules)

                    clears = variant.clears
                    if any(c.event.receiver in (None, "params") or c.event.in_inner_loop for c in clears):
                        break  # what a clear reaches is not read
                    own_steps = [s for s in steps if s.event.receiver == receiver]
                    own_clears = [c for c in clears if c.event.receiver == receiver or (
                        c.event.receiver not in owned and reaches({c.event.receiver}))]  # type: ignore[arg-type]
                    chosen = {id(s) for s in own_steps} | {id(c) for c in own_clears}
                    chosen |= {id(b) for b in variant.backwards if reaches(reached[id(b.event)])
                               and not _wiped_before_its_next_step(b, own_steps, own_clears)}
                    if any(id(b) in chosen for b in variant.backwards):
                        windows.append(LoopVariant(variant.switches, [e for e in variant.events if id(e) in chosen],
                                                   variant.frameworks))
                else:
                    if windows:
                        found[id(variant)] = windows
        return found

    def _without_closed_updates(self, graph: GraphFlow, variant: LoopVariant, receivers: list[str],
                                calls: dict[int, cst.Call], function: cst.FunctionDef | None) -> LoopVariant | None:
        """RULES.md, *ownership*, where the parameters the optimizers own are not visible: an
        optimizer updated in a block of its own (under one test: its clear, then backwards, then
        its step; a critic every `n_critic` micro-batches) carries nothing from one update to the
        next. If that block's backwards run other modules than the loop's other backwards, the
        other optimizer's window is the variant without the block. None where that is not so."""
        closed: set[int] = set()
        for receiver in receivers:
            steps = [s for s in variant.steps if s.event.receiver == receiver]
            guard = steps[0].guard
            if guard.kind is not GuardKind.BOUNDARY or any(s.guard != guard for s in steps) or any(
                    s.guard == guard for s in variant.steps if s.event.receiver != receiver):
                continue
            first_step = min(s.event.order for s in steps)
            clears = [c for c in variant.clears if c.event.receiver == receiver and c.guard == guard
                      and c.event.order < first_step and not c.event.in_inner_loop]
            if not clears:
                continue
            opened = min(c.event.order for c in clears)
            backwards = [b for b in variant.backwards if b.guard == guard and opened < b.event.order < first_step]
            if not backwards or any(c.event.receiver == receiver and c.guard != guard for c in variant.clears):
                continue
            closed |= {id(e) for e in (*steps, *clears, *backwards)}
        rest = [e for e in variant.events if id(e) not in closed]
        if not closed or len({e.event.receiver for e in rest if e.kind is EventKind.STEP}) != 1:
            return None
        modules: dict[bool, set[str]] = {True: set(), False: set()}
        for backward in variant.backwards:
            loss = backward.event.loss
            if loss is None:
                return None
            forwards = graph.forwards(loss, backward.event.position)
            if not forwards or UNKNOWN_GRAPH in forwards or any(f not in calls for f in forwards):
                return None
            modules[id(backward) in closed] |= {self._forwarded_module(_module_called(call_name(calls[f]) or ""), function)
                                                for f in forwards}
        if any(_within(a, b) or _within(b, a) for a in modules[True] for b in modules[False]):
            return None  # the block's backwards reach the other optimizer's modules too
        return LoopVariant(variant.switches, rest, variant.frameworks)

    def _forwarded_module(self, module: str, function: cst.FunctionDef | None) -> str:
        """The module whose parameters a forward through `module` runs: `base` for `net(x)` where
        the function binds `net` only to `base`, `base.module` or a wrapper of it (`net =
        DistributedDataParallel(base)` under a switch); `module` itself otherwise."""
        root, _, rest = module.partition(".")
        bound = [b for b in self.facts.bindings.get(root, ()) if b.scope is function]
        bases: set[str | None] = set()
        for binding in bound:
            value = binding.value
            if binding.tuple_index is not None:
                return module
            if type(value) is cst.Call and wrapper_name(value) in _SYNCING_WRAPPERS and positional_args(value):
                value = positional_args(value)[0]
            text = dotted_name(value)
            bases.add(text[:-len(".module")] if text and text.endswith(".module") else text)
        if len(bases) != 1 or None in bases:
            return module
        base = bases.pop()
        return f"{base}.{rest}" if rest else base  # type: ignore[str-bytes-safe]

    def _pulls_whole_run(self, loop: LoopNode) -> bool:
        """`for step in range(max_steps): batch = next(data)` in a script's own code, in no other
        loop: a count of steps pulling from a stream, the whole run rather than a pass over the
        data (RULES.md GA202: only the run's last micro-batches go unstepped). In a function it may
        be one pass of many (`_train_inner_loop(epoch, iters_per_epoch)` called per epoch)."""
        tree = self.facts.tree
        pulls = [call for call in tree.find(loop.body, cst.Call, enter_scopes=False) if call_name(call) == "next"]
        if not pulls:
            return False
        for call in pulls:
            source = positional_args(call)[0] if positional_args(call) else None
            if isinstance(source, cst.Name) and any(
                    tree.contains(loop.body, binding.statement, enter_scopes=False)
                    for binding in self.facts.bindings.get(source.value, ())):
                # `if step % len(loader) == 0: it = iter(loader)`: the passes over the data are
                # inside the loop, and its counter runs across them
                return True
        return not any(isinstance(frame.owner, (cst.FunctionDef, cst.ClassDef)) or _is_loop(frame.owner)
                       for frame in self.frames.get(id(loop), []) if frame.owner is not None)

    def _handed_generators(self, name: str, function: cst.FunctionDef | None) -> bool:
        """RULES.md, *facts along calls*: `name` is a parameter of the loop's function, and every
        call of that function in the module hands it a generator (`run_epoch(data_gen(20), ...)`,
        `run_epoch((b for b in loader), ...)`): the loop iterates a stream."""
        if function is None or "." in name:
            return False
        positional = [p.name.value for p in (*function.params.posonly_params, *function.params.params)]
        if name not in positional and name not in {p.name.value for p in function.params.kwonly_params}:
            return False
        shift = 1 if positional[:1] == ["self"] else 0  # a method: its calls through `self.`
        calls = self.facts.calls.get(f"self.{function.name.value}" if shift else function.name.value, ())
        if not calls:
            return False
        for call in calls:
            handed = handed_argument(call, function, name, shift)
            if not (isinstance(handed, cst.GeneratorExp) or isinstance(handed, cst.Call) and (
                    self.facts.is_generator_function((call_name(handed) or "").rsplit(".", 1)[-1])
                    or (call_name(handed) or "").rsplit(".", 1)[-1] in _STREAM_CALLS)):
                return False
        return True

    def _returned(self, binding: Binding) -> tuple[cst.BaseExpression, cst.CSTNode, cst.FunctionDef] | None:
        """RULES.md, *facts along calls*: for `a, b = make()` with `make` a function of this module
        that returns once, the value it returns in `binding`'s place (through a name bound in
        it), with the statement it is read at and the function."""
        value = binding.value
        if not isinstance(value, cst.Call):
            return None
        functions = self.facts.functions.get(own_function_name(value), [])
        if len(functions) != 1:
            return None
        function = functions[0]
        returns = [r for r in self.facts.tree.find(function.body, cst.Return, enter_scopes=False) if r.value is not None]
        if len(returns) != 1:
            return None
        returned = returns[0].value
        if binding.tuple_index is not None:
            if not isinstance(returned, (cst.Tuple, cst.List)) or binding.tuple_index >= len(returned.elements):
                return None
            returned = returned.elements[binding.tuple_index].value
        if isinstance(returned, cst.Name):
            inner = self.facts.latest_binding(returned.value, returns[0], function)
            if inner is None or inner.tuple_index is not None or inner.scope is not function:
                return None
            return inner.value, inner.statement, function
        return returned, returns[0], function

    def _loader_kind(self, call: cst.Call, loop: LoopNode, function: cst.FunctionDef | None) -> IterableKind:
        positional = positional_args(call)
        dataset = positional[0] if positional else keyword_argument(call, "dataset")
        if dataset is not None:
            value: cst.BaseExpression | None = dataset
            if isinstance(dataset, cst.Name):
                binding = self.facts.latest_binding(dataset.value, loop, function)
                value = binding.value if binding is not None else None
            if isinstance(value, cst.Call) and _streams(value, self.facts.iterable_datasets):
                return IterableKind.STREAM
        return IterableKind.LOADER

    def _flush_after(self, loop: LoopNode, frames: list[_Frame], across: bool = False) -> bool:
        """A step after the loop, before the enclosing loop or function ends, and
        before the next training loop starts (its steps are its own). `across`: also
        after the enclosing (epoch) loops, where a flush handles the whole run's remainder."""
        for frame in reversed(frames):
            for statement in frame.block[frame.index + 1:]:
                if self._may_hold_backward(statement) and any(
                        e.kind is EventKind.BACKWARD for inner in self._ordered((statement,))
                        if matches(type(inner), _SIMPLE) for e in self._statement_events(inner)):
                    return False  # more training follows (another loop, another phase): its steps are its own
                if not _holds_any(self.facts.tree, self._step_numbers, statement):
                    continue
                for inner in self._ordered((statement,)):
                    if matches(type(inner), _SIMPLE):
                        if any(e.kind is EventKind.STEP for e in self._statement_events(inner)):
                            return True
            if frame.owner is None or isinstance(frame.owner, (cst.FunctionDef, cst.ClassDef)):
                return False
            if _is_loop(frame.owner) and not across:
                return False
        return False

    def _capped_per_pass(self, micro: LoopNode, counters: dict[str, Counter], length: str | None) -> bool:
        """A `break` right under a test of the loop's own per-pass count (`if i >= 5: break`): every
        pass may end before its last micro-batch. Not a test against the pass's own length
        (`if i >= iters_per_epoch: break` over `range(iters_per_epoch)`), which never cuts it."""
        per_pass = {counter.text for counter in counters.values() if counter.per_pass}
        compact = "".join((length or "").split())
        for tests in _break_tests(_statements(micro.body)):
            test = tests[-1] if tests else None
            if test is None or not per_pass & self._names_read(test):
                continue
            if compact and isinstance(test, cst.Comparison) and len(test.comparisons) == 1 \
                    and "".join(code_of(test.comparisons[0].comparator).split()) == compact:
                continue
            return True
        return False

    def _single_budgeted_pass(self, loop: LoopNode, frames: list[_Frame]) -> bool:
        """The loop is the whole run, ended by a budget of steps: no loop around it in its
        function, and an `if <count> >= budget: break` on a count the loop increments (a step
        count), so that the run stops on a step and only its last micro-batches could go
        unstepped (RULES.md GA202)."""
        if self._enclosing_loop(frames) is not None:
            return False
        tree = self.facts.tree
        counted = {name for node in tree.find(loop.body, cst.AugAssign, cst.Assign, enter_scopes=False)
                   for name in _added_to(node)}
        for statement in _statements(loop.body):
            if isinstance(statement, cst.If) and _terminator(statement.body) is cst.Break:
                budget = self._names_read(statement.test) & counted
                # A budget kept on the object (`self.global_step`) across calls made from a loop
                # (`for _ in range(epochs): self.run_epoch(loader)`) spans the calls: each is one
                # pass of many. A local one starts again with each call, a run of its own.
                if budget and not (any("." in name for name in budget) and self._called_in_a_loop(frames)):
                    return True
        return False

    def _called_in_a_loop(self, frames: list[_Frame]) -> bool:
        """The loop's function is called, in this module, from inside a loop (`for _ in
        range(epochs): self.run_epoch(loader)`): each call is one pass of many."""
        function = next((f.owner for f in reversed(frames) if isinstance(f.owner, cst.FunctionDef)), None)
        if function is None:
            return False
        name = function.name.value
        tree = self.facts.tree
        calls = [*self.facts.calls.get(name, ()), *self.facts.calls.get(f"self.{name}", ())]
        loops = tree.ordered(cst.For, cst.While) if calls else []
        return any(tree.contains(loop, call, enter_scopes=False) for call in calls for loop in loops)

    def _length_multiples(self, loop: LoopNode, frames: list[_Frame], iterable: IterableInfo) -> frozenset[str]:
        """The counts a pass's length is visibly a multiple of (compact code): the factors of
        `range(steps * k)`, and `k` of an `assert len(dl) % k == 0` on that length before the loop."""
        found = set(iterable.length_factors)
        length = "".join((iterable.len_text or "").split())
        if length:
            found.add(length)  # `for j in range(k)`: a pass of k micro-batches is one whole window
        for frame in reversed(frames):
            for statement in frame.block[: frame.index]:
                for small in getattr(statement, "body", ()) if isinstance(statement, cst.SimpleStatementLine) else ():
                    test = small.test if isinstance(small, cst.Assert) else None
                    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1 \
                            and isinstance(test.comparisons[0].operator, cst.Equal) \
                            and isinstance(test.comparisons[0].comparator, cst.Integer) \
                            and integer_value(test.comparisons[0].comparator) == 0 \
                            and isinstance(test.left, cst.BinaryOperation) and isinstance(test.left.operator, cst.Modulo):
                        if length and "".join(code_of(test.left.left).split()) == length:
                            found.add("".join(code_of(test.left.right).split()))
            if frame.owner is None or isinstance(frame.owner, (cst.FunctionDef, cst.ClassDef)):
                break
        return frozenset(found)

    def _backpropagated_after(self, loop: LoopNode, frames: list[_Frame]) -> frozenset[str]:
        """Names whose values reach a backward after the loop, in its function (the module for
        a module-level loop), through the assignments made after it: `losses` of
        `meta_loss = torch.stack(losses).mean()` then `meta_loss.backward()`."""
        after: list[cst.CSTNode] = []
        for frame in reversed(frames):
            for statement in frame.block[frame.index + 1:]:
                after += [inner for inner in self._ordered((statement,)) if matches(type(inner), _SIMPLE)]
            if frame.owner is None or isinstance(frame.owner, (cst.FunctionDef, cst.ClassDef)):
                break
        reached: set[str] = set()
        for statement in after:
            if self._may_hold_backward(statement):
                for event in self._statement_events(statement):
                    if event.kind is EventKind.BACKWARD and event.loss is not None:
                        reached |= self._names_read(event.loss)
        if not reached:
            return frozenset()
        assignments = [small for statement in after for small in getattr(statement, "body", ())
                       if isinstance(small, cst.Assign)]
        grew = True
        while grew:
            grew = False
            for small in assignments:
                if any(name in reached for target in small.targets for name in _target_names(target.target)):
                    new = self._names_read(small.value) - reached
                    if new:
                        reached |= new
                        grew = True
        return frozenset(reached)

    def _frameworks(self, events: list[Event]) -> set[str]:
        found: set[str] = set()
        for event in events:
            if event.accumulate_context is not None:
                found.add("accelerate-accumulate")
            if event.kind is EventKind.BACKWARD:
                divisors = [d.divisor for d in (event.loss_flow.divisions if event.loss_flow else ())]
                if event.framework in {"accelerate", "deepspeed"} and any(
                        self.facts.framework_count(d) == "deepspeed" for d in divisors):
                    found.add("deepspeed")  # DeepSpeed behind accelerate: its engine accumulates
                if event.framework == "accelerate" and self.facts.accelerator_gas:
                    found.add("accelerate-gas")
                elif event.framework in {"deepspeed", "other"}:
                    found.add(event.framework)
            if event.kind is EventKind.STEP and event.framework in {"deepspeed", "other"}:
                found.add(event.framework)
        return found

    def _bound_names(self, function: cst.FunctionDef | None) -> frozenset[str]:
        """Every name the scope uses, computed once per scope (a module may hold many loops)."""
        key = id(function)
        if key not in self._bound_cache:
            self._bound_cache[key] = frozenset(self._scope_names(function))
        return self._bound_cache[key]

    def _scope_names(self, function: cst.FunctionDef | None) -> set[str]:
        if self._bound_in is None:  # read once per module, not once per scope
            bound_in: dict[int, set[str]] = {}
            for name, bindings in self.facts.bindings.items():
                for binding in bindings:
                    bound_in.setdefault(id(binding.scope), set()).add(name)
            self._bound_in = bound_in
        names = set(self._bound_in.get(id(function), ()))
        if function is not None:
            names.update(p.name.value for p in function.params.params)
            names.update(map(_VALUE, self.facts.tree.find(function.body, cst.Name)))
        else:
            names.update(map(_VALUE, self.facts.tree.find(self.module, cst.Name)))
        return names


_ORDERINGS = (cst.Equal, cst.NotEqual, cst.LessThan, cst.LessThanEqual, cst.GreaterThan, cst.GreaterThanEqual)


def _integer_bound(expression: cst.BaseExpression) -> tuple[str, cst.BaseCompOp, int, bool] | None:
    """`cfg.accum > 1` (or `1 < cfg.accum`): the value compared, the operator, the integer, and
    whether the integer is on the left."""
    if type(expression) is not cst.Comparison or len(expression.comparisons) != 1:
        return None
    comparison = expression.comparisons[0]
    if type(comparison.operator) not in _ORDERINGS:
        return None
    left, right = expression.left, comparison.comparator
    if type(right) is cst.Integer and (name := dotted_name(left)) is not None:
        return name, comparison.operator, int(right.value, 0), False
    if type(left) is cst.Integer and (name := dotted_name(right)) is not None:
        return name, comparison.operator, int(left.value, 0), True
    return None


def _satisfiable(assignment: dict[str, bool], bounds: dict[str, tuple[str, cst.BaseCompOp, int, bool]],
                 counts: frozenset[str] = frozenset()) -> bool:
    """Some integer value of each compared name makes every switch of `assignment` that
    compares it with an integer take its assigned value; a count of micro-batches (`counts`:
    what a boundary divides by) is at least 1."""
    by_name: dict[str, list[tuple[cst.BaseCompOp, int, bool, bool]]] = {}
    for text, value in assignment.items():
        if text in bounds:
            name, operator, literal, on_left = bounds[text]
            by_name.setdefault(name, []).append((operator, literal, on_left, value))
    for name, tests in by_name.items():
        if len(tests) < 2:
            continue
        candidates = {literal + shift for _, literal, _, _ in tests for shift in (-1, 0, 1)}
        if name in counts:
            candidates = {candidate for candidate in candidates if candidate >= 1} | {1}
        if not any(all((compare(operator, literal, candidate) if on_left else compare(operator, candidate, literal))
                       == value for operator, literal, on_left, value in tests)
                   for candidate in candidates):
            return False
    return True


def _wiped_before_its_next_step(backward: ResolvedEvent, steps: list[ResolvedEvent],
                                clears: list[ResolvedEvent]) -> bool:
    """A backward after the optimizer's step, on the same micro-batches, followed there by a clear
    of its gradients (`optD.step()`, then the generator's backward through D, then `optD.zero_grad()`):
    what it leaves in those gradients is gone before the optimizer steps again."""
    order = backward.event.order
    if not any(step.event.order < order and step.guard == backward.guard for step in steps):
        return False
    if any(clear.event.order > order and clear.guard == backward.guard for clear in clears):
        return True
    # ... or by a clear on the next micro-batch, the first of the next window (`if step % k == 0:
    # optim_d.zero_grad()` ahead of the backwards, with the step on `(step + 1) % k == 0`).
    after = backward.guard.boundary
    return after is not None and after.schedule is not None and after.schedule.first_window == "k" and any(
        clear.event.order < order and clear.guard.kind is GuardKind.BOUNDARY and clear.guard.boundary is not None
        and clear.guard.boundary.schedule is not None and clear.guard.boundary.schedule.first_window == "1"
        and clear.guard.boundary.k_text == after.k_text for clear in clears)


_NEGATED_TESTS = {cst.Is: cst.IsNot, cst.IsNot: cst.Is, cst.Equal: cst.NotEqual, cst.NotEqual: cst.Equal,
                  cst.In: cst.NotIn, cst.NotIn: cst.In}


def _opposite_switches(switches: list[str], tests: dict[str, cst.BaseExpression]) -> list[tuple[str, str]]:
    """Pairs of switches that test the same thing the two opposite ways (`x is None` and `x is not
    None`, `a == b` and `a != b`, `flag` and `not flag`): one holds exactly where the other does not."""
    readings: dict[str, tuple] = {}
    for text in switches:
        node = tests.get(text)
        if type(node) is cst.Comparison and len(node.comparisons) == 1:
            target = node.comparisons[0]
            readings[text] = (code_of(node.left), code_of(target.comparator), type(target.operator))
        elif type(node) is cst.UnaryOperation and type(node.operator) is cst.Not:
            readings[text] = (code_of(node.expression),)
        elif node is not None:
            readings[text] = (code_of(node), None)
    pairs = []
    for one, other in itertools.combinations(readings, 2):
        first, second = readings[one], readings[other]
        if len(first) == 3 and len(second) == 3:
            if first[:2] == second[:2] and _NEGATED_TESTS.get(first[2]) is second[2]:
                pairs.append((one, other))
        elif (len(first), len(second)) in ((1, 2), (2, 1)) and first[0] == second[0]:
            pairs.append((one, other))  # `not flag` beside `flag`
    return pairs


def _held_to_one(assignment: dict[str, bool], bounds: dict[str, tuple[str, cst.BaseCompOp, int, bool]]) -> frozenset[str]:
    """The names whose only positive value the assigned switches allow is 1 (`cfg.accum > 1` false)."""
    found = set()
    for text, value in assignment.items():
        if text not in bounds:
            continue
        name, operator, literal, on_left = bounds[text]
        # Past `literal` every ordering answers alike: the integers up to two beyond it say it all.
        allowed = [x for x in range(1, max(literal, 1) + 3)
                   if (compare(operator, literal, x) if on_left else compare(operator, x, literal)) == value]
        if allowed == [1]:
            found.add(name)
    return frozenset(found)


def _variants(events: list[Event], frameworks, program: LoopProgram | None = None,
              length: int | None = None, constants: dict[str, bool] | None = None) -> list[LoopVariant]:
    """One variant per assignment of the loop's switches, except those a constant switch rules out."""
    constants = constants or {}
    switches: list[str] = []
    switch_nodes: dict[str, str] = {}
    switch_expressions: dict[str, cst.BaseExpression] = {}
    bounds: dict[str, tuple[str, cst.BaseCompOp, int, bool]] = {}  # switch -> `_integer_bound` of its test
    # What a boundary divides by counts micro-batches: at least 1 in every configuration.
    counts = frozenset(program.k_atoms if program is not None else ()) | {
        condition.boundary.k_text for event in events for condition in event.conditions
        if condition.boundary is not None and condition.boundary.k_text}
    # `if args.fp16 and USE_NATIVE:` beside `elif args.fp16 and USE_APEX:`: the parts are the
    # switches, each test a value of theirs (as switches of its own they would make impossible
    # variants, and use up the cap on real ones).
    compounds: dict[str, cst.BaseExpression] = {}
    for event in events:
        for condition in event.conditions:
            found = [(condition.text, condition.expression)] if condition.kind is ConditionKind.SWITCH else []
            found += [(code_of(term), term) for term in condition.switch_terms]
            parts = []
            for text, expression in found:
                leaves = _switch_leaves(expression) if expression is not None else None
                if leaves is None:
                    parts.append((text, expression))
                else:
                    compounds[text] = expression  # type: ignore[assignment]
                    parts += [(code_of(leaf), leaf) for leaf in leaves]
            for text, expression in parts:
                if text in switches:
                    continue
                switches.append(text)
                if expression is not None:
                    switch_nodes[text] = code_of(expression).strip()
                    switch_expressions[text] = expression
                    bound = _integer_bound(expression)
                    if bound is not None:
                        bounds[text] = bound
    switches = switches[:MAX_SWITCHES]
    opposite = _opposite_switches(switches, switch_expressions)
    variants: list[LoopVariant] = []
    for values in itertools.product((True, False), repeat=len(switches)):
        assignment = dict(zip(switches, values))
        if any(constants.get(text, value) != value for text, value in assignment.items()):
            continue  # `if PROFILE:` with `PROFILE = False`: that branch never runs
        if any(assignment[one] == assignment[other] for one, other in opposite):
            continue  # `optimizer is None` and `optimizer is not None` both true, or both false
        if not _satisfiable(assignment, bounds, counts):
            continue  # `if cfg.ACCUM == 1:` and `if cfg.ACCUM > 1:` both true: no configuration runs that
        switches_only = assignment
        assignment = dict(assignment)
        for text, expression in compounds.items():
            value = _switch_value(expression, assignment)
            if value is not None:
                assignment[text] = value
        resolved: list[ResolvedEvent] = []
        runs: dict | None = None
        for event in events:
            if any(c.kind is ConditionKind.SWITCH and c.text in assignment and assignment[c.text] != c.polarity
                   for c in event.conditions):
                continue
            guard = _guard(event, assignment)
            deciding = [c for c in event.conditions if not (c.kind is ConditionKind.SWITCH and c.text in assignment)]
            if program is not None and deciding and not event.in_inner_loop:
                if runs is None:
                    switch_values = {switch_nodes[t]: v for t, v in assignment.items() if t in switch_nodes}
                    runs = {config: program.run(config, switch_values)
                            for config in configs_for(program.k_literal, program.start_known, length)}
                schedule = read_runs({config: vector[id(event.statement)] for config, vector in runs.items()})
                if program.approximate:
                    schedule = replace(schedule, first_window=None, tail=Tail.UNKNOWN)
                elif program.approximate_start:
                    schedule = replace(schedule, first_window=None)
                guard = _evaluated_guard(event, deciding, schedule, guard, program)
            resolved.append(ResolvedEvent(event, guard))
        variants.append(LoopVariant(tuple(switches_only.items()), resolved,
                                    frozenset(frameworks([r.event for r in resolved])), _held_to_one(assignment, bounds)))
    return variants


def _switch_leaves(expression: cst.BaseExpression) -> list[cst.BaseExpression] | None:
    """The operands of a test made of `and`, `or` and `not` (`args.fp16 and USE_NATIVE`); None
    for any other test."""
    if type(expression) is not cst.BooleanOperation and not (
            type(expression) is cst.UnaryOperation and type(expression.operator) is cst.Not
            and type(expression.expression) is cst.BooleanOperation):
        return None
    leaves: list[cst.BaseExpression] = []
    pending = [expression]
    while pending:
        node = pending.pop()
        if type(node) is cst.BooleanOperation:
            pending += [node.right, node.left]  # type: ignore[attr-defined]
        elif type(node) is cst.UnaryOperation and type(node.operator) is cst.Not:  # type: ignore[attr-defined]
            pending.append(node.expression)  # type: ignore[attr-defined]
        else:
            leaves.append(node)
    return leaves


def _switch_value(expression: cst.BaseExpression, values: dict[str, bool]) -> bool | None:
    """The value of a test of `and`, `or` and `not` over switches, from theirs; None if one is unknown."""
    if type(expression) is cst.BooleanOperation:
        left = _switch_value(expression.left, values)  # type: ignore[attr-defined]
        right = _switch_value(expression.right, values)  # type: ignore[attr-defined]
        if type(expression.operator) is cst.And:  # type: ignore[attr-defined]
            return False if left is False or right is False else (None if left is None or right is None else True)
        return True if left is True or right is True else (None if left is None or right is None else False)
    if type(expression) is cst.UnaryOperation and type(expression.operator) is cst.Not:  # type: ignore[attr-defined]
        inner = _switch_value(expression.expression, values)  # type: ignore[attr-defined]
        return None if inner is None else not inner
    return values.get(code_of(expression))


def _evaluated_guard(event: Event, deciding: list[Condition], schedule: Schedule, read: Guard,
                     program: LoopProgram) -> Guard:
    """The guard as evaluated; the spelling only supplies the nodes a fix rewrites."""
    if schedule.pattern is Pattern.EVERY:
        return NO_GUARD
    if schedule.pattern is Pattern.OTHER:
        return OPAQUE_GUARD
    kind = GuardKind.BOUNDARY if schedule.pattern is Pattern.BOUNDARY else GuardKind.NOT_BOUNDARY
    base = read.boundary if read.boundary is not None and not read.boundary.framework else next(
        (c.boundary for c in deciding if c.boundary is not None and not c.boundary.framework), None)
    tail = schedule.tail is not Tail.NEVER
    if base is not None:
        end_of_data = (base.end_of_data or base.expression) if tail else None
        return Guard(kind, replace(base, schedule=schedule, end_of_data=end_of_data))
    if len(program.k_atoms) > 1:
        return OPAQUE_GUARD
    tests = [c for c in deciding if c.expression is not None]
    expression = tests[0].expression if len(tests) == 1 else None
    if program.k_atoms:
        k_text = next(iter(program.k_atoms))
        k_node = program.k_nodes.get(k_text)
    else:  # a literal k, named as the loop names it (`k` bound to 4) when it does
        named = program.k_nodes.get(str(program.k_literal))
        k_text = code_of(named) if named is not None else str(program.k_literal)
        k_node = named if named is not None else cst.Integer(k_text)
    counter = program.counter_of(expression) if expression is not None else None
    boundary = Boundary(k=k_node, k_text=k_text, k_literal=program.k_literal, counter=counter, test=None,
                        modulo=_plain_modulo(expression, k_text), offset=0, remainder=0,
                        end_of_data=expression if tail else None, expression=expression,
                        negated=bool(tests) and not tests[0].polarity, schedule=schedule)
    return Guard(kind, boundary)


def _within(module: str, ancestor: str) -> bool:
    """`module` is `ancestor` or one of its parts (`netG.encoder` within `netG`)."""
    return module == ancestor or module.startswith(ancestor + ".")


def _module_called(name: str) -> str:
    """The module a call runs: `model` for `model(x)` and `model.forward(x)`."""
    return name[: -len(".forward")] if name.endswith(".forward") else name


def _plain_modulo(expression: cst.BaseExpression | None, k_text: str) -> cst.BinaryOperation | None:
    """`step % k` of a test `step % k == 0` on a name or attribute, as the loop spells k."""
    if not (isinstance(expression, cst.Comparison) and len(expression.comparisons) == 1
            and isinstance(expression.comparisons[0].operator, cst.Equal)
            and isinstance(expression.comparisons[0].comparator, cst.Integer)
            and expression.comparisons[0].comparator.value == "0"):
        return None
    modulo = expression.left
    if (isinstance(modulo, cst.BinaryOperation) and isinstance(modulo.operator, cst.Modulo)
            and isinstance(modulo.left, (cst.Name, cst.Attribute)) and code_of(modulo.right).strip() == k_text):
        return modulo
    return None


def _assignments(statement: cst.CSTNode, repeated: bool) -> list[tuple[str, cst.BaseExpression | None, str | None]]:
    """What a simple statement assigns: (name, value, `+`/`-` for augmented; value None: unknown)."""
    found: list[tuple[str, cst.BaseExpression | None, str | None]] = []
    body = statement.body if matches(type(statement), _SIMPLE) else []
    for small in body:
        # Exact types, as in `_target_names`: most small statements are none of these.
        small_type = type(small)
        if small_type is cst.Assign:
            single = len(small.targets) == 1 and dotted_name(small.targets[0].target) is not None
            paired = _literal_pairs(small) if len(small.targets) == 1 and not repeated else None
            if paired is not None:  # `examples, steps = 0, 0`: each name its own literal
                found += [(name, value, None) for name, value in paired]
                continue
            for target in small.targets:
                for name in _target_names(target.target):
                    found.append((name, small.value if single and not repeated else None, None))
        elif small_type is cst.AnnAssign and small.value is not None:
            for name in _target_names(small.target):
                found.append((name, None if repeated else small.value, None))
        elif small_type is cst.AugAssign:
            operator = {cst.AddAssign: "+", cst.SubtractAssign: "-"}.get(type(small.operator))
            for name in _target_names(small.target):
                found.append((name, small.value if operator and not repeated else None, operator))
        # A list's length as a count (`window.append(x)` ... `if len(window) % k == 0: ...; window = []`).
        if small_type is cst.Expr and type(small.value) is cst.Call and type(small.value.func) is cst.Attribute:
            method, owner = small.value.func.attr.value, dotted_name(small.value.func.value)
            if owner and method == "append" and len(small.value.args) == 1:
                found.append((f"len({owner})", None if repeated else _ONE, "+"))
            elif owner and method == "clear" and not small.value.args:
                found.append((f"len({owner})", _ZERO, None))
            elif owner and method in _RESIZING_LIST_METHODS:
                found.append((f"len({owner})", None, None))
        elif small_type is cst.Assign and len(small.targets) == 1 and (owner := dotted_name(small.targets[0].target)):
            empty = type(small.value) is cst.List and not small.value.elements
            found.append((f"len({owner})", _ZERO if empty else None, None))
    return found


_ONE, _ZERO = cst.Integer("1"), cst.Integer("0")
# Modules whose functions give a different value at each call, or a tensor: never a window's count.
_NOT_A_COUNT_MODULES = frozenset({"random", "np", "numpy", "torch", "time", "os", "secrets", "itertools"})
_RESIZING_LIST_METHODS = frozenset({"extend", "insert", "pop", "remove"})


def _literal_pairs(small: cst.Assign) -> list[tuple[str, cst.BaseExpression]] | None:
    """`a, b = 0, 0`: each target name with the literal it is given (literals only, so that no
    value reads a name the same statement rebinds)."""
    target, value = small.targets[0].target, small.value
    if not (type(target) in (cst.Tuple, cst.List) and type(value) in (cst.Tuple, cst.List)):
        return None
    targets, values = target.elements, value.elements  # type: ignore[attr-defined]
    if len(targets) != len(values):
        return None
    pairs = []
    for element, item in zip(targets, values):
        name = dotted_name(element.value) if type(element) is cst.Element else None
        if name is None or type(item) is not cst.Element or type(item.value) not in (cst.Integer, cst.Float, cst.Name):
            return None
        pairs.append((name, item.value))
    names = {name for name, _ in pairs}
    if any(type(value) is cst.Name and value.value in names for _, value in pairs):  # type: ignore[attr-defined]
        return None  # `a, b = b, a`: each value is read before either name is bound
    return pairs


def _strip_constant_terms(node: cst.BaseExpression) -> cst.BaseExpression | None:
    """`n - 1` -> `n`: the configuration value a counter is compared with."""
    while isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Add, cst.Subtract)):
        if isinstance(node.right, cst.Integer):
            node = node.left
        elif isinstance(node.left, cst.Integer):
            node = node.right
        else:
            return node
    return node


def _guard(event: Event, assignment: dict[str, bool]) -> Guard:
    if event.in_inner_loop:
        return OPAQUE_GUARD
    deciding = [c for c in event.conditions if not (c.kind is ConditionKind.SWITCH and c.text in assignment)]
    if not deciding:
        return NO_GUARD
    if len(deciding) == 1 and deciding[0].kind is ConditionKind.BOUNDARY and deciding[0].boundary is not None:
        kind = GuardKind.BOUNDARY if deciding[0].polarity else GuardKind.NOT_BOUNDARY
        return Guard(kind, deciding[0].boundary)
    return OPAQUE_GUARD


def _tests_of(statement: cst.CSTNode) -> list[cst.CSTNode]:
    """Expressions a compound statement evaluates itself (an `if` test, a `for` iterable, `with` items)."""
    statement_type = type(statement)
    if matches(statement_type, (cst.If, cst.While)):
        return [statement.test]  # type: ignore[attr-defined]
    if matches(statement_type, (cst.For,)):
        return [statement.iter]  # type: ignore[attr-defined]
    if matches(statement_type, (cst.With,)):
        return [item.item for item in statement.items]  # type: ignore[attr-defined]
    return []


def _empty_container(value: cst.BaseExpression) -> bool:
    """`[]`, `{}`, `list()`, `dict()`: a container made empty."""
    if type(value) in (cst.List, cst.Dict):
        return not value.elements  # type: ignore[attr-defined]
    return type(value) is cst.Call and call_name(value) in {"list", "dict"} and not value.args


def _offset_length(args: list[cst.BaseExpression] | None) -> str | None:
    """`range(1, n + 1)`: `n` items, the start added back to the stop; None for other ranges."""
    if not args or len(args) != 2 or type(args[0]) is not cst.Integer:
        return None
    stop = args[1]
    if type(stop) is cst.BinaryOperation and type(stop.operator) is cst.Add and type(stop.right) is cst.Integer \
            and integer_value(stop.right) == integer_value(args[0]) and not stop.lpar:
        return code_of(stop.left)
    return None


def _product_factors(node: cst.BaseExpression) -> frozenset[str]:
    """`steps * k` -> {"steps", "k"}: the names and literals of a product of them, as compact
    code; nothing for anything else (a sum, a call, a single name)."""
    if not (isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Multiply)):
        return frozenset()
    factors: set[str] = set()
    pending: list[cst.BaseExpression] = [node]
    while pending:
        part = pending.pop()
        if isinstance(part, cst.BinaryOperation) and isinstance(part.operator, cst.Multiply) and not part.lpar:
            pending += [part.left, part.right]
        elif isinstance(part, (cst.Name, cst.Attribute, cst.Subscript, cst.Integer, cst.Float)) and not part.lpar:
            factors.add("".join(code_of(part).split()))
        else:
            return frozenset()
    return frozenset(factors)


def _count_arithmetic(value: cst.BaseExpression) -> bool:
    """An integer made of names, literals and `len(...)` by `+`, `-` and `*` (`step + 1`,
    `step + epoch * len(loader)`): not a literal alone, not a test."""
    if isinstance(value, (cst.Name, cst.Attribute)):
        return True
    if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, (cst.Add, cst.Subtract, cst.Multiply)):
        return all(isinstance(side, (cst.Integer, cst.Name, cst.Attribute)) or _count_arithmetic(side)
                   or (isinstance(side, cst.Call) and call_name(side) == "len") for side in (value.left, value.right))
    return False


def _assigned_value(small: cst.BaseSmallStatement, name: str) -> cst.BaseExpression | None:
    """The value `small` binds to `name`: `name = v`, `a = name = v`, or `a, name = u, v`."""
    if not isinstance(small, cst.Assign):
        return None
    if len(small.targets) > 1:  # `micro = n = 0`
        return small.value if any(dotted_name(t.target) == name for t in small.targets) else None
    target, value = small.targets[0].target, small.value
    if dotted_name(target) == name:
        return value
    if isinstance(target, (cst.Tuple, cst.List)):
        names = [dotted_name(el.value) for el in target.elements]
        if name in names:
            if isinstance(value, (cst.Tuple, cst.List)) and len(value.elements) == len(names):
                return value.elements[names.index(name)].value
            return cst.Name("None")
    return None


def _once_lines(statement: cst.CSTNode, retried: bool = False) -> Iterator[cst.SimpleStatementLine]:
    """The lines of simple statements that run once whenever `statement`, a statement of a loop's
    body, runs on its normal path: through `with` blocks and retry loops (`_runs_once`), and the
    `try` body a retry loop repeats until it succeeds."""
    if isinstance(statement, cst.SimpleStatementLine):
        yield statement
    elif isinstance(statement, cst.With) or retried and isinstance(statement, (cst.Try, cst.TryStar)):
        for inner in _statements(statement.body):
            yield from _once_lines(inner, retried)
    elif _is_loop(statement) and _runs_once(statement):  # type: ignore[arg-type]
        for inner in _statements(statement.body):
            yield from _once_lines(inner, True)


def _break_tests(block: Sequence[cst.CSTNode], tests: tuple[cst.BaseExpression, ...] = ()
                 ) -> Iterator[tuple[cst.BaseExpression, ...]]:
    """For each `break` of the loop whose body is `block` (not one of an inner loop), the tests
    of the `if`s around it."""
    for statement in block:
        if matches(type(statement), _SIMPLE):
            if any(type(small) is cst.Break for small in statement.body):  # type: ignore[attr-defined]
                yield tests
        elif isinstance(statement, cst.If):
            yield from _break_tests(_statements(statement.body), tests + (statement.test,))
            orelse = statement.orelse
            if orelse is not None:
                yield from _break_tests((orelse,) if isinstance(orelse, cst.If) else _statements(orelse.body),
                                        tests + (statement.test,))
        elif isinstance(statement, (cst.With, cst.Try, cst.TryStar)):
            for part in [statement.body, *(h.body for h in getattr(statement, "handlers", ()))]:
                yield from _break_tests(_statements(part), tests)


def _runs_once(loop: LoopNode) -> bool:
    """The loop's body ends in `break` on its normal path (`while tries < 3: try: ...; break`
    `except RuntimeError: tries += 1`, a retry): it runs the body once, again only after an
    exception, so it is a block of the loop around it, not a loop over micro-batches."""
    suite = loop.body
    while True:
        if _terminator(suite) is cst.Break:
            return True
        last = suite.body[-1] if isinstance(suite, cst.IndentedBlock) and suite.body else None
        if not isinstance(last, (cst.Try, cst.TryStar)) or last.orelse is not None or last.finalbody is not None:
            return False
        suite = last.body


def _terminator(suite: cst.BaseSuite) -> type | None:
    body = suite.body
    last = body[-1] if body else None
    if isinstance(last, cst.SimpleStatementLine) and last.body:
        last = last.body[-1]
    return type(last) if isinstance(last, _TERMINATORS) else None


def _terminates(suite: cst.BaseSuite) -> bool:
    body = suite.body
    if not body:
        return False
    last = body[-1]
    if isinstance(last, cst.SimpleStatementLine) and last.body:
        return isinstance(last.body[-1], _TERMINATORS)
    if isinstance(last, cst.BaseSmallStatement):
        return isinstance(last, _TERMINATORS)
    return False


def _target_names(target: cst.BaseExpression) -> list[str]:
    # Exact types (none of these classes has subclasses): most targets are names, and a
    # failing `isinstance` on libcst's ABCs is slow.
    target_type = type(target)
    if target_type is cst.Tuple or target_type is cst.List:
        names: list[str] = []
        for element in target.elements:  # type: ignore[attr-defined]
            names.extend(_target_names(element.value))
        return names
    if target_type is cst.StarredElement:
        return _target_names(target.value)  # type: ignore[attr-defined]
    text = dotted_name(target) or keyed_entry(target)  # `state["step"] = 0`: a count kept in a dictionary
    return [text] if text else []


def _subscripted(target: cst.BaseExpression) -> list[str]:
    """`state` of `state["iter_num"] += 1`: a container whose entries the loop changes, so
    that a test reading it is no configuration switch."""
    if type(target) is cst.Subscript:
        text = dotted_name(target.value)  # type: ignore[attr-defined]
        return [text] if text else []
    return []


# Wrappers that run the module they are handed with its own parameters.
_SYNCING_WRAPPERS = DDP_CONSTRUCTORS | {"DataParallel", "FullyShardedDataParallel", "FSDP"}


def _added_to(small: cst.BaseSmallStatement) -> list[str]:
    """The names a statement adds something to: `seen += n`, `seen = seen + n`, `seen = n + seen`."""
    if isinstance(small, cst.AugAssign):
        return _target_names(small.target) if isinstance(small.operator, cst.AddAssign) else []
    if isinstance(small, cst.Assign) and len(small.targets) == 1:
        value, name = small.value, dotted_name(small.targets[0].target)
        if name and isinstance(value, cst.BinaryOperation) and isinstance(value.operator, cst.Add) \
                and name in (dotted_name(value.left), dotted_name(value.right)):
            return [name]
    return []


def _increment_target(small: cst.BaseSmallStatement) -> str | None:
    if isinstance(small, cst.AugAssign) and isinstance(small.operator, cst.AddAssign):
        if isinstance(small.value, cst.Integer) and small.value.value == "1":
            return dotted_name(small.target) or keyed_entry(small.target)
    if isinstance(small, cst.Assign) and len(small.targets) == 1:
        target = small.targets[0].target
        name = dotted_name(target) or keyed_entry(target)
        value = small.value
        if (name and isinstance(value, cst.BinaryOperation) and isinstance(value.operator, cst.Add)
                and (dotted_name(value.left) or keyed_entry(value.left)) == name
                and isinstance(value.right, cst.Integer) and value.right.value == "1"):
            return name
    return None


def _range_arguments(node: cst.BaseExpression) -> list[cst.BaseExpression] | None:
    if isinstance(node, cst.Call) and (call_name(node) or "") in {"range", "trange", "tqdm.trange"}:
        return positional_args(node) or None
    inner = _passed_through(node)
    if inner is not None:
        return _range_arguments(inner)
    return None


# Calls that make a new sequence of their argument's items, not a view of it.
_RESHAPING_CALLS = {"zip", "map", "filter", "iter", "cycle", "chain", "islice", "reversed", "sorted", "repeat",
                    "count", "product", "permutations", "combinations", "zip_longest", "enumerate", "list", "tuple"}


def _iterator_of(node: cst.BaseExpression) -> cst.BaseExpression | None:
    """`iter(loader)`: a loop over it is one pass over the loader; its argument (not the
    two-argument `iter(callable, sentinel)`, which calls until a value)."""
    if type(node) is cst.Call and call_name(node) == "iter" and len(node.args) == 1 and not node.args[0].star:
        return node.args[0].value
    return None


def _passed_through(node: cst.BaseExpression) -> cst.BaseExpression | None:
    """`tqdm(range(n))`, `logger.log_every(range(n), freq)`: a progress wrapper handed a
    range or a loop over data first yields that iterable's items; its argument."""
    if not isinstance(node, cst.Call):
        return None
    name = (call_name(node) or "").rsplit(".", 1)[-1]
    positional = positional_args(node)
    if not name or name in _RESHAPING_CALLS or not positional:
        return None
    first = positional[0]
    if name in _ITERABLE_WRAPPERS:
        return first
    if isinstance(first, cst.Call) and (call_name(first) or "") in {"range", "enumerate"}:
        return first
    return None


def _single_range_argument(loop: LoopNode) -> cst.BaseExpression | None:
    """How many times `for ... in range(...)` runs, as an expression of its own: `n` of
    `range(n)`, `range(0, n)` and `range(1, n + 1)`."""
    if isinstance(loop, cst.For):
        args = _range_arguments(loop.iter)
        if args is not None and len(args) == 1:
            return args[0]
        if args is not None and len(args) == 2 and isinstance(args[0], cst.Integer):
            start, stop = integer_value(args[0]), args[1]
            if start == 0:
                return stop
            if isinstance(stop, cst.BinaryOperation) and isinstance(stop.operator, cst.Add):
                for count, offset in ((stop.left, stop.right), (stop.right, stop.left)):
                    if isinstance(offset, cst.Integer) and integer_value(offset) == start:
                        return count
    return None

