"""What a run produces, as plain data: no libcst nodes, so results can cross a
process boundary, be cached on disk, and be printed in any output format
without importing the analysis (a warm run never imports libcst).

Rows and columns are 1-based. For a notebook, `cell` is the 1-based number of
the code cell (counting code cells only, as Ruff does) and rows are lines of
that cell; for a `.py` file `cell` is None and rows are lines of the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Callable

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
        "The file is not valid Python, so none of its training loops were checked: every other rule is "
        "silent on the file until the syntax error is fixed. In a notebook, each code cell runs on its "
        "own: a cell that does not parse is reported and left out, and the other cells are checked "
        "(a fix never changes that cell). This is always reported and cannot be deselected.",
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


class FixInfo:
    """A finding's fix: applicability, description, and its edits of the text.

    The edits may be pending (`edits=None`): `check` shows only the description
    in its people formats, and working the edits out means rewriting the whole
    module, so the runner leaves them to be computed on first access of
    `edits` (formats that carry edits: json, json-lines, sarif). Equal fixes
    have equal edits; comparing a pending fix computes them."""

    __slots__ = ("applicability", "message", "_edits", "_resolve")

    def __init__(self, applicability: str, message: str, edits: tuple[Edit, ...] | None = (),
                 resolve: Callable[[], None] | None = None) -> None:
        self.applicability = applicability  # "safe" | "unsafe"
        self.message = message
        self._edits = None if edits is None else tuple(edits)
        # Called when the edits are asked for while pending; it sets them (with_edits).
        self._resolve = resolve

    @property
    def pending(self) -> bool:
        return self._edits is None

    @property
    def edits(self) -> tuple[Edit, ...]:
        if self._edits is None and self._resolve is not None:
            self._resolve()
        if self._edits is None:
            raise RuntimeError("the edits of this fix were not computed (no resolver)")
        return self._edits

    def with_edits(self, edits: tuple[Edit, ...]) -> None:
        """Fill in pending edits (the runner's resolver does)."""
        self._edits, self._resolve = tuple(edits), None

    def on_demand(self, resolve: Callable[[], None]) -> None:
        """What computes the edits if they are asked for while pending."""
        if self._edits is None:
            self._resolve = resolve

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FixInfo):
            return NotImplemented
        return (self.applicability, self.message) == (other.applicability, other.message) and (
            self is other or self.edits == other.edits)

    def __hash__(self) -> int:
        return hash((self.applicability, self.message))

    def __repr__(self) -> str:
        edits = "<pending>" if self._edits is None else repr(self._edits)
        return f"FixInfo(applicability={self.applicability!r}, message={self.message!r}, edits={edits})"

    def __reduce__(self):
        # Across a process boundary (workers, the cache) a resolver never travels.
        return (FixInfo, (self.applicability, self.message, self._edits))

    def to_dict(self) -> dict:
        return {"applicability": self.applicability, "message": self.message,
                "edits": None if self._edits is None else [asdict(e) for e in self._edits]}


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
        """Plain data (JSON); a pending fix's edits are None."""
        data = {name: getattr(self, name) for name in _DIAGNOSTIC_FIELDS}
        if self.fix is not None:
            data["fix"] = self.fix.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Diagnostic":
        fix = data.get("fix")
        if fix is not None:
            edits = fix["edits"]
            fix = FixInfo(fix["applicability"], fix["message"], None if edits is None else tuple(Edit(**e) for e in edits))
        return cls(**{**data, "fix": fix})


_DIAGNOSTIC_FIELDS = tuple(f.name for f in fields(Diagnostic))


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
    # Work out each fix's edits now; False leaves them pending (FixInfo) for
    # the runner to compute only if they are asked for.
    edits: bool = True


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
