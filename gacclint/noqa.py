"""`# noqa` comments: finding them, suppressing what they name, reporting
those that suppress nothing (GA002), and writing them (`--add-noqa`).

Line directives, as in Ruff and flake8, anywhere in a comment and in any
case: `# noqa` (bare: every code on the line), `# noqa: GA202`,
`# noqa:GA202,GA201`, `# NOQA: GA202 E501` (codes separated by commas and/or
spaces; the list ends at the first word that is not letters followed by
digits, so `# noqa: GA202 because ...` names GA202). A code matches exactly
(no prefixes); codes are compared upper-cased. `# noqa:` followed by no code,
and `# noqa GA202` without a colon, are bare, as in flake8. Codes of other
tools in the same directive are kept and ignored.

File directives, on a line of their own: `# gacclint: noqa` exempts the whole
file, `# gacclint: noqa: GA202, GA201` those codes in the whole file. Written
after code they are ignored (a stray one must not silence a file).

Comments are found with `tokenize` on the text, so a `# noqa` inside a string
does not count; when the text does not tokenize (a syntax error), each line
is searched with the same pattern instead.

A diagnostic's directive lives on its row, except where that row cannot hold
a comment: a row inside a multi-line string, or ending with a backslash
continuation, uses the last physical row of that string or continuation
(`noqa_row_map`), as Ruff does; `suppress` and `add_noqa` agree on it.

GA001 (syntax error) is never suppressed. Lines split only on \\r\\n, \\r and
\\n (not str.splitlines, which also splits on form feeds and others), so rows
are the rows of the parser and of every editor.

This module imports neither libcst nor the rules.
"""

from __future__ import annotations

import functools
import io
import re
import tokenize
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gacclint.diagnostics import CODES, SYNTAX_ERROR, UNUSED_NOQA, Diagnostic, Edit, FixInfo

if TYPE_CHECKING:
    from gacclint.selection import Selection

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_CODE_LIST = r"[A-Za-z]+[0-9]+(?:[\s,]+[A-Za-z]+[0-9]+)*"
# `(?!\w)`: `# noqa123` and `# noqalike` are not directives.
_LINE_DIRECTIVE = re.compile(rf"#\s*noqa(?!\w)(?:\s*:\s*(?P<codes>{_CODE_LIST})?)?", re.IGNORECASE)
_FILE_DIRECTIVE = re.compile(rf"#\s*gacclint\s*:\s*noqa(?!\w)(?:\s*:\s*(?P<codes>{_CODE_LIST})?)?", re.IGNORECASE)
_MENTIONS_NOQA = re.compile("noqa", re.IGNORECASE)
# What a line must hold for its directive to name one of gacclint's codes (`_OWN_CODE`,
# compared upper-cased): without one, no directive can be reported unused.
_MAY_NAME_OWN_CODE = re.compile(r"noqa[^\r\n]*?ga[0-9]", re.IGNORECASE)
_CODE = re.compile(r"[A-Za-z]+[0-9]+")
_OWN_CODE = re.compile(r"GA[0-9]+")  # the codes GA002 may report and remove; others belong to other tools
_STRING_GROUPS = {"FSTRING_START": "FSTRING_END", "TSTRING_START": "TSTRING_END"}  # Python 3.12+, 3.14+


@dataclass(frozen=True)
class CodeSpan:
    """One code of a directive as written, at 1-based columns [column, end_column)."""

    code: str
    column: int
    end_column: int


@dataclass(frozen=True)
class NoqaDirective:
    """A `# noqa` on `row`, from its `#` (1-based `column`) to just after its
    last code, or after `noqa` (and a colon) when bare (`end_column`)."""

    row: int
    codes: frozenset[str] | None  # upper-cased; None: bare, every code
    column: int = 1
    end_column: int = 1
    code_spans: tuple[CodeSpan, ...] = ()

    def suppresses(self, code: str) -> bool:
        return self.codes is None or code in self.codes


@dataclass
class _Scan:
    lines: list[tuple[str, str]]  # (content, line ending) per row
    directives: dict[int, NoqaDirective] = field(default_factory=dict)
    file_directives: list[NoqaDirective] = field(default_factory=list)
    moved_rows: dict[int, int] = field(default_factory=dict)  # see noqa_row_map

    def noqa_row(self, row: int) -> int:
        return self.moved_rows.get(row, row)

    def file_suppresses(self, code: str) -> bool:
        return any(directive.suppresses(code) for directive in self.file_directives)


def find_noqa(text: str) -> dict[int, NoqaDirective]:
    """The line directives of `text`, keyed by 1-based row."""
    return dict(_scan(text).directives)


def noqa_row_map(text: str) -> dict[int, int]:
    """Rows that cannot hold a comment -> the row their `# noqa` belongs on:
    the last physical row of the multi-line string or backslash continuation
    they are part of. Rows not in the map hold their own."""
    return dict(_scan(text).moved_rows)


def suppress(diagnostics: list[Diagnostic], text: str, report_unused: bool, *,
             selection: Selection | None = None) -> list[Diagnostic]:
    """`diagnostics` without those a directive suppresses, in (row, column,
    code) order, plus, with `report_unused`, a GA002 for every directive
    naming gacclint codes (GA + digits) that suppressed nothing.

    Not reported: bare `# noqa` (it most likely serves another tool, and
    removing it would unsilence that tool), other tools' codes, directives
    that list GA002 themselves, file directives, and, when `selection` is
    given, codes it turns off (they may well suppress findings in a run that
    selects them; pass the file's selection). A GA code that is not a
    gacclint code is reported as unknown.
    """
    if not _MENTIONS_NOQA.search(text):  # most files: nothing to tokenize for
        return sorted(diagnostics, key=_position)
    if not diagnostics and not (report_unused and _MAY_NAME_OWN_CODE.search(text)):
        return []  # nothing to suppress, and no directive that could be reported unused
    scan = _scan(text)
    kept: list[Diagnostic] = []
    used: dict[int, set[str]] = defaultdict(set)
    for diagnostic in diagnostics:
        if diagnostic.code == SYNTAX_ERROR:
            kept.append(diagnostic)
            continue
        if scan.file_suppresses(diagnostic.code):
            continue
        row = scan.noqa_row(diagnostic.row)
        directive = scan.directives.get(row)
        if directive is not None and directive.suppresses(diagnostic.code):
            used[row].add(diagnostic.code)
        else:
            kept.append(diagnostic)
    if report_unused and not scan.file_suppresses(UNUSED_NOQA):
        for row, directive in scan.directives.items():
            unused = _unused_report(scan, directive, used[row], selection)
            if unused is not None:
                kept.append(unused)
    return sorted(kept, key=_position)


def _position(diagnostic: Diagnostic) -> tuple[int, int, str]:
    return diagnostic.row, diagnostic.column, diagnostic.code


def _unused_report(scan: _Scan, directive: NoqaDirective, used: set[str],
                   selection: Selection | None) -> Diagnostic | None:
    if directive.codes is None or UNUSED_NOQA in directive.codes:
        return None

    def is_unused(code: str) -> bool:
        return (_OWN_CODE.fullmatch(code) is not None and code not in used
                and (selection is None or code not in CODES or selection.selects(code)))

    unused_spans = [span for span in directive.code_spans if is_unused(span.code.upper())]
    if not unused_spans:
        return None
    unused = _unique(span.code.upper() for span in unused_spans if span.code.upper() in CODES)
    unknown = _unique(span.code.upper() for span in unused_spans if span.code.upper() not in CODES)
    parts = [f"{label}: " + ", ".join(f"`{code}`" for code in codes)
             for label, codes in (("unused", unused), ("unknown", unknown)) if codes]
    content = scan.lines[directive.row - 1][0]
    return Diagnostic(
        code=UNUSED_NOQA, name=CODES[UNUSED_NOQA], message=f"Unused `noqa` directive ({'; '.join(parts)})",
        row=directive.row, column=directive.column, end_row=directive.row, end_column=directive.end_column,
        fix=FixInfo("safe", "Remove unused `noqa` directive", (_removal(scan, directive, unused_spans),)),
        source_line=content,
    )


def _unique(codes) -> list[str]:
    return list(dict.fromkeys(codes))


def _removal(scan: _Scan, directive: NoqaDirective, unused_spans: list[CodeSpan]) -> Edit:
    """The edit taking `unused_spans` out of `directive`: rewriting its code
    list when some codes stay, otherwise removing the directive, as Ruff does
    (with the whitespace before it at the end of a line, with its line when it
    is all the line holds, keeping the `#` when other comment text follows)."""
    row = directive.row
    content, ending = scan.lines[row - 1]
    kept = [span for span in directive.code_spans if span not in unused_spans]
    if kept:
        first, last = directive.code_spans[0], directive.code_spans[-1]
        return Edit(", ".join(span.code for span in kept), row, first.column, row, last.end_column)
    start, end = directive.column - 1, directive.end_column - 1  # 0-based offsets into content
    before, after = content[:start], content[end:]
    if not before.strip() and not after.strip():
        if ending:
            return Edit("", row, 1, row + 1, 1)
        return Edit("", row, 1, row, len(content) + 1)
    if not after.strip():
        return Edit("", row, len(before.rstrip()) + 1, row, len(content) + 1)
    next_text = end + len(after) - len(after.lstrip())
    if after.lstrip().startswith("#"):  # `x  # noqa: GA202  # type: ignore`: the next comment moves up
        return Edit("", row, start + 1, row, next_text + 1)
    # `x  # noqa: GA202 because ...`: keep the `# ` so the words stay a comment
    hash_and_space = 1 + len(content[start + 1:]) - len(content[start + 1:].lstrip())
    return Edit("", row, start + hash_and_space + 1, row, next_text + 1)


def add_noqa(text: str, diagnostics: list[Diagnostic]) -> tuple[str, int]:
    """`text` with a `# noqa: CODES` for every diagnostic, and how many lines changed.

    Each row (moved as in `noqa_row_map`) gets `  # noqa: CODE, ...` (sorted)
    at its end, after any comment already there and without trailing
    whitespace; a row with a directive keeps it and has the missing codes
    appended to its list; a bare `# noqa` already covers everything. GA001
    (cannot be suppressed) and GA002 (about a directive itself) are not
    written. Every line keeps its own line ending. Idempotent.
    """
    scan = _scan(text)
    wanted: dict[int, set[str]] = defaultdict(set)
    for diagnostic in diagnostics:
        if diagnostic.code in (SYNTAX_ERROR, UNUSED_NOQA):
            continue
        row = scan.noqa_row(diagnostic.row)
        if 1 <= row <= len(scan.lines):
            wanted[row].add(diagnostic.code)
    lines = list(scan.lines)
    changed = 0
    for row, codes in wanted.items():
        content, ending = lines[row - 1]
        directive = scan.directives.get(row)
        if directive is None:
            code = content.rstrip(" \t")
            content = code + ("  " if code.strip() else "") + "# noqa: " + ", ".join(sorted(codes))
        elif directive.codes is not None and (missing := sorted(codes - directive.codes)):
            end = directive.code_spans[-1].end_column - 1
            content = content[:end] + "".join(f", {code}" for code in missing) + content[end:]
        else:
            continue
        lines[row - 1] = (content, ending)
        changed += 1
    return "".join(content + ending for content, ending in lines), changed


def _split_lines(text: str) -> list[tuple[str, str]]:
    lines = []
    start = 0
    for match in _LINE_BREAK.finditer(text):
        lines.append((text[start:match.start()], match.group()))
        start = match.end()
    if start < len(text):
        lines.append((text[start:], ""))
    return lines


@functools.lru_cache(maxsize=1)
def _scan(text: str) -> _Scan:
    """Read-only for its callers: a file's findings are suppressed and then given their
    `# noqa` rows from the same scan (one tokenization of the text, not two)."""
    scan = _Scan(_split_lines(text))
    try:
        tokens = _tokenize(scan.lines)
    except (tokenize.TokenError, SyntaxError):
        for row, (content, _) in enumerate(scan.lines, start=1):
            offset = content.find("#")
            if offset >= 0:
                _read_comment(scan, row, content, offset, content[offset:])
        return scan
    comment_rows = set()
    string_ends: dict[int, int] = {}  # row inside a multi-line string -> the row it ends on
    open_groups: list[tuple[str, int]] = []
    for token in tokens:
        name = tokenize.tok_name[token.type]
        if token.type == tokenize.COMMENT:
            comment_rows.add(token.start[0])
            _read_comment(scan, token.start[0], scan.lines[token.start[0] - 1][0], token.start[1], token.string)
        elif token.type == tokenize.STRING:
            _mark_string(string_ends, token.start[0], token.end[0])
        elif name in _STRING_GROUPS:
            open_groups.append((_STRING_GROUPS[name], token.start[0]))
        elif open_groups and name == open_groups[-1][0]:
            _mark_string(string_ends, open_groups.pop()[1], token.end[0])
    continued = {row: row + 1 for row, (content, _) in enumerate(scan.lines, start=1)
                 if content.endswith("\\") and row not in string_ends and row not in comment_rows}
    following = {**continued, **string_ends}
    for row in sorted(following, reverse=True):  # later rows first: a chain resolves to its end
        scan.moved_rows[row] = scan.moved_rows.get(following[row], following[row])
    return scan


def _tokenize(lines: list[tuple[str, str]]) -> list[tokenize.TokenInfo]:
    # Every line is handed over ending in "\n", so tokenize's rows are ours
    # whatever the file's line endings.
    physical = io.StringIO("".join(content + ("\n" if ending else "") for content, ending in lines))
    return list(tokenize.generate_tokens(physical.readline))


def _mark_string(string_ends: dict[int, int], start_row: int, end_row: int) -> None:
    for row in range(start_row, end_row):
        string_ends[row] = max(string_ends.get(row, end_row), end_row)


def _read_comment(scan: _Scan, row: int, content: str, offset: int, comment: str) -> None:
    """Record the directive, if any, of the comment starting at 0-based `offset` of `content`."""
    if not content[:offset].strip():
        file_match = _FILE_DIRECTIVE.match(comment)
        if file_match:
            scan.file_directives.append(_directive(row, offset, file_match))
            return
    line_match = _LINE_DIRECTIVE.search(comment)
    if line_match:
        scan.directives[row] = _directive(row, offset, line_match)


def _directive(row: int, offset: int, match: re.Match[str]) -> NoqaDirective:
    spans = ()
    if match.group("codes"):
        codes_offset = offset + match.start("codes")
        spans = tuple(CodeSpan(code.group(), codes_offset + code.start() + 1, codes_offset + code.end() + 1)
                      for code in _CODE.finditer(match.group("codes")))
    codes = frozenset(span.code.upper() for span in spans) if spans else None
    return NoqaDirective(row, codes, offset + match.start() + 1, offset + match.end() + 1, spans)
