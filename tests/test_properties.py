"""Property tests: whatever program gacclint reads, `check` does not crash and a
`fix` parses, is stable, and changes nothing outside the spans its edits name.

Programs come from hypothesmith (random programs of the whole grammar, alone
and spliced into a training loop) and from a generator of training loops
built from the statements the rules read (clears, steps, backwards,
divisions, boundaries, scalers, clipping, schedulers, DDP), with random
formatting: indentation, CRLF or mixed line endings, tabs, form feeds,
comments, a BOM, no final newline.

The oracle (`assert_sound`) is shared with tests/test_mutations.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from unittest import mock

import hypothesmith
import libcst as cst
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from libcst.metadata import MetadataWrapper, PositionProvider

import gacclint.fixes.apply as apply_module
from gacclint.engine import Located, SourceError, lint_source, parse
from gacclint.fixes.apply import FixOutcome, fix_source
from gacclint.fixes.edits import Edit, MoveAfter, MoveBefore, touched
from gacclint.analysis import Job, run_job, unreproducible
from gacclint.selection import Selection

# CI: a fixed, deterministic sample. GACCLINT_FUZZ=N runs N random examples per test instead.
FUZZ = int(os.environ.get("GACCLINT_FUZZ", "0"))
SETTINGS = settings(max_examples=FUZZ or 60, deadline=None, derandomize=not FUZZ, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
GRAMMAR = settings(SETTINGS, max_examples=FUZZ or 40)
ALL = Selection()


# --- the oracle ------------------------------------------------------------------


def compile_error(source: bytes) -> str | None:
    """CPython's complaint when compiling (never running) `source`; None if it compiles."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(source, "<source>", "exec", dont_inherit=True)
    except SyntaxError as error:
        return f"{error.msg} at {error.lineno}:{error.offset}"
    except (ValueError, RecursionError, MemoryError) as error:
        return f"{type(error).__name__}: {error}"
    return None


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def lines_of(text: str) -> list[str]:
    """Lines as Python counts them, with their endings (str.splitlines also splits at \f, \v, \x1c...)."""
    return _LINE.findall(text)


def _regions(module: cst.Module, edits: tuple[Edit, ...]) -> list[tuple[int, int]]:
    """1-based inclusive line ranges of the original that the edits name: each
    touched node's lines, with the comment and blank lines above a statement
    (they travel with it)."""
    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    regions = []
    for edit in edits:
        nodes = touched(edit)
        if isinstance(edit, (MoveAfter, MoveBefore)):
            nodes = [edit.statement, edit.anchor]
        for node in nodes:
            span = positions[node]  # KeyError: an edit names a node that is not in the module
            leading = len(getattr(node, "leading_lines", ()))
            regions.append((span.start.line - leading, span.end.line))
    return regions


def _outside_is_kept(before: list[str], after: list[str], regions: list[tuple[int, int]]) -> str | None:
    """None if every run of original lines outside `regions` is in `after`,
    unchanged, in order, the first at the start and the last at the end.

    A file without a final newline keeps none: when an edit removes the last
    line, the line that becomes last loses its ending, and may."""
    inside = {line for start, end in regions for line in range(start, end + 1)}
    gaps, start = [], None
    for line in range(1, len(before) + 2):
        if line <= len(before) and line not in inside:
            start = line if start is None else start
        elif start is not None:
            gaps.append((start, line - 1))
            start = None
    unterminated = bool(after) and not after[-1].endswith(("\n", "\r"))

    def same(chunk: list[str], at: int) -> bool:
        if at < 0 or at + len(chunk) > len(after):
            return False
        for offset, line in enumerate(chunk):
            other = after[at + offset]
            if unterminated and at + offset == len(after) - 1:
                line = line.rstrip("\r\n")
            if line != other:
                return False
        return True

    position = 0
    for first, last in gaps:
        chunk = before[first - 1:last]
        if first == 1:
            at = 0 if same(chunk, 0) else -1
        elif last == len(before):
            at = len(after) - len(chunk)
            at = at if at >= position and same(chunk, at) else -1
        else:
            at = next((i for i in range(position, len(after) - len(chunk) + 1) if same(chunk, i)), -1)
        if at < position:
            return f"original lines {first}-{last} (outside the edited lines) changed or moved: {chunk!r}"
        position = at + len(chunk)
    return None


@dataclass
class Audit:
    """Every single fix that `fix_source` tried, with what was wrong with it."""

    tried: int = 0
    problems: list[str] = field(default_factory=list)


@contextlib.contextmanager
def audited() -> Iterator[Audit]:
    """Watch each fix `fix_source` applies on its own: it must stay inside its edits."""
    audit = Audit()
    real = apply_module.fixed_alone

    def watched(module: cst.Module, finding: Located) -> bytes:
        result = real(module, finding)
        audit.tried += 1
        assert finding.fix is not None
        before = lines_of(module.code)
        after = lines_of(result.decode(module.encoding))
        try:
            complaint = _outside_is_kept(before, after, _regions(module, finding.fix.edits))
        except KeyError:
            complaint = "an edit names a node that is not in the module"
        if complaint:
            audit.problems.append(f"{finding.code} at {finding.row}: {complaint}")
        return result

    with mock.patch.object(apply_module, "fixed_alone", watched):
        yield audit


def assert_sound(source: bytes, unsafe: bool = False, selection: Selection = ALL) -> FixOutcome | None:
    """check does not crash; fix parses (libcst and CPython), is stable under a
    second fix, drops no fix for not parsing, and changes nothing outside the
    lines its edits name. Returns the outcome, or None if the source does not parse."""
    with audited() as audit:
        try:
            outcome = fix_source(source, selection, unsafe)  # checks it first
        except SourceError:
            return None  # reported to the user in one line; nothing to fix
    assert not audit.problems, audit.problems
    unparsed = [f"{d.finding.code} at {d.finding.row}: {d.reason}" for d in outcome.dropped if "does not parse" in d.reason]
    assert not unparsed, unparsed
    if outcome.changed:
        # Each fix was audited against libcst's text of the module before it,
        # which is the file's own bytes, or else the runner does not write it
        # (runner.unreproducible; tests/test_bad_input.py).
        parse(outcome.fixed)
        if compile_error(source) is None:
            assert compile_error(outcome.fixed) is None, (compile_error(outcome.fixed), outcome.fixed.decode())
        again = fix_source(outcome.fixed, selection, unsafe)
        assert not again.changed, ("a second fix changes it again", [f.code for f in again.applied],
                                   outcome.fixed.decode(), again.fixed.decode())
    return outcome


# --- generated training loops -----------------------------------------------------

SIMPLE = [
    "loss = loss_fn(model(x), y)",
    "loss = criterion(output, target)",
    "output = model(x)",
    "loss = loss / k",
    "loss = loss / accumulation_steps",
    "loss /= k",
    "loss = loss_fn(model(x), y) / k",
    "loss.backward()",
    "scaler.scale(loss).backward()",
    "accelerator.backward(loss)",
    "(loss + loss2).backward()",
    "loss2 = loss_fn(model2(x), y)",
    "loss.backward(retain_graph=True)",
    "optimizer.step()",
    "scaler.step(optimizer)",
    "scaler.update()",
    "scaler.unscale_(optimizer)",
    "optimizer.zero_grad()",
    "optimizer.zero_grad(set_to_none=True)",
    "model.zero_grad()",
    "scheduler.step()",
    "lr_scheduler.step()",
    "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)",
    "total_loss += loss",
    "total_loss += loss.item()",
    "losses.append(loss)",
    "step += 1",
    "print(loss.item())",
    "continue",
    "break",
    "pass",
    "x, y = x.to(device), y.to(device)",
    "optimizer.step(); optimizer.zero_grad()",
]
GUARDS = [
    "if (i + 1) % k == 0:",
    "if (i + 1) % accumulation_steps == 0:",
    "if i % k == 0:",
    "if (i + 1) % k == 0 or (i + 1) == len(loader):",
    "if (i + 1) % k != 0:",
    "if args.fp16:",
    "if step % k == 0:",
    "if accelerator.sync_gradients:",
    "if opaque(i):",
]
CONTEXTS = [
    "with torch.autocast('cuda'):",
    "with model.no_sync():",
    "with accelerator.accumulate(model):",
    "with torch.no_grad():",
    "try:",
]
HEADERS = [
    "for i, (x, y) in enumerate(loader):",
    "for i, (x, y) in enumerate(train_loader):",
    "for step, batch in enumerate(dataloader):",
    "for x, y in loader:",
    "for i in range(len(loader)):",
    "for i, (x, y) in enumerate(tqdm(loader)):",
    "while True:",
]
PREAMBLES = [
    "import torch",
    "k = 4",
    "accumulation_steps = 8",
    "scaler = torch.cuda.amp.GradScaler()",
    "model = DDP(model)",
    "model = torch.nn.parallel.DistributedDataParallel(model)",
    "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)",
    "scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)",
    "total_loss = 0",
    "losses = []",
]


@dataclass(frozen=True)
class Style:
    indent: str
    newline: str
    mixed: bool  # some lines end in the other line ending
    final_newline: bool
    bom: bool
    trailing_comments: bool
    form_feeds: str | None  # "own_line" (a page break) or "before_code" (libcst drops those)


styles = st.builds(
    Style,
    indent=st.sampled_from(["    ", "  ", "\t", "        "]),
    newline=st.sampled_from(["\n", "\r\n"]),
    mixed=st.booleans(),
    final_newline=st.booleans(),
    bom=st.booleans(),
    trailing_comments=st.booleans(),
    form_feeds=st.sampled_from([None, None, "own_line", "before_code"]),
)


def _block(depth: int) -> st.SearchStrategy[list]:
    """A block: simple statements, comments, blank lines and (while depth allows) compound ones."""
    simple = st.sampled_from(SIMPLE).map(lambda s: ("simple", s))
    extra = st.sampled_from([("comment", "# a comment"), ("blank", "")])
    if depth <= 0:
        item = st.one_of(simple, simple, extra)
    else:
        compound = st.tuples(st.sampled_from(GUARDS + CONTEXTS), st.deferred(lambda: _block(depth - 1))).map(
            lambda pair: ("compound", pair[0], pair[1]))
        item = st.one_of(simple, simple, compound, extra)
    return st.lists(item, min_size=1, max_size=7)


def _lines_of_block(block: list, depth: int) -> list[tuple[int, str]]:
    """(depth, text) lines of a random block."""
    lines: list[tuple[int, str]] = []
    if not any(item[0] in ("simple", "compound") for item in block):
        lines.append((depth, "pass"))
    for item in block:
        if item[0] == "compound":
            lines.append((depth, item[1]))
            lines += _lines_of_block(item[2], depth + 1)
            if item[1] == "try:":
                lines += [(depth, "except RuntimeError:"), (depth + 1, "pass")]
        else:
            lines.append((depth, item[1]))
    return lines


FORWARDS = [
    [(0, "loss = loss_fn(model(x), y)")],
    [(0, "output = model(x)"), (0, "loss = criterion(output, y)")],
    [(0, "with torch.autocast('cuda'):"), (1, "loss = loss_fn(model(x), y)")],
    [(0, "loss = loss_fn(model(x), y)"), (0, "loss2 = loss_fn(model2(x), y)")],
    [(0, "outputs = model(**batch)"), (0, "loss = outputs.loss")],
]
DIVISIONS = [None, "loss = loss / k", "loss /= k", "loss = loss / accumulation_steps", "loss = loss / len(loader)"]
BACKWARDS = ["loss.backward()", "scaler.scale(loss).backward()", "accelerator.backward(loss)",
             "(loss + loss2).backward()", "loss.backward(retain_graph=True)"]
BOUNDARIES = [None, "if (i + 1) % k == 0:", "if (i + 1) % accumulation_steps == 0:", "if i % k == 0:",
              "if (i + 1) % k == 0 or (i + 1) == len(loader):", "if step % k == 0:",
              "if accelerator.sync_gradients:", "if opaque(i):", "if (i + 1) % k != 0:"]
STEP_PARTS = ["scaler.unscale_(optimizer)", "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)",
              "optimizer.step()", "scaler.step(optimizer)", "scaler.update()", "scheduler.step()",
              "optimizer.zero_grad()", "model.zero_grad()"]
RECORDS = ["total_loss += loss", "total_loss += loss.item()", "losses.append(loss)", "losses.append(output)"]


@st.composite
def _skeleton(draw) -> list[tuple[int, str]]:
    """A nearly right accumulation loop body: forward, division, backward, a
    boundary with some of the step statements in some order; each part may be
    missing, misplaced or repeated, which is what the rules look for."""
    body: list[tuple[int, str]] = []
    if draw(st.booleans()):
        body.append((0, draw(st.sampled_from(["optimizer.zero_grad()", "model.zero_grad()"]))))
    body += draw(st.sampled_from(FORWARDS))
    division = draw(st.sampled_from(DIVISIONS))
    if division:
        body.append((0, division))
    backward = [(0, draw(st.sampled_from(BACKWARDS)))]
    if draw(st.integers(0, 4)) == 0:
        backward = [(0, "with model.no_sync():"), (1, backward[0][1])]
    body += backward
    if draw(st.integers(0, 2)) == 0:
        body.append((0, draw(st.sampled_from(RECORDS))))
    parts = draw(st.permutations(STEP_PARTS))
    kept = [part for part in parts if draw(st.integers(0, 2))]
    inside = [part for part in kept if draw(st.integers(0, 3))]
    outside = [part for part in kept if part not in inside]
    boundary = draw(st.sampled_from(BOUNDARIES))
    if boundary is None:
        body += [(0, part) for part in inside + outside]
    else:
        body += [(0, part) for part in outside[:1]]
        body.append((0, boundary))
        body += [(1, part) for part in inside] or [(1, "pass")]
        body += [(0, part) for part in outside[1:]]
    # A few random statements anywhere at the loop's own level.
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(body)))
        while at < len(body) and body[at][0] > 0:
            at += 1  # never between a header and its body
        body.insert(at, (0, draw(st.sampled_from(SIMPLE[:-6] + ["# a comment", ""]))))
    return body


@st.composite
def training_programs(draw) -> bytes:
    style = draw(styles)
    lines: list[tuple[int, str]] = [(0, p) for p in draw(st.lists(st.sampled_from(PREAMBLES), max_size=4, unique=True))]
    base = 0
    if draw(st.booleans()):
        lines.append((0, "def train(model, loader, optimizer, k):"))
        base = 1
    if draw(st.booleans()):
        lines.append((base, "for epoch in range(epochs):"))
        base += 1
    lines.append((base, draw(st.sampled_from(HEADERS))))
    if draw(st.integers(0, 3)):
        lines += [(base + 1 + depth, text) for depth, text in draw(_skeleton())]
    else:
        lines += _lines_of_block(draw(_block(2)), base + 1)
    if draw(st.booleans()):
        lines.append((base, draw(st.sampled_from(["optimizer.step()", "optimizer.zero_grad()", "print('done')"]))))

    out = []
    previous = ""
    for number, (depth, text) in enumerate(lines):
        prefix = style.indent * depth if text else ""
        if style.form_feeds == "own_line" and number % 5 == 3:
            out.append("\f" + style.newline)
        # Not before the first line of a block: libcst cannot parse that (see test_bad_input).
        if style.form_feeds == "before_code" and text and number % 5 == 3 and not previous.endswith(":"):
            prefix = "\f" + prefix
        previous = text if text and not text.startswith("#") else previous
        if style.trailing_comments and text and not text.startswith("#") and number % 3 == 1:
            text += "  # note"
        newline = style.newline
        if style.mixed and number % 4 == 2:
            newline = "\n" if newline == "\r\n" else "\r\n"
        out.append(prefix + text + newline)
    text = "".join(out)
    if not style.final_newline:
        text = text.rstrip("\r\n")
    data = text.encode()
    return b"\xef\xbb\xbf" + data if style.bom else data


@SETTINGS
@given(training_programs(), st.booleans())
def test_generated_training_loops_are_checked_and_fixed_soundly(source: bytes, unsafe: bool) -> None:
    assume(compile_error(source) is None)
    outcome = assert_sound(source, unsafe)
    # The whole way, through the file system: the file ends up as it was or as
    # the audited fix, and only a file libcst writes back byte for byte is fixed.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "train.py")
        path.write_bytes(source)
        report = run_job(Job(path, source, ALL, "fix", unsafe, write=True))
        written = path.read_bytes()
    if outcome is None or not outcome.changed:
        assert written == source and not report.fixed
    elif unreproducible(source) is None:
        assert written == outcome.fixed == report.fixed_source and report.error is None
    else:
        assert written == source and not report.fixed and report.error.startswith("not fixed: libcst")


# --- hypothesmith: programs of the whole grammar ------------------------------------

# hypothesmith compiles what it generates: silence CPython's SyntaxWarnings on it.
pytestmark_grammar = pytest.mark.filterwarnings("ignore::SyntaxWarning")
LOOP = "for i, (x, y) in enumerate(loader):\n{body}    loss.backward()\n    if (i + 1) % k == 0:\n        optimizer.step()\n"


def _indented(program: str) -> str:
    return "".join("    " + line if line.strip() else line for line in program.splitlines(keepends=True))


@pytestmark_grammar
@GRAMMAR
@given(hypothesmith.from_grammar())
def test_check_never_crashes_on_generated_programs(program: str) -> None:
    source = program.encode("utf-8", "surrogatepass")
    for candidate in (source, source + b"\n" + LOOP.format(body="").encode()):
        try:
            lint_source(candidate, ALL)
        except SourceError:
            pass


@pytestmark_grammar
@GRAMMAR
@given(hypothesmith.from_node(), st.booleans())
def test_generated_statements_inside_a_training_loop(program: str, unsafe: bool) -> None:
    """A random module's statements become the loop body: the loop model meets every kind of node."""
    source = LOOP.format(body=_indented(program if program.endswith("\n") else program + "\n")).encode("utf-8", "surrogatepass")
    assume(compile_error(source) is None)
    assert_sound(source, unsafe)


# --- the oracle itself -----------------------------------------------------------------


def test_oracle_accepts_an_edit_inside_its_lines_and_rejects_one_outside() -> None:
    before = ["a\n", "b\n", "c\n", "d\n"]
    assert _outside_is_kept(before, ["a\n", "B\n", "new\n", "c\n", "d\n"], [(2, 2)]) is None
    assert _outside_is_kept(before, ["a\n", "b\n", "c\n", "D\n"], [(2, 2)]) is not None
    assert _outside_is_kept(before, ["a\n", "b\n", "c\r\n", "d\n"], [(2, 2)]) is not None
    assert _outside_is_kept(before, ["a\n", "c\n", "b\n", "d\n"], [(2, 2)]) is not None  # c moved
    assert _outside_is_kept(before, ["a\n", "c\n", "b\n", "d\n"], [(2, 3)]) is None
    assert _outside_is_kept(before, ["x\n", "a\n", "b\n", "c\n", "d\n"], [(2, 2)]) is not None
    # no final newline: the line that becomes last loses its ending with the removed one
    assert _outside_is_kept(["a\r\n", "b\r\n", "c"], ["a\r\n", "b"], [(3, 3)]) is None
    assert _outside_is_kept(["a\r\n", "b\r\n", "c"], ["a\r\n", "B"], [(3, 3)]) is not None


@pytest.mark.parametrize("unsafe", [False, True])
def test_oracle_sees_every_fix_of_a_buggy_loop(unsafe: bool) -> None:
    source = (b"for i, (x, y) in enumerate(loader):\r\n\tloss = loss_fn(model(x), y)\r\n\tloss.backward()\r\n"
              b"\tif (i + 1) % k == 0:\r\n\t\toptimizer.step()\f\r\n# end\n")
    with audited() as audit:
        outcome = fix_source(source, ALL, unsafe)
    assert audit.tried >= 1 and not audit.problems
    assert outcome.changed
    assert_sound(source, unsafe)
