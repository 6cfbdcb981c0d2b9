"""`gacclint explain FILE:LINE`: the loop model of one loop, as gacclint sees it.

The location is written as `check` prints a finding's: `train.py:42`, with or
without its column, and for a notebook `notes.ipynb:cell 3:7` (the code cell's
number, then the row in that cell); every row explain prints is spelt the same way.

It prints what the rules read (gacclint/loops/model.py): the micro-batch loop,
its iterable and counter, the frameworks that manage it, its events in order,
and for each variant (configuration switches resolved) the guard of every
event as evaluated over sample configurations (gacclint/loops/evaluate.py),
then which rules fired on the loop and, for the others, why they stayed silent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from gacclint.engine import Located, SourceError, lint_module, parse
from gacclint.loops.find import ModuleModel, build_model
from gacclint.loops.model import Boundary, EventKind, GuardKind, ResolvedEvent, Shape, TrainingLoop
from gacclint.loops.vocabulary import code_of
from gacclint.rules import all_rules
from gacclint.rules.common import divides_evenly
from gacclint.selection import Selection

_WINDOW_RULES = {"GA102", "GA104", "GA201", "GA202", "GA203", "GA401", "GA403", "GA501"}


class ExplainError(Exception):
    """The location cannot be explained; the message says why (one line)."""


@dataclass(frozen=True)
class Target:
    path: Path
    line: int
    cell: int | None = None  # a notebook's code cell; `line` is then a row in that cell


# FILE:LINE, FILE:LINE:COLUMN, FILE:cell N:LINE[:COLUMN], as `check` prints a finding's place.
_TARGET = re.compile(r"(?P<path>.+?)(?::cell (?P<cell>\d+))?:(?P<line>\d+)(?::\d+)?")


def parse_target(text: str) -> Target:
    """`train.py:42`, `train.py:42:9` or `notes.ipynb:cell 3:7` -> Target; the line is required."""
    match = _TARGET.fullmatch(text)
    if match is None:
        raise ExplainError(f"expected FILE:LINE (or NOTEBOOK:cell N:LINE), got '{text}'")
    cell = match["cell"]
    path = Path(match["path"])
    if cell is not None and path.suffix != ".ipynb":
        raise ExplainError(f"{path}: only a notebook has cells; expected FILE:LINE")
    if cell is None and path.suffix == ".ipynb":
        raise ExplainError(f"{path}: name the code cell, as `check` prints it: {path}:cell N:LINE")
    return Target(path, int(match["line"]), int(cell) if cell is not None else None)


def explain(target: Target) -> str:
    try:
        source = target.path.read_bytes()
    except OSError as error:
        raise ExplainError(f"{target.path}: {error.strerror or error}") from None
    rows = _Rows(None)
    line = target.line
    if target.cell is not None:
        from gacclint.notebook import NotebookError, read_notebook

        try:
            notebook = read_notebook(source)
        except NotebookError as error:
            raise ExplainError(f"{target.path}: {error}") from None
        try:
            line = notebook.program_row(target.cell, target.line)
        except ValueError as error:
            raise ExplainError(f"{target.path}: {error}") from None
        source, rows = notebook.program, _Rows(notebook)
    try:
        module = parse(source)
    except SourceError as error:
        raise ExplainError(f"{target.path}: {error}") from None
    model = build_model(module)
    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    loops = model.loops + model.step_helpers

    def span(loop: TrainingLoop) -> tuple[int, int]:
        where = positions[loop.node]
        return where.start.line, where.end.line

    holding = [loop for loop in loops if span(loop)[0] <= line <= span(loop)[1]]
    if not holding:
        found = ", ".join(rows.name(span(loop)[0]) for loop in loops) or "none"
        plain = [node for node in _loops_at(module, positions, line)]
        if plain:
            node = min(plain, key=lambda n: positions[n].end.line - positions[n].start.line)
            head = _first_code_line(node)
            return (f"{target.path}:{rows.name(positions[node].start.line)}: `{head}` is not a training loop: "
                    "its own body (nested def/class/lambda not counted) holds no backward, so no rule reads it "
                    "(a backward inside a helper is out of scope)\n"
                    f"  training loops of this file start at lines: {found}\n")
        raise ExplainError(f"{target.path}:{rows.name(line)}: no loop holds this line "
                           f"(training loops start at lines: {found})")
    loop = min(holding, key=lambda found: span(found)[1] - span(found)[0])
    findings = [f for f in lint_module(module, Selection()) if span(loop)[0] <= f.row <= span(loop)[1]]
    return _Render(target.path, loop, model, positions, findings, rows).text()


class _Rows:
    """How a row of the analysed program is named: itself in a .py file, `cell N:row` in a
    notebook (gacclint/notebook.py joins the code cells into one program)."""

    def __init__(self, notebook) -> None:
        self.notebook = notebook

    def name(self, row: int, column: int | None = None) -> str:
        if self.notebook is None:
            place = str(row)
        else:
            cell, cell_row = self.notebook.locate(row)
            place = f"cell {cell}:{cell_row}"
        return place if column is None else f"{place}:{column}"


def _first_code_line(node: cst.CSTNode) -> str:
    """The loop's header line, past the comments libcst keeps above it."""
    lines = [line.strip() for line in code_of(node).splitlines()]
    return next((line for line in lines if line and not line.startswith("#")), "")


def _loops_at(module: cst.Module, positions, line: int) -> list[cst.CSTNode]:
    found: list[cst.CSTNode] = []

    class Visitor(cst.CSTVisitor):
        def visit_For(self, node: cst.For) -> None:
            self._add(node)

        def visit_While(self, node: cst.While) -> None:
            self._add(node)

        @staticmethod
        def _add(node: cst.CSTNode) -> None:
            where = positions.get(node)
            if where is not None and where.start.line <= line <= where.end.line:
                found.append(node)

    module.visit(Visitor())
    return found


class _Render:
    def __init__(self, path: Path, loop: TrainingLoop, model: ModuleModel, positions, findings: list[Located],
                 rows: _Rows) -> None:
        self.path, self.loop, self.model, self.positions, self.findings = path, loop, model, positions, findings
        self.rows = rows
        self.lines: list[str] = []

    def line_of(self, node: cst.CSTNode) -> str:
        return self.rows.name(self.positions[node].start.line)

    def text(self) -> str:
        loop = self.loop
        head = _first_code_line(loop.node)
        kind = {Shape.PER_ITERATION: "micro-batch loop", Shape.INNER_WINDOW: "micro-step loop (window = the inner loop)",
                Shape.STEP_HELPER: "per-batch step helper (no loop)"}[loop.shape]
        self.lines.append(f"{self.path}:{self.line_of(loop.node)}: {kind}: `{head}`")
        if loop.shape is not Shape.STEP_HELPER:
            self._loop_facts()
        self._events()
        for variant in loop.variants:
            switches = ", ".join(f"{' '.join(text.split())} = {value}" for text, value in variant.switches) \
                or "no configuration switch"
            managed = f" (framework-managed: {', '.join(sorted(variant.frameworks))})" if variant.frameworks else ""
            self.lines.append(f"  variant [{switches}]{managed}:")
            for event in variant.events:
                self.lines.append(f"    {self.line_of(event.event.node):>5} {event.kind.value:<13} {self._guard(event)}")
            accumulating = [b for v, b in loop.accumulation_variants() if v is variant]
            if loop.shape is Shape.INNER_WINDOW and loop.window_k is not None:
                window = f"yes, the inner micro-step loop: k = `{code_of(loop.window_k)}`"
            else:
                window = f"yes, k = `{accumulating[0].k_text}`" if accumulating else "no"
            self.lines.append("          accumulation loop: " + window)
            # Each optimizer's own window, where its steps come at other times than another's
            # (RULES.md, *ownership*): the window rules judge those too.
            for own in loop.optimizer_windows.get(id(variant), ()):
                owners = sorted({step.event.receiver or "?" for step in own.steps})
                found = [b for v, b in loop.accumulation_variants() if v is own]
                self.lines.append(f"          optimizer {', '.join(f'`{o}`' for o in owners)}: accumulation loop: "
                                  + (f"yes, k = `{found[0].k_text}`" if found else "no"))
        self._rules()
        return "\n".join(self.lines) + "\n"

    def _loop_facts(self) -> None:
        loop = self.loop
        iterable = loop.iterable
        size = f", {iterable.literal_length} micro-batches from literals" if iterable.literal_length is not None else ""
        length = f", length `{iterable.len_text}`" if iterable.len_text else ""
        self.lines.append(f"  iterable: {iterable.kind.value}{length}{size}")
        counter = loop.counter
        if counter is not None:
            start = "unknown start" if counter.first_value is None else f"from {counter.first_value}"
            restarts = "carried across passes" if not counter.per_pass else \
                f"restarts each pass where `{counter.pass_reset_switched}`" if counter.pass_reset_switched \
                else "restarts each pass"
            self.lines.append(f"  counter: `{counter.text}` ({counter.source.value}, {start}, {restarts})")
        if loop.window_k is not None:
            self.lines.append(f"  window: `{code_of(loop.window_k)}` micro-steps")
        self.lines.append(f"  frameworks: {', '.join(sorted(loop.frameworks)) or 'none'}")
        if loop.flush_after_loop:
            self.lines.append("  a step after the loop handles the remainder (flush)")
        if loop.ddp:
            wraps = ", ".join(f"`{w.name}`" + (" (under a switch)" if w.conditional else "") for w in loop.ddp)
            sync = "turned off somewhere the loop reaches" if loop.sync_control else "never turned off"
            self.lines.append(f"  DistributedDataParallel: {wraps}; gradient sync {sync}")
        if loop.scalers_in_use:
            self.lines.append(f"  GradScaler in use: {', '.join(f'`{s}`' for s in sorted(loop.scalers_in_use))}")

    def _events(self) -> None:
        self.lines.append("  events:")
        for event in self.loop.events:
            detail = ""
            if event.kind is EventKind.BACKWARD and event.loss_flow is not None:
                divisors = ", ".join(f"/ {d.divisor_text}" for d in event.loss_flow.divisions)
                detail = f"  loss: {event.loss_flow.scaling.value}" + (f" ({divisors})" if divisors else "")
                if event.framework:
                    detail += f", via {event.framework}"
            elif event.receiver:
                detail = f"  on `{event.receiver}`"
            where = " (inner loop)" if event.in_inner_loop else ""
            statement = code_of(event.statement).strip().splitlines()[-1].strip()
            self.lines.append(f"    {self.line_of(event.node):>5} {event.kind.value:<13} `{statement[:60]}`{detail}{where}")

    def _guard(self, event: ResolvedEvent) -> str:
        guard = event.guard
        if guard.kind is GuardKind.NONE:
            return "every micro-batch"
        if guard.kind is GuardKind.OPAQUE:
            return "opaque guard (cannot be evaluated: no finding rests on it)"
        boundary = guard.boundary
        assert boundary is not None
        which = "on the boundary" if guard.kind is GuardKind.BOUNDARY else "between boundaries"
        return f"{which}: {self._boundary(boundary)}"

    @staticmethod
    def _boundary(boundary: Boundary) -> str:
        if boundary.framework:
            return "the framework's own boundary (`sync_gradients`)"
        parts = [f"k = `{boundary.k_text}`"]
        first = boundary.first_window
        parts.append("first window " + ({"k": "full", "1": "one micro-batch", "k-1": "k - 1 micro-batches",
                                          "k+1": "k + 1 micro-batches"}.get(
            first or "", "unknown")))
        tail = boundary.steps_tail
        parts.append("final partial window " + {True: "stepped", False: "never stepped", None: "unknown"}[tail])
        text = ", ".join(parts)
        if boundary.schedule is not None and boundary.schedule.evidence:
            text += f"; {boundary.schedule.evidence}"
        return text

    def _rules(self) -> None:
        self.lines.append("  rules:")
        fired = {f.code: f for f in self.findings}
        accumulating = any(True for _ in self.loop.accumulation_variants()) or self.loop.shape is Shape.INNER_WINDOW
        managed = all(v.managed for v in self.loop.variants) and self.loop.variants
        for rule in all_rules():
            code = rule.code
            if code in fired:
                found = fired[code]
                self.lines.append(f"    {code} fired at {self.rows.name(found.row, found.column)}: {found.message}")
                continue
            if code in _WINDOW_RULES and managed:
                reason = "a framework manages this loop's accumulation"
            elif code in _WINDOW_RULES and not accumulating:
                reason = "not an accumulation loop in any variant (no boundary to judge, or its guard is opaque)"
            else:
                reason = self._silence(code)
            self.lines.append(f"    {code} silent: {reason}")

    def _silence(self, code: str) -> str:
        """Why a rule whose loop shape applies stayed silent, where the model says it plainly."""
        loop = self.loop
        boundaries = [b for _, b in loop.accumulation_variants()]
        backwards = [e for e in loop.events if e.kind is EventKind.BACKWARD and e.loss_flow is not None]
        if code == "GA201" and backwards and all(e.loss_flow.scaling.value != "unscaled" for e in backwards):
            kinds = sorted({e.loss_flow.scaling.value for e in backwards})
            return f"the backward loss is {' / '.join(kinds)}, not unscaled"
        if code in {"GA202", "GA203"} and loop.flush_after_loop:
            return "a step after the loop handles the remainder" if code == "GA202" else \
                "the remainder's divisor matches its window, or is not the accumulation count"
        if code == "GA202" and loop.single_budgeted_pass:
            return ("the loop is the whole run and ends on a budget of steps: at most the run's last "
                    "micro-batches go unstepped")
        if code == "GA202" and boundaries:
            if all(b.steps_tail for b in boundaries):
                return "the final partial window is stepped (an end-of-data clause)"
            if any(b.steps_tail is None for b in boundaries):
                return "whether the final partial window is stepped cannot be evaluated"
            if any(b.counter is None or not b.counter.per_pass for b in boundaries):
                return "the boundary counter is carried across passes: windows straddle them"
            if loop.iterable.kind.value in {"stream", "unknown"}:
                return f"the loop reads a {loop.iterable.kind.value} iterable"
            if all(b.schedule is not None and b.schedule.whole_windows for b in boundaries if b.steps_tail is False):
                return "every pass ends on a boundary as the loop runs (a `break` keeps whole windows only)"
            if all(divides_evenly(loop, b, self.model.facts) for b in boundaries if b.steps_tail is False):
                return "the pass length divides by k (provable from literals)"
        if code == "GA203" and boundaries and not any(b.steps_tail for b in boundaries):
            return "the final partial window is not stepped (GA202's case)"
        if code == "GA104" and boundaries:
            firsts = {b.first_window for b in boundaries}
            return "the first window is full" if firsts == {"k"} else "the first window's size cannot be evaluated"
        return "its property does not hold on this loop"
