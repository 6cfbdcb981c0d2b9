"""One file, start to finish: gates, parse, loop model, rules, `# noqa`, fixes,
and the plain-data result (gacclint/diagnostics.py).

This is the part that imports libcst; the runner calls it only for files that
pass the textual gate, in worker processes when there are several. A
notebook is analysed as the program of its code cells (gacclint/notebook.py)
and its findings are moved back to cells at the end.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import io
import os
import sys
import threading
import tokenize
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import libcst as cst

from gacclint.diagnostics import MAX_ANALYSED_BYTES, CODES, SYNTAX_ERROR, UNUSED_NOQA, Diagnostic, Edit, FileResult, FixInfo, Job
from gacclint.engine import Located, SourceError, SyntaxProblem, cpython_tree, lint_module, parse
from gacclint.fixes.apply import allowed, fix_source, fixed_alone
from gacclint.gate import may_hold_training_loop, owns_backward_call
from gacclint.loops.lean import Unsupported, lean_module
from gacclint.loops.vocabulary import forget_code
from gacclint.noqa import add_noqa, noqa_row_map, suppress
from gacclint.selection import Selection
from gacclint.source import ReadError, WriteError, split_byte_lines, split_lines, write_source




# -- deep recursion ---------------------------------------------------------------
# libcst's tree and the loop model recurse once per nesting level; CPython's own
# parser accepts up to 200 nested brackets, which overflows Python's default
# limit of 1,000 frames. The analysis runs on a thread with a large stack and a
# higher limit, so such files are analysed rather than reported as too deep.
_STACK_BYTES = 512 * 1024 * 1024
_RECURSION_LIMIT = 30_000
_deep_thread: ThreadPoolExecutor | None = None
T = TypeVar("T")


def _forget_deep_thread() -> None:
    """A forked worker inherits the executor but not its thread: submitting
    to it would wait forever."""
    global _deep_thread
    _deep_thread = None


os.register_at_fork(after_in_child=_forget_deep_thread)


def _on_deep_stack(function: Callable[..., T], *args) -> T:
    global _deep_thread
    if _deep_thread is None:
        previous = threading.stack_size(_STACK_BYTES)
        try:
            _deep_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gacclint-analysis")
            _deep_thread.submit(lambda: None).result()  # the thread starts now, with that stack
        finally:
            threading.stack_size(previous)
    return _deep_thread.submit(function, *args).result()


@contextlib.contextmanager
def _deep_recursion() -> Iterator[None]:
    """The limit is process-wide; the main thread waits meanwhile, so only the
    big-stack thread runs under it. CPython's own parser runs before, under the
    usual limit: its RecursionError is what keeps pathological nesting (a
    20,000-term sum) away from libcst, which would take minutes on it."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, _RECURSION_LIMIT))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


# -- the program of a file -----------------------------------------------------------


class _CellSyntaxError(Exception):
    """A notebook cell that does not parse on its own: a GA001 finding in that cell."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def _cell_syntax_error(error) -> Diagnostic:
    """GA001 at the place of a notebook cell's syntax error (gacclint/notebook.py's NotebookSyntaxError)."""
    return Diagnostic(SYNTAX_ERROR, CODES[SYNTAX_ERROR], f"SyntaxError: {error.message}", error.row, error.column,
                      error.row, error.column, cell=error.cell)


class _Program:
    """What is analysed: a .py file's bytes, or a notebook's code cells as one program."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.data = data
        self.tail = b""  # blanks after the last line break of a .py file, left out of `source`
        self.notebook = None
        self.cell_errors: list[Diagnostic] = []  # GA001 of each notebook cell that does not parse
        if path.suffix == ".ipynb":
            from gacclint.notebook import NotebookError, NotebookSyntaxError, read_notebook

            try:
                self.notebook = read_notebook(data)
            except NotebookSyntaxError as error:
                raise _CellSyntaxError(_cell_syntax_error(error)) from None
            except NotebookError as error:
                raise ReadError(str(error)) from None
            self.source = self.notebook.program
            self.cell_errors = [_cell_syntax_error(error) for error in self.notebook.syntax_errors]
        else:
            # A last line of blanks with no line break after it (`...\n\n        `): libcst's tree
            # drops the empty line before it, so the analysis and any fix leave it aside and
            # `file_bytes` puts it back, byte for byte.
            cut = data.rfind(b"\n") + 1
            self.tail = data[cut:] if cut and data[cut:] and not data[cut:].strip(b" \t\f") else b""
            self.source = data[:len(data) - len(self.tail)]

    def file_bytes(self, program: bytes) -> bytes:
        """The file's new bytes for a changed program (a notebook changes only its changed cells)."""
        if self.notebook is None:
            return program + self.tail
        from gacclint.notebook import NotebookError

        try:
            return self.notebook.with_program(program)
        except NotebookError as error:
            raise WriteError(f"{error}; not written") from None

    def cells_libcst_rejects(self) -> str:
        """`; code cell 3 is the one`: where a notebook libcst cannot read, the code cells it cannot
        read alone and CPython can (empty for a .py file, or when no single cell is to blame)."""
        if self.notebook is None:
            return ""
        blamed = []
        for number, text in enumerate(self.notebook.cell_sources(), start=1):
            try:
                ast.parse(text)
                cst.parse_module(text)
            except cst.ParserSyntaxError:
                blamed.append(number)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                continue  # not valid Python alone (magics, a statement split over cells): not libcst's doing
        if not blamed:
            return ""
        return f"; libcst cannot read code cell{'s' if len(blamed) > 1 else ''} {', '.join(map(str, blamed))}"

    def row_name(self, row: int) -> str:
        """A program row as a person finds it in the file: `12`, or `cell 3:4` in a notebook."""
        if self.notebook is None:
            return str(row)
        cell, cell_row = self.notebook.locate(row)
        return f"cell {cell}:{cell_row}"

    def place(self, diagnostic: Diagnostic, lines: list[str]) -> Diagnostic:
        """Program rows -> the file's rows (a notebook's: cell and row in it)."""
        if self.notebook is None:
            return _with(diagnostic, source_line=_line_text(lines, diagnostic.row))
        cell, row = self.notebook.locate(diagnostic.row)
        end_cell, end_row = self.notebook.locate(diagnostic.end_row)
        end_column = diagnostic.end_column
        if end_cell != cell:  # the span ends in a later cell: stop it at the end of this line
            end_row, end_column = row, len(self.notebook.cell_line(diagnostic.row)) + 1
        fix = diagnostic.fix
        if fix is not None and not fix.pending:
            edits = []
            for edit in fix.edits:
                (start_cell, start), (stop_cell, stop) = self._edit_rows(edit)
                if start_cell != cell or stop_cell != cell:
                    edits = []  # an edit across cells has no place in one cell's text
                    break
                edits.append(Edit(edit.content, start, edit.column, stop, edit.end_column))
            fix = FixInfo(fix.applicability, fix.message, tuple(edits))
        noqa_row = None
        if diagnostic.noqa_row is not None:
            noqa_cell, noqa_row = self.notebook.locate(diagnostic.noqa_row)
            noqa_row = noqa_row if noqa_cell == cell else None
        return _with(diagnostic, cell=cell, row=row, end_row=end_row, end_column=end_column, fix=fix,
                     source_line=self.notebook.cell_line(diagnostic.row), noqa_row=noqa_row)

    def diff(self, path: Path, fixed_program: bytes, new_bytes: bytes | None) -> str:
        """The unified diff of a fix: of the file, or of each changed cell of a
        notebook (`path:cell N`, rows of the cell), as Ruff shows them; never
        of the program with its separator and placeholder lines."""
        if self.notebook is None or new_bytes is None:
            return _unified_diff(path, self.source, fixed_program)
        from gacclint.notebook import NotebookError, read_notebook

        try:
            after = read_notebook(new_bytes).cell_sources()
        except NotebookError:
            return _unified_diff(path, self.source, fixed_program)
        before = self.notebook.cell_sources()
        return "".join(_text_diff(f"{path}:cell {number}", old, new)
                       for number, (old, new) in enumerate(zip(before, after), start=1) if old != new)

    def _edit_rows(self, edit: Edit) -> tuple[tuple[int, int], tuple[int, int]]:
        assert self.notebook is not None
        start = self.notebook.locate(edit.row)
        if edit.end_row == edit.row:  # an insertion before this row
            return start, start
        # An end at column 1 of a row means "up to the end of the row above".
        last = self.notebook.locate(edit.end_row - 1)
        return start, (last[0], last[1] + 1)


def _with(diagnostic: Diagnostic, **changes) -> Diagnostic:
    from dataclasses import replace

    return replace(diagnostic, **changes)


def _line_text(lines: list[str], row: int) -> str:
    return lines[row - 1].rstrip("\r\n") if 0 < row <= len(lines) else ""


def _decode(source: bytes) -> str:
    return source.decode(_encoding_of(source), errors="replace")


def _encoding_of(source: bytes) -> str:
    """PEP 263's answer (`utf-8-sig` with a BOM); UTF-8 when the declaration is unusable."""
    try:
        return tokenize.detect_encoding(io.BytesIO(source).readline)[0]
    except SyntaxError:
        return "utf-8"


# -- analysis -------------------------------------------------------------------------


@dataclass
class _Analysed:
    module: cst.Module | None  # libcst's tree, when fixes were asked for and the findings need one
    findings: list[Located]
    syntax: SyntaxProblem | None = None
    # Why no fix can be made though fixes were asked for: valid Python that libcst cannot read
    # (the findings then come from CPython's tree, gacclint/loops/lean.py).
    unfixable: str | None = None


def _analyse(source: bytes, selection: Selection, tree: ast.Module | None = None, fixes: bool = True) -> _Analysed:
    """The loop model's findings in `source`, or why it does not parse.
    `tree`: CPython's tree of `source`, when the caller has it (and it passed gate 2).
    `fixes`: the caller fixes or shows fix edits, so it needs libcst's tree of the source."""
    if tree is not None:
        return _analyse_parsed(source, selection, None, tree, fixes)
    if not may_hold_training_loop(source):
        return _Analysed(None, [])
    if len(source) > MAX_ANALYSED_BYTES:
        raise SourceError(f"{len(source) / (1024 * 1024):.1f} MB is more than the "
                          f"{MAX_ANALYSED_BYTES // (1024 * 1024)} MB gacclint analyses in one file "
                          "(generated code?); skipped")
    tree, complaint = cpython_tree(source)
    if tree is not None and not owns_backward_call(tree, source):
        return _Analysed(None, [])
    return _analyse_parsed(source, selection, complaint, tree, fixes)


def _analyse_parsed(source: bytes, selection: Selection, complaint: SyntaxProblem | None,
                    tree: ast.Module | None, fixes: bool) -> _Analysed:
    """The model on CPython's tree read as a lean one (gacclint/loops/lean.py) when no fix
    is wanted and it can be; else on libcst's, once CPython's parser has seen `source`
    (and said `complaint`)."""
    with _deep_recursion():
        if tree is not None and not fixes:
            try:
                module, layout = lean_module(source.decode(_encoding_of(source)), tree)
                return _Analysed(None, lint_module(module, selection, layout))
            except (Unsupported, UnicodeDecodeError):
                pass  # libcst's parser reads it, or says why it cannot
        try:
            module = parse(source, complaint, prechecked=True)
        except SyntaxProblem as problem:
            return _Analysed(None, [], problem)
        except SourceError as error:
            if tree is None or complaint is not None:
                raise
            # Valid Python libcst cannot read (tab-and-space indentation): found all the same, never fixed.
            try:
                module, layout = lean_module(source.decode(_encoding_of(source)), tree)
                return _Analysed(None, lint_module(module, selection, layout), unfixable=str(error))
            except (Unsupported, UnicodeDecodeError):
                raise error from None
        return _Analysed(module, lint_module(module, selection))


def _unsuppressed(module: cst.Module, findings: list[Located]) -> list[Located]:
    """The findings no `# noqa` suppresses: a fix must leave those alone."""
    text = module.code
    kept = suppress([_plain(f) for f in findings], text, report_unused=False)
    left = {(d.code, d.row, d.column) for d in kept}
    return [f for f in findings if (f.code, f.row, f.column) in left]


def _plain(finding: Located, fix: FixInfo | None = None) -> Diagnostic:
    return Diagnostic(finding.code, CODES.get(finding.code, ""), finding.message, finding.row, finding.column,
                      finding.end_row, finding.end_column, fix)


def _fix_edits(module: cst.Module, finding: Located, lines: list[str]) -> tuple[Edit, ...]:
    """The fix as whole-line edits of the original text (Ruff's JSON shape)."""
    after = split_lines(fixed_alone(module, finding).decode(module.encoding))
    edits = []
    matcher = difflib.SequenceMatcher(a=lines, b=after, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            edits.append(Edit("".join(after[j1:j2]), i1 + 1, 1, i2 + 1, 1))
    return tuple(edits)


def _diagnostics(analysed: _Analysed, text: str, selection: Selection, edits: bool = True) -> list[Diagnostic]:
    """Plain findings in program rows, `# noqa` applied. `edits`: work out
    each fix's edits (rewriting the module once per fix); else they are left
    pending (gacclint/diagnostics.py's FixInfo)."""
    if analysed.syntax is not None:
        problem = analysed.syntax
        return [Diagnostic(SYNTAX_ERROR, CODES[SYNTAX_ERROR], f"SyntaxError: {problem.message}",
                           problem.row, problem.column, problem.row, problem.column)]
    report_unused = selection.selects(UNUSED_NOQA)
    if not analysed.findings:
        return suppress([], text, report_unused, selection=selection)
    unfixable = edits and analysed.unfixable is not None
    edits = edits and analysed.module is not None
    lines = split_lines(text)
    found = []
    for finding in analysed.findings:
        fix = None
        if finding.fix is not None and not unfixable:
            fix = FixInfo(finding.fix.applicability.value, finding.fix.message,
                          _fix_edits(analysed.module, finding, lines) if edits else None)  # type: ignore[arg-type]
        found.append(_plain(finding, fix))
    kept = suppress(found, text, report_unused, selection=selection)
    moved = noqa_row_map(text) if kept else {}
    return [_with(d, noqa_row=moved[d.row]) if d.row in moved else d for d in kept]


def analyse_source(source: bytes, selection: Selection) -> list[Diagnostic]:
    """The findings in one Python source, in its rows (the flake8 plugin's entry)."""
    text = _decode(source)
    lines = split_lines(text)
    def analyse(edits: bool) -> list[Diagnostic]:
        analysed = _analyse(source, selection, fixes=edits)
        with _deep_recursion():
            return _diagnostics(analysed, text, selection, edits)

    diagnostics = [_with(d, source_line=_line_text(lines, d.row)) for d in _on_deep_stack(analyse, False)]
    resolve_on_demand(diagnostics, lambda: _on_deep_stack(analyse, True))
    return diagnostics


def resolve_on_demand(diagnostics: list[Diagnostic], compute: Callable[[], list[Diagnostic]]) -> None:
    """Pending fix edits among `diagnostics` are worked out, all at once, when
    one is first asked for: `compute` analyses the same source again with edits."""
    pending = [d for d in diagnostics if d.fix is not None and d.fix.pending]
    if not pending:
        return

    def resolve() -> None:
        fill_edits(pending, compute())

    for diagnostic in pending:
        diagnostic.fix.on_demand(resolve)


def fill_edits(pending: list[Diagnostic], computed: list[Diagnostic]) -> None:
    """Give pending fixes the edits of the same findings in `computed` (the
    same source analysed with edits); a finding not found there gets none."""
    by_place: dict[tuple, list[Diagnostic]] = {}
    for diagnostic in computed:
        by_place.setdefault(_place_key(diagnostic), []).append(diagnostic)
    for diagnostic in pending:
        if diagnostic.fix is None or not diagnostic.fix.pending:
            continue
        twins = by_place.get(_place_key(diagnostic))
        twin = twins.pop(0) if twins else None
        edits = twin.fix.edits if twin is not None and twin.fix is not None and not twin.fix.pending else ()
        diagnostic.fix.with_edits(edits)


def _place_key(diagnostic: Diagnostic) -> tuple:
    return (diagnostic.code, diagnostic.cell, diagnostic.row, diagnostic.column, diagnostic.end_row,
            diagnostic.end_column, diagnostic.message)


# -- one file -------------------------------------------------------------------------


def run_job(job: Job, tree: ast.Module | None = None) -> FileResult:
    """Never raises (but under --debug): whatever goes wrong becomes `error`.
    `tree`: CPython's tree of the job's source, when the caller parsed it and
    it passed gate 2 (the runner's workers do, before importing this module)."""
    result = FileResult(job.path)
    unchanged = "; not changed" if job.mode != "check" else ""
    try:
        program = _Program(job.path, job.source)
        _on_deep_stack(_fix if job.mode == "fix" else _check, job, program, result, tree)
        forget_code()  # the module-wide memo holds the file's tree: freed now, not with the next file
        if program.cell_errors:  # as a file that does not parse is reported, whatever is selected
            result.diagnostics = sorted(program.cell_errors + result.diagnostics,
                                        key=lambda d: (d.cell or 0, d.row, d.column))
    except _CellSyntaxError as error:
        result.diagnostics = [error.diagnostic]
    except (ReadError, SourceError) as error:
        result.error = str(error)
    except RecursionError:
        result.error = "nested too deeply to analyse" + unchanged
    except MemoryError:
        result.error = "out of memory while analysing it" + (unchanged or "; skipped")
    except Exception as error:  # noqa: BLE001 - one file's bug must not stop the run
        if job.debug:
            raise
        what = "not changed" if unchanged else "skipped"
        result.error = f"internal error, file {what} ({describe(error)}); rerun with --debug"
    return result


def _check(job: Job, program: _Program, result: FileResult, tree: ast.Module | None) -> None:
    text = _decode(program.source)
    analysed = _analyse(program.source, job.selection, tree, fixes=job.edits or job.mode != "check")
    with _deep_recursion():
        _report(job, program, result, text, analysed)


def _report(job: Job, program: _Program, result: FileResult, text: str, analysed: _Analysed) -> None:
    diagnostics = _diagnostics(analysed, text, job.selection, job.edits or job.mode != "check")
    if job.mode == "add-noqa" and diagnostics:
        wanted = [d for d in diagnostics if d.code not in (SYNTAX_ERROR, UNUSED_NOQA)]
        new_text, result.noqa_added = add_noqa(text, wanted)
        if result.noqa_added:
            new_source = new_text.encode(_encoding_of(program.source))
            if job.write:
                write_source(job.path, program.file_bytes(new_source), job.source)
            diagnostics = [d for d in diagnostics if d not in wanted]
    lines = split_lines(text)
    result.diagnostics = [program.place(d, lines) for d in diagnostics]


def _fix(job: Job, program: _Program, result: FileResult, tree: ast.Module | None) -> None:
    analysed = _analyse(program.source, job.selection, tree)
    with _deep_recursion():
        _fix_analysed(job, program, result, analysed)


def _fix_analysed(job: Job, program: _Program, result: FileResult, analysed: _Analysed) -> None:
    outcome = None
    fixed, final, applied = program.source, analysed, 0
    if analysed.unfixable is not None:
        why = analysed.unfixable + program.cells_libcst_rejects()
        result.dropped = [f"{program.row_name(finding.row)}: fix for {finding.code} not made: {why}"
                          for finding in analysed.findings if finding.fix is not None and allowed(finding, job.unsafe)]
    if analysed.module is not None and analysed.findings:
        outcome = fix_source(program.source, job.selection, job.unsafe, module=analysed.module, keep=_unsuppressed)
        result.dropped = [f"{program.row_name(dropped.finding.row)}: fix for {dropped.finding.code} dropped: {dropped.reason}"
                          for dropped in outcome.dropped]
        if not outcome.converged:  # said, never silent: the findings left are reported below too
            left = [f for f in outcome.remaining if allowed(f, job.unsafe)]
            result.dropped.append(f"{program.row_name(left[0].row if left else 1)}: fixes stopped after {outcome.passes} passes "
                                  "without reaching a fixpoint; still fixable: "
                                  + (", ".join(f"{f.code} at row {f.row}" for f in left) or "none"))
        final = _Analysed(outcome.module, outcome.remaining)
        if outcome.changed:
            fixed, applied = outcome.fixed, len(outcome.applied)
    fixed, final, removed = _without_unused_noqa(fixed, final, job.selection)
    placer = program  # where the findings left are placed: in the fixed notebook's cells once fixed
    if fixed != program.source:
        refusal = unreproducible(program.source) if outcome is not None and outcome.changed else None
        new_bytes = None
        if refusal is None:
            try:
                new_bytes = program.file_bytes(fixed)
                if job.write:
                    write_source(job.path, new_bytes, job.source)
            except WriteError as error:
                refusal = str(error)
        if refusal is not None:
            # Nothing was fixed: report what the file held when it was read.
            result.error, result.dropped = refusal, []
            final = (_Analysed(analysed.module, _unsuppressed(analysed.module, analysed.findings))
                     if analysed.module is not None else analysed)
        else:
            result.fixed, result.fixed_source = applied + removed, fixed
            if job.diff:
                result.diff = program.diff(job.path, fixed, new_bytes)
            if program.notebook is not None and new_bytes is not None:
                try:
                    placer = _Program(job.path, new_bytes)
                except (_CellSyntaxError, ReadError):
                    pass  # cannot happen for a notebook this fix wrote; its rows then stay approximate
    text = _decode(fixed if result.fixed else program.source)
    result.diagnostics = [placer.place(d, split_lines(text)) for d in _diagnostics(final, text, job.selection)]


def _without_unused_noqa(source: bytes, analysed: _Analysed, selection: Selection) -> tuple[bytes, _Analysed, int]:
    """GA002's fix, after the loop model's fixes (which may leave a `# noqa` with
    nothing to suppress): the unused codes taken out of their directives; the
    source re-analysed. Only when GA002 is selected, and never a suppressed GA002."""
    if not selection.selects(UNUSED_NOQA):
        return source, analysed, 0
    text = _decode(source)
    unused = [d for d in _diagnostics(analysed, text, selection, edits=False)
              if d.code == UNUSED_NOQA and d.fix is not None and d.fix.edits]
    if not unused:
        return source, analysed, 0
    lines = split_lines(text)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(row: int, column: int) -> int:
        return starts[min(row, len(lines) + 1) - 1] + column - 1

    edits = sorted((edit for d in unused for edit in d.fix.edits), key=lambda e: (e.row, e.column), reverse=True)
    for edit in edits:  # one directive per line: the edits never overlap
        text = text[:offset(edit.row, edit.column)] + edit.content + text[offset(edit.end_row, edit.end_column):]
    fixed = text.encode(_encoding_of(source))
    return fixed, _analyse(fixed, selection), len(unused)


def _unified_diff(path: Path, before: bytes, after: bytes) -> str:
    return _text_diff(f"{path}", _decode(before), _decode(after))


def _text_diff(name: str, before: str, after: str) -> str:
    """A unified diff that `patch` reads: a last line without its line
    ending is followed by git's `\\ No newline at end of file` marker."""
    lines = difflib.unified_diff(split_lines(before), split_lines(after), f"a/{name}", f"b/{name}")
    return "".join(line if line.endswith(("\n", "\r")) else line + "\n\\ No newline at end of file\n"
                   for line in lines)


def unreproducible(source: bytes) -> str | None:
    """Why a fix of `source` would change bytes outside its edits, or None.

    A fix writes the whole module back from libcst's tree, and libcst loses a
    few things CPython accepts: a form feed before the code on a line, the
    last of lone-CR line endings. Such a file is not fixed rather than changed
    where no fix asked for it."""
    regenerated = parse(source).bytes
    if regenerated == source:
        return None
    lines, again = split_byte_lines(source), split_byte_lines(regenerated)
    row = next((i for i, (a, b) in enumerate(zip(lines, again)) if a != b), min(len(lines), len(again)))
    line = lines[row] if row < len(lines) else b""
    what = ("a form feed before code" if b"\f" in line else
            "a final lone CR line ending" if line.endswith(b"\r") else "every byte")
    return f"not fixed: libcst would not keep {what} on line {row + 1}, outside the fix"


def describe(error: BaseException) -> str:
    """`Type: message` in one short line, whatever the exception holds: a libcst
    node in its arguments (a KeyError of a metadata lookup) would print as the
    node's whole tree, and a deep one would raise RecursionError right here."""
    parts = []
    for argument in error.args:
        if isinstance(argument, cst.CSTNode):
            parts.append(f"<{type(argument).__name__} node>")
            continue
        try:
            parts.append(str(argument))
        except Exception:  # noqa: BLE001 - RecursionError included
            parts.append(f"<{type(argument).__name__}>")
    text = ", ".join(parts).strip()
    text = text.splitlines()[0] if text else ""
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
