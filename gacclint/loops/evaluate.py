"""Guards judged by what they evaluate to (RULES.md, *guard*).

The loop's counter arithmetic is run for sample configurations: several
accumulation counts `k`, pass lengths `n` that divide and that do not, and,
for counters carried in from elsewhere, several starting points. Every
assignment of the loop body to a name the guards read is executed in order
(counters incremented before or after the test, resets, names bound to
conditions), and every test is evaluated where it stands in the iteration.
A value the module cannot show is Unknown (`None`), with Kleene's three-valued
`and`/`or`/`not`, and a guard whose value is Unknown on some micro-batch is
opaque: no finding is ever built on it.

From the micro-batches an event runs on, `read_schedule` says what the guard
is: every micro-batch, every `k`-th one (with the first window's size and
whether the final partial window is stepped), the micro-batches between
boundaries, or none of these (opaque).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import libcst as cst

from gacclint.loops.vocabulary import call_name, code_of, dotted_name, integer_value, keyed_entry, positional_args

Value = object  # int | bool | None (Unknown)
CARRIED = object()  # a counter whose start the module does not show
SAMPLE_K = (2, 3, 4)
MAX_INLINE_DEPTH = 4
MAX_SIMULATED_PASS = 4096  # the longest literal pass run micro-batch by micro-batch


def sample_lengths(k: int) -> tuple[int, ...]:
    """Pass lengths for one `k`: multiples, remainders of 1 and k - 1, and a pass shorter than `k`."""
    return tuple(sorted({3 * k, 3 * k + 1, 4 * k - 1, max(k - 1, 1)}))


@dataclass(frozen=True)
class Config:
    k: int
    n: int
    start: int = 0  # where a counter carried in from elsewhere stands at the first micro-batch
    actual: bool = False  # the loop's own k and pass length, both provable from literals


class Tail(enum.Enum):
    """Whether a guard also runs on the last micro-batch of a pass that ends mid-window."""

    ALWAYS = "always"
    SOMETIMES = "sometimes"  # only in some configurations (`or (len(dl) <= k and ...)`)
    NEVER = "never"
    UNKNOWN = "unknown"


class Pattern(enum.Enum):
    EVERY = "every"
    BOUNDARY = "boundary"
    BETWEEN = "between"  # the complement of a boundary
    OTHER = "other"


@dataclass(frozen=True)
class Schedule:
    """What one guard evaluates to over the sample configurations."""

    pattern: Pattern
    # Size of the first window minus `k` (0: full; -(k - 1): one micro-batch);
    # None when the counter's start is unknown, or sizes disagree across `k`.
    first_window: str | None = None
    tail: Tail = Tail.UNKNOWN
    # One line of evidence, e.g. "with k=4 and 10 batches it runs on batches 4, 8".
    evidence: str = ""
    # Every pass ends on a boundary: there is no final partial window to step or drop.
    whole_windows: bool = False
    # The evidence up to its windows, without what it says of the micro-batches left after the
    # last step ("and the last 2 are never stepped"): with a counter carried across passes they
    # open the next pass's first window.
    evidence_windows: str = ""


OPAQUE_SCHEDULE = Schedule(Pattern.OTHER)


class Unknown(Exception):
    """Raised inside evaluation when a value cannot be known."""


@dataclass
class Environment:
    """Values the guards read, for one configuration."""

    config: Config
    state: dict[str, Value]
    k_atoms: frozenset[str]
    n_atoms: frozenset[str]
    switches: dict[str, bool]
    # What a name bound outside the loop holds: an int, the expression it was bound to, or None.
    constant: Callable[[cst.BaseExpression], "int | cst.BaseExpression | None"]
    predicate: Callable[[str], tuple[list[str], cst.BaseExpression] | None]  # same-module `def f(i): return ...`


def evaluate(node: cst.BaseExpression, env: Environment, depth: int = 0) -> Value:
    """The value of `node`, or None when it cannot be known."""
    try:
        return _eval(node, env, depth)
    except (Unknown, ZeroDivisionError, TypeError, ValueError, RecursionError):
        return None


def bare(text: str) -> str:
    """`((k))` -> `k`: the text of an expression without the parentheses around all of it."""
    text = text.strip()
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for index, char in enumerate(text):
            depth += char == "("
            depth -= char == ")"
            if depth == 0 and index < len(text) - 1:
                return text
        text = text[1:-1].strip()
    return text


# id(node) -> (node, bare text, integer value or None): evaluation reads each node many times.
_NODE_MEMO: dict[int, tuple[cst.CSTNode, str, int | None]] = {}


def _read(node: cst.BaseExpression) -> tuple[str, int | None]:
    found = _NODE_MEMO.get(id(node))
    if found is None or found[0] is not node:
        if len(_NODE_MEMO) > 65536:
            _NODE_MEMO.clear()
        number = integer_value(node) if isinstance(node, cst.Integer) else None
        found = (node, bare(code_of(node)), number)
        _NODE_MEMO[id(node)] = found
    return found[1], found[2]


def _counted(env: Environment, name: str) -> Value:
    """What a count the loop keeps (a name, `len(window)`, `state["step"]`) holds at this point."""
    value = env.state[name]
    if value is None:
        raise Unknown
    return value


def _eval(node: cst.BaseExpression, env: Environment, depth: int) -> Value:
    text, number = _read(node)
    if text in env.switches:
        return env.switches[text]
    if number is not None:
        return number
    # the configuration values sampled (names, `len(dl)`, `a // b`): never assigned in the loop
    if text in env.k_atoms:
        return env.config.k
    if text in env.n_atoms:
        return env.config.n
    if text in env.state and type(node) is cst.Call:  # `len(window)`: a list's length the loop keeps as a count
        return _counted(env, text)
    if isinstance(node, cst.Name) and node.value in {"True", "False"}:
        return node.value == "True"
    dotted = dotted_name(node)
    if dotted is not None:
        if dotted in env.state:
            return _counted(env, dotted)
        bound = env.constant(node)
        if bound is None or isinstance(bound, bool):
            raise Unknown
        if isinstance(bound, int):
            return bound
        if depth >= MAX_INLINE_DEPTH:
            raise Unknown
        return _eval(bound, env, depth + 1)
    if type(node) is cst.Subscript:
        entry = keyed_entry(node)
        if entry is not None and entry in env.state:  # `state["step"]`: a count the loop keeps there
            return _counted(env, entry)
        bound = env.constant(node)  # `cfg["k"]` of a dictionary literal nothing writes again
        if isinstance(bound, int) and not isinstance(bound, bool):
            return bound
        raise Unknown
    if isinstance(node, cst.UnaryOperation):
        if isinstance(node.operator, cst.Not):
            inner = evaluate(node.expression, env, depth)
            return None if inner is None else not inner
        if isinstance(node.operator, cst.Minus):
            return -_need(_eval(node.expression, env, depth))
        return _need(_eval(node.expression, env, depth))
    if isinstance(node, cst.BooleanOperation):
        left = evaluate(node.left, env, depth)
        if isinstance(node.operator, cst.And):
            if left is not None and not left:
                return left
            right = evaluate(node.right, env, depth)
            if right is not None and not right:
                return right
            if left is None or right is None:
                raise Unknown
            return right
        if left is not None and left:
            return left
        right = evaluate(node.right, env, depth)
        if right is not None and right:
            return right
        if left is None or right is None:
            raise Unknown
        return right
    if isinstance(node, cst.BinaryOperation):
        left = _need(_eval(node.left, env, depth))
        right = _need(_eval(node.right, env, depth))
        operator = node.operator
        if isinstance(operator, cst.Add):
            return left + right
        if isinstance(operator, cst.Subtract):
            return left - right
        if isinstance(operator, cst.Multiply):
            return left * right
        if isinstance(operator, cst.Modulo):
            return left % right
        if isinstance(operator, cst.FloorDivide):
            return left // right
        raise Unknown
    if isinstance(node, cst.Comparison):
        left = _need(_eval(node.left, env, depth))
        for target in node.comparisons:
            right = _need(_eval(target.comparator, env, depth))
            if not compare(target.operator, left, right):
                return False
            left = right
        return True
    if isinstance(node, cst.IfExp):
        test = _eval(node.test, env, depth)
        return _eval(node.body if test else node.orelse, env, depth)
    if isinstance(node, cst.Call):
        return _call(node, env, depth)
    raise Unknown


def _need(value: Value) -> int:
    """A number for arithmetic (a bool counts, as in Python); anything else is Unknown."""
    if not isinstance(value, int):
        raise Unknown
    return value


def compare(operator: cst.BaseCompOp, left: int, right: int) -> bool:
    """`left <operator> right` for the six orderings; Unknown for `in`, `is` and the like."""
    if isinstance(operator, cst.Equal):
        return left == right
    if isinstance(operator, cst.NotEqual):
        return left != right
    if isinstance(operator, cst.LessThan):
        return left < right
    if isinstance(operator, cst.LessThanEqual):
        return left <= right
    if isinstance(operator, cst.GreaterThan):
        return left > right
    if isinstance(operator, cst.GreaterThanEqual):
        return left >= right
    raise Unknown


def _call(node: cst.Call, env: Environment, depth: int) -> Value:
    name = call_name(node) or ""
    args = positional_args(node)
    if any(a.keyword is not None or a.star for a in node.args) and name not in {"min", "max"}:
        raise Unknown
    if name in {"min", "max"} and args:
        values = [_need(_eval(a, env, depth)) for a in args]
        return min(values) if name == "min" else max(values)
    if name in {"int", "bool", "abs"} and len(args) == 1:
        value = _eval(args[0], env, depth)
        return {"int": int, "bool": bool, "abs": abs}[name](value)
    found = env.predicate(name)
    if found is not None and depth < MAX_INLINE_DEPTH and len(found[0]) == len(args):
        return _eval(inlined(found, node), env, depth + 1)
    raise Unknown


class _Substitute(cst.CSTTransformer):
    def __init__(self, values: dict[str, cst.BaseExpression]) -> None:
        super().__init__()
        self.values = values

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.BaseExpression:
        return self.values.get(original.value, updated)


_INLINED: dict[int, tuple[cst.Call, cst.BaseExpression]] = {}


def inlined(predicate: tuple[list[str], cst.BaseExpression], call: cst.Call) -> cst.BaseExpression:
    """A same-module predicate's returned expression with the call's arguments in place of its
    parameters (a parameter the body does not read is never evaluated)."""
    params, returned = predicate
    args = positional_args(call)
    if len(args) != len(params):
        return returned
    cached = _INLINED.get(id(call))
    if cached is not None and cached[0] is call:
        return cached[1]
    if len(_INLINED) > 4096:
        _INLINED.clear()
    result = returned.visit(_Substitute(dict(zip(params, args))))
    _INLINED[id(call)] = (call, result)  # type: ignore[assignment]
    return result  # type: ignore[return-value]


# -- reading what a run vector means ---------------------------------------------


def read_runs(runs: dict[Config, Sequence[Value]]) -> Schedule:
    """Classify the micro-batches an event runs on, per configuration."""
    if not runs:
        return OPAQUE_SCHEDULE
    if all(all(v is True for v in vector) for vector in runs.values()):
        return Schedule(Pattern.EVERY, evidence="runs on every micro-batch")
    for pattern, flip in ((Pattern.BOUNDARY, False), (Pattern.BETWEEN, True)):
        schedule = _read_boundary(runs, flip)
        if schedule is not None:
            return Schedule(pattern, schedule.first_window, schedule.tail, schedule.evidence, schedule.whole_windows,
                            schedule.evidence_windows)
    # `if boundary: if not found_nan: step`: at most on the boundaries (an unknown test may
    # skip some), never between them. Windows are then not exact: no finding rests on their size.
    subset = {config: [True if v is None else v for v in vector] for config, vector in runs.items()}
    if any(None in vector for vector in runs.values()) and _read_boundary(subset, False) is not None:
        return Schedule(Pattern.BOUNDARY, None, Tail.UNKNOWN, "")
    return OPAQUE_SCHEDULE


def _read_boundary(runs: dict[Config, Sequence[Value]], flip: bool) -> Schedule | None:
    """Every k-th micro-batch at a fixed phase, the last one of the pass aside."""
    firsts: set[tuple[int, int]] = set()  # (k, size of the first window)
    tails: set[bool] = set()
    tail_unknown = False
    evidence = windows = ""
    phases: dict[tuple[int, int, int], int] = {}  # (k, start, n % k) -> the boundaries' phase
    ordered = sorted(runs.items(), key=lambda item: -len(item[1]))  # long passes first: they show the phase
    for config, vector in ordered:
        values = [(not v) if (flip and v is not None) else v for v in vector]
        n, k = len(values), config.k  # a pass a `break` ends runs fewer micro-batches than the data holds
        if not n:
            continue
        periodic = values[:-1]
        if any(v is None for v in periodic):
            return None
        steps = [t for t, v in enumerate(periodic) if v]
        # The phase may differ between passes whose lengths differ mod k (a global step spelt
        # `epoch * len(dl) + i` starts each pass where the last left off); a short pass takes it
        # from the long one of its remainder (sample_lengths gives every remainder a long pass).
        phase = phases.get((k, config.start, n % k))
        if phase is None:
            if n < 2 * k or not steps:
                return None
            phase = phases[(k, config.start, n % k)] = steps[0] % k
        expected = [t for t in range(len(periodic)) if t % k == phase]
        if steps != expected and not (phase == 0 and steps == expected[1:]):
            # `step % k == 0 and step > 0`: the first multiple skipped, a first window of k + 1
            return None
        if n >= 2 * k:
            firsts.add((k, steps[0] + 1))
        last = values[-1]
        on_phase = (n - 1) % k == phase
        if on_phase and n - 1 == phase == 0 and last is False and _runs_skip_first(runs, phases):
            tails.add(False)  # a one-micro-batch pass whose only, first, multiple is skipped
        elif on_phase:
            if last is not True:
                return None
        elif last is None:
            tail_unknown = True
        else:
            tails.add(bool(last))
        if config.actual and n % k:
            windows, evidence = _evidence(values, k, n)  # the loop's own numbers, over any sample's
        elif not evidence and n % k and n >= 2 * k and (k == 4 or config.k == max(c.k for c in runs)):
            windows, evidence = _evidence(values, k, n)
    first = _relative(firsts)
    if tail_unknown:
        tail = Tail.UNKNOWN
    elif tails == {True}:
        tail = Tail.ALWAYS
    elif tails == {False} or not tails:
        tail = Tail.NEVER
    else:
        tail = Tail.SOMETIMES
    # No sample left a final partial window: every pass ends on a boundary (a `break` that keeps
    # only whole windows, `if step // k >= len(dl) // k: break`).
    return Schedule(Pattern.BOUNDARY, first, tail, evidence, whole_windows=not tails and not tail_unknown,
                    evidence_windows=windows)


def _runs_skip_first(runs: dict[Config, Sequence[Value]], phases: dict[tuple[int, int, int], int]) -> bool:
    """Some longer pass skips the first multiple of k at phase 0 (`step % k == 0 and step > 0`)."""
    for config, vector in runs.items():
        if len(vector) > 1 and phases.get((config.k, config.start, len(vector) % config.k)) == 0 and vector \
                and vector[0] is False \
                and any(vector[:-1]):
            return True
    return False


def _evidence(values: Sequence[Value], k: int, n: int) -> tuple[str, str]:
    """`with k=4 and 15 micro-batches it runs after micro-batches 1, 5, 9, 13: windows of 1, 4, 4, 4`,
    and the same followed by `, and the last 2 are never stepped`."""
    stepped = [t + 1 for t, v in enumerate(values) if v]
    windows = [b - a for a, b in zip([0] + stepped, stepped)]
    text = (f"with k={k} and {n} micro-batches it runs after micro-batch{'es' if len(stepped) != 1 else ''} "
            f"{_listed(stepped)}: windows of {_listed(windows)}")
    left = n - (stepped[-1] if stepped else 0)
    if left:
        return text, text + f", and the last {left} {'is' if left == 1 else 'are'} never stepped"
    return text, text


def _listed(numbers: list[int]) -> str:
    """`1, 5, 9, 13`; a long run (a pass of 52,000 literal micro-batches) as its first three
    and last two: `4, 8, 12, ..., 51996, 52000`."""
    if len(numbers) > 8:
        numbers_text = [*map(str, numbers[:3]), "...", *map(str, numbers[-2:])]
    else:
        numbers_text = list(map(str, numbers))
    return ", ".join(numbers_text)


def _relative(firsts: set[tuple[int, int]]) -> str | None:
    """The first window's size said against `k` ("k", "1", "k-1", "k+1"), when every sample agrees."""
    sizes: dict[int, set[int]] = {}
    for k, size in firsts:
        sizes.setdefault(k, set()).add(size)
    if not sizes or any(len(found) != 1 for found in sizes.values()):
        return None
    for label, expected in (("k", lambda k: k), ("k-1", lambda k: k - 1), ("1", lambda k: 1), ("k+1", lambda k: k + 1)):
        if all(found == {expected(k)} for k, found in sizes.items()):
            if label == "k-1" and set(sizes) == {2}:
                return "1"
            return label
    return None


def configs_for(k_literal: int | None, start_known: bool, n_literal: int | None = None) -> list[Config]:
    """The sample configurations; with `k` and the pass length both known from literals, the
    loop's own configuration too (its schedule is what a message then quotes)."""
    ks: Iterable[int] = (k_literal,) if k_literal is not None else SAMPLE_K
    starts = (0,) if start_known else (0, 1, 2, 5)
    configs = [Config(k, n, s) for k in ks for n in sample_lengths(k) for s in starts]
    # A pass of millions of literal micro-batches (`range(10_000_000)`, a "run forever" cap) is
    # not run micro-batch by micro-batch: the samples show its schedule, and a check stays fast.
    if k_literal is not None and n_literal is not None and 0 < n_literal <= MAX_SIMULATED_PASS and start_known:
        configs.append(Config(k_literal, n_literal, 0, actual=True))
    return configs


# -- running the loop body ---------------------------------------------------------


@dataclass(frozen=True)
class Test:
    """One test a statement runs under: its expression (None: opaque), the branch
    it must take, and whether failing it leaves the loop (`if ...: break`)."""

    expression: cst.BaseExpression | None
    polarity: bool
    breaks: bool = False
    # An early `continue` ahead of every event: when its value is unknown it is taken as
    # not skipping, and the windows it shapes are only approximate (no exact-window finding).
    skips: bool = False
    # ... and it skips only micro-batches whose counter is below some bound (`if step <
    # resume_step: continue`): a prefix of the pass, so the tail after the last boundary is exact.
    prefix: bool = False


@dataclass(frozen=True)
class Step:
    """A statement of the loop body in order: the tests it runs under and the
    names it assigns (`target`, value; an AugAssign's operator; None: unknown)."""

    key: int
    tests: tuple[Test, ...]
    assigns: tuple[tuple[str, cst.BaseExpression | None, str | None], ...]


@dataclass
class LoopProgram:
    """What the simulation needs of one micro-batch loop."""

    steps: list[Step]
    # The loop's own counter (`i` of `enumerate(..., start=s)`, of `range(a, b)`) and its first value.
    loop_counter: str | None
    loop_start: int | None
    # Names assigned in the body with their value at the start of a pass: an int,
    # CARRIED (a counter carried in from elsewhere: sampled starts), None (unknown).
    initial: dict[str, object]
    k_atoms: frozenset[str]
    n_atoms: frozenset[str]
    k_literal: int | None
    constant: Callable[[cst.BaseExpression], "int | cst.BaseExpression | None"]
    predicate: Callable[[str], tuple[list[str], cst.BaseExpression] | None]
    k_nodes: dict[str, cst.BaseExpression]
    counter_of: Callable[[cst.BaseExpression], object]  # the Counter a test reads, or None
    approximate: bool = False  # an unknown skip was taken as not skipping in some run
    approximate_start: bool = False  # ... a prefix skip: only the first windows are approximate

    @property
    def start_known(self) -> bool:
        return (self.loop_counter is None or self.loop_start is not None) and all(
            v is not CARRIED for v in self.initial.values())

    def run(self, config: Config, switches: dict[str, bool]) -> dict[int, list[Value]]:
        """For each statement key, whether it runs on each micro-batch (None: unknown)."""
        state: dict[str, Value] = {}
        for name, value in self.initial.items():
            state[name] = config.start if value is CARRIED else value
        env = Environment(config, state, self.k_atoms, self.n_atoms, switches, self.constant, self.predicate)
        runs: dict[int, list[Value]] = {step.key: [] for step in self.steps}
        stopped = False
        for t in range(config.n):
            stop_after = False
            if self.loop_counter is not None:
                start = self.loop_start if self.loop_start is not None else config.start
                state[self.loop_counter] = start + t
            if stopped:
                break  # the pass ended at a `break`: the micro-batches after it never run
            # An `if` is tested once when it is reached: the statements of its block run on that
            # value, even after one of them changes what it read (`if n == k: n = 0; opt.step()`).
            tested: dict[int, Value] = {}
            for step in self.steps:
                ran: Value = True
                for test in step.tests:
                    if test.expression is None:
                        value = None
                    elif id(test.expression) in tested:
                        value = tested[id(test.expression)]
                    else:
                        value = tested[id(test.expression)] = evaluate(test.expression, env)
                    if value is None:
                        if test.breaks:
                            continue  # a break on a limit we cannot see: the run goes on to the end of data
                        if test.skips:
                            if test.prefix:
                                self.approximate_start = True
                            else:
                                self.approximate = True
                            continue
                        ran = None
                        continue
                    if bool(value) != test.polarity:
                        ran = False
                        stop_after = stop_after or test.breaks
                        break
                runs[step.key].append(ran)
                for target, value_node, operator in step.assigns:
                    if ran is False:
                        continue
                    if ran is None or value_node is None:
                        state[target] = None
                        continue
                    value = evaluate(value_node, env)
                    if operator is not None:
                        current = state.get(target)
                        if current is None or value is None or isinstance(value, bool):
                            value = None
                        elif operator == "+":
                            value = current + value
                        elif operator == "-":
                            value = current - value
                        else:
                            value = None
                    state[target] = value
            stopped = stop_after
        # A micro-batch that broke out before any statement ran is no micro-batch of the pass.
        if stopped and runs and all(vector and vector[-1] is False for vector in runs.values()):
            for vector in runs.values():
                vector.pop()
        return runs
