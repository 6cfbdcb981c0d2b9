"""What a run produces, as plain data: no libcst nodes, so results can cross a
process boundary, be cached on disk, and be printed in any output format
without importing the analysis (a warm run never imports libcst).

Rows and columns are 1-based. For a notebook, `cell` is the 1-based number of
the code cell (counting code cells only, as Ruff does) and rows are lines of
that cell; for a `.py` file `cell` is None and rows are lines of the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gacclint.selection import Selection

# A file that may hold a training loop is parsed and analysed only below this
# size: the largest file of a 22-repository corpus is a third of it, and a
# generated module of several megabytes would take minutes. A larger file is
# reported and skipped (one without `backward(` is never parsed at all).
MAX_ANALYSED_BYTES = 1024 * 1024

# Codes that are not rules of the loop model (no file under gacclint/rules/):
SYNTAX_ERROR = "GA001"  # the file does not parse; always reported, never selectable away
UNUSED_NOQA = "GA002"   # a `# noqa` naming gacclint codes that suppressed nothing; opt-in

# Every code with its name, without importing the rules (and libcst): a warm,
# cached run validates `--select` with this. tests/test_codes.py keeps it equal
# to the rule classes.
CODES: dict[str, str] = {
    SYNTAX_ERROR: "syntax-error",
    UNUSED_NOQA: "unused-noqa",
    "GA101": "missing-zero-grad",
    "GA102": "zero-grad-defeats-accumulation",
    "GA103": "zero-grad-before-step",
    "GA104": "boundary-off-by-one",
    "GA201": "unscaled-accumulated-loss",
    "GA202": "dropped-final-window",
    "GA203": "misscaled-final-window",
    "GA204": "double-scaled-loss",
    "GA301": "double-built-graph",
    "GA302": "loss-never-backpropagated",
    "GA303": "graph-kept-across-iterations",
    "GA401": "scheduler-per-micro-batch",
    "GA402": "clip-before-unscale",
    "GA403": "clip-per-micro-batch",
    "GA404": "scaler-update-per-micro-batch",
    "GA501": "ddp-sync-every-micro-batch",
}
# The codes that are not rules of the loop model have no rule class to document them.
BUILTIN_DESCRIPTIONS = {
    SYNTAX_ERROR: (
        "Reports a file that gacclint cannot parse.",
        "The file (or a notebook cell) is not valid Python, so none of its training loops were checked. "
        "Every other rule is silent on the file until the syntax error is fixed. This is always reported "
        "and cannot be deselected.",
    ),
    UNUSED_NOQA: (
        "Reports a `# noqa` comment naming gacclint codes that suppressed nothing.",
        "A `# noqa: GA...` comment whose codes match no finding on its line hides nothing: the loop was "
        "fixed or the finding moved. Removing the stale code keeps a later finding on that line from being "
        "silently suppressed. Off unless selected by its exact code (`--extend-select GA002`).",
    ),
}

DOC_URL = "https://github.com/gacclint/gacclint/blob/main/docs/rules.md#{anchor}"

# Off unless selected by their exact code (`--extend-select GA002`).
OPT_IN_CODES = frozenset({UNUSED_NOQA})



def rule_url(code: str) -> str:
    """The documentation anchor of a code (docs/rules.md has one heading per code)."""
    name = CODES.get(code, "")
    return DOC_URL.format(anchor=f"{code.lower()}-{name}" if name else "")


@dataclass(frozen=True)
class Edit:
    """Replace the text from (row, column) up to (end_row, end_column) by `content`."""

    content: str
    row: int
    column: int
    end_row: int
    end_column: int


@dataclass(frozen=True)
class FixInfo:
    applicability: str  # "safe" | "unsafe"
    message: str
    edits: tuple[Edit, ...] = ()


@dataclass(frozen=True)
class Diagnostic:
    code: str
    name: str
    message: str
    row: int
    column: int
    end_row: int
    end_column: int
    fix: FixInfo | None = None
    cell: int | None = None
    source_line: str = ""  # the reported line's text, without its line ending
    # Where a `# noqa` for it goes, when not on `row`: the last line of the
    # multi-line string or backslash continuation the row belongs to.
    noqa_row: int | None = None

    @property
    def url(self) -> str:
        return rule_url(self.code)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Diagnostic":
        fix = data.get("fix")
        if fix is not None:
            fix = FixInfo(fix["applicability"], fix["message"], tuple(Edit(**e) for e in fix["edits"]))
        return cls(**{**data, "fix": fix})


@dataclass(frozen=True)
class Job:
    """One file's work, as a worker process receives it."""

    path: Path
    source: bytes  # as read; a write is skipped if the file no longer holds it
    selection: "Selection"
    mode: str = "check"  # "check" | "fix" | "add-noqa"
    unsafe: bool = False
    write: bool = False  # fix / add-noqa: write the result (not under --diff)
    diff: bool = False   # fix: keep a unified diff of the result
    debug: bool = False  # let an internal error propagate with its traceback


@dataclass
class FileResult:
    """Everything a run learned about one file."""

    path: Path
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # Why the file could not be read, analysed or written (one line), or None.
    error: str | None = None
    # fix: how many findings were fixed (in memory with --diff, on disk otherwise)
    fixed: int = 0
    # fix: one line per fix that was dropped (did not parse, or left its finding)
    dropped: list[str] = field(default_factory=list)
    # fix --diff: the unified diff of the fixed text
    diff: str | None = None
    # fix: the fixed Python source (a notebook's code cells as one program), for --verify
    fixed_source: bytes | None = None
    # fix --add-noqa: how many `# noqa` comments were written
    noqa_added: int = 0
    # whether the file's settings (or the command line) enable unsafe fixes
    unsafe_fixes: bool = False
