"""Printing a run's results in every output format.

`render` turns `FileResult`s into the text written to stdout: `full` and
`concise` for people, `json` and `json-lines` in the shape of Ruff's JSON,
`github` workflow commands, a `gitlab` Code Quality report, and a `sarif` 2.1.0
log for code scanning. `statistics` is the `--statistics` table.

Only the plain data of `gacclint.diagnostics` is read here, so printing a
cached run never imports libcst; the SARIF rule descriptors need the rule
classes' documentation and import them when that format is asked for.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections import Counter
from pathlib import Path
from urllib.parse import quote

from gacclint import __version__
from gacclint.diagnostics import BUILTIN_DESCRIPTIONS, CODES, UNUSED_NOQA, Diagnostic, FileResult, FixInfo, rule_url

FORMATS = ("full", "concise", "json", "json-lines", "github", "gitlab", "sarif")

PROJECT_URL = "https://github.com/gacclint/gacclint"
SARIF_SCHEMA_URL = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_BASE_ID = "%SRCROOT%"
# Source lines are shown with tabs expanded to the next multiple of this, so
# the carets under them line up whatever the terminal's tab stops are.
TAB_WIDTH = 4


def render(results: list[FileResult], output_format: str, *, color: bool = False, show_fixes: bool = False,
           unsafe_fixes: bool = False, sources: dict[Path, bytes] | None = None) -> str:
    """The text to write to stdout for `results`, ending with a newline unless empty.

    `color` adds ANSI colors to `full` and `concise` only; `show_fixes` lists the
    fixes applied per file before the summary of those two; `unsafe_fixes` counts
    unsafe fixes as applicable (in the summary, and in `full`'s help lines).
    `sources`: the text of files that are not on disk (standard input), by path;
    the annotation formats read a notebook's JSON to place its findings on the file's lines.
    """
    rows = _NotebookRows(sources or {})
    if output_format == "full":
        lines = _full_lines(results, color=color, unsafe_fixes=unsafe_fixes)
    elif output_format == "concise":
        lines = [_header(result.path, diagnostic, color) for result, diagnostic in _pairs(results)]
    elif output_format == "json":
        return json.dumps(_json_objects(results), indent=2) + "\n"
    elif output_format == "json-lines":
        return "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in _json_objects(results))
    elif output_format == "github":
        return "".join(_github_command(result.path, diagnostic, rows) + "\n" for result, diagnostic in _pairs(results))
    elif output_format == "gitlab":
        return json.dumps(_gitlab_issues(results, rows), indent=2) + "\n"
    elif output_format == "sarif":
        return json.dumps(_sarif_log(results, rows), indent=2) + "\n"
    else:
        raise ValueError(f"unknown output format {output_format!r}; expected one of {', '.join(FORMATS)}")
    lines += _summary_lines(results, show_fixes=show_fixes, unsafe_fixes=unsafe_fixes)
    return "".join(line + "\n" for line in lines)


def statistics(results: list[FileResult], *, unsafe_fixes: bool = False, output_format: str = "full") -> str:
    """One line per code, most frequent first: count, code, `[*]` when some are fixable, name.

    The fixable marker column appears only when some code is fixable, as in Ruff.
    With `json` (and `json-lines`, one object a line), Ruff's statistics JSON:
    `code`, `name`, `count` and `fixable` (whether some of them have an applicable fix).
    """
    counts = Counter(diagnostic.code for _, diagnostic in _pairs(results))
    fixable = {diagnostic.code for result, diagnostic in _pairs(results)
               if _applicable(diagnostic.fix, unsafe_fixes or result.unsafe_fixes)}
    names = {diagnostic.code: diagnostic.name for _, diagnostic in _pairs(results)}
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if output_format in ("json", "json-lines"):
        objects = [{"code": code, "name": names[code], "count": count, "fixable": code in fixable}
                   for code, count in ordered]
        if output_format == "json":
            return json.dumps(objects, indent=2) + "\n"
        return "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in objects)
    if not counts:
        return ""
    count_width = max(len(str(count)) for count in counts.values())
    code_width = max(len(code) for code in counts)
    lines = []
    for code, count in ordered:
        marker = ("[*] " if code in fixable else "[ ] ") if fixable else ""
        lines.append(f"{count:>{count_width}}\t{code:<{code_width}}\t{marker}{names[code]}\n")
    return "".join(lines)


def _pairs(results: list[FileResult]) -> list[tuple[FileResult, Diagnostic]]:
    return [(result, diagnostic) for result in results for diagnostic in result.diagnostics]


def _applicable(fix: FixInfo | None, unsafe_fixes: bool) -> bool:
    return fix is not None and (fix.applicability == "safe" or unsafe_fixes)


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def _location(diagnostic: Diagnostic) -> str:
    """`row:col`, or `cell N:row:col` in a notebook, whose rows count lines of the cell."""
    position = f"{diagnostic.row}:{diagnostic.column}"
    return position if diagnostic.cell is None else f"cell {diagnostic.cell}:{position}"


def _cell_prefix(diagnostic: Diagnostic) -> str:
    """`cell N:row:col: ` for a notebook finding, which the machine formats cannot point at by line:
    their rows would be lines of the .ipynb file, not of the cell. Empty for a .py file."""
    return "" if diagnostic.cell is None else f"{_location(diagnostic)}: "


class _NotebookRows:
    """Where a notebook finding lies in the .ipynb file itself, for the formats
    that annotate a file by its lines (github, gitlab, sarif): the line of the
    JSON text holding the cell's row. Each notebook is read once, when needed."""

    def __init__(self, sources: dict[Path, bytes]) -> None:
        self.sources = sources
        self.notebooks: dict[Path, object] = {}

    def lines(self, path: Path, diagnostic: Diagnostic) -> tuple[int, int] | None:
        """(first line, last line) in the file, or None when it cannot be read as the findings were."""
        if diagnostic.cell is None:
            return diagnostic.row, diagnostic.end_row
        if path not in self.notebooks:
            self.notebooks[path] = self._read(path)
        notebook = self.notebooks[path]
        if notebook is None:
            return None
        try:
            return (notebook.file_row(diagnostic.cell, diagnostic.row),  # type: ignore[attr-defined]
                    notebook.file_row(diagnostic.cell, max(diagnostic.row, diagnostic.end_row)))  # type: ignore[attr-defined]
        except (IndexError, ValueError):
            return None

    def _read(self, path: Path):
        from gacclint.notebook import NotebookError, read_notebook

        try:
            data = self.sources[path] if path in self.sources else path.read_bytes()
            return read_notebook(data)
        except (OSError, NotebookError):
            return None


# -- full and concise ---------------------------------------------------------------

BOLD = "1"
RED = "31"
BLUE = "34"
CYAN = "36"


def _paint(text: str, styles: tuple[str, ...], color: bool) -> str:
    return f"\x1b[{';'.join(styles)}m{text}\x1b[0m" if color and text else text


def _printable_char(char: str) -> str:
    """How one character is shown to a terminal: control characters as symbols.

    A form feed, an escape sequence or a line separator inside a source line (or
    a file name) would otherwise move the cursor, recolor the terminal or break
    the line: C0 controls and DEL become their Unicode control pictures (`\\f` is
    shown as `␌`), as Ruff shows them; the other controls and separators as `�`.
    """
    code_point = ord(char)
    if code_point < 0x20:
        return chr(0x2400 + code_point)
    if code_point == 0x7F:
        return "\u2421"
    if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
        return "\ufffd"
    return char


def _printable(text: str) -> str:
    if text.isprintable():  # no control character nor separator: nothing to replace (most text)
        return text
    return "".join(_printable_char(char) for char in text)


def _display_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _displayed(line: str) -> tuple[str, list[int]]:
    """The line as printed, and the display column where each character starts (one more: where the line ends)."""
    if line.isascii() and line.isprintable():  # no tab, no control, each character one column wide
        return line, list(range(len(line) + 1))
    pieces: list[str] = []
    starts: list[int] = []
    column = 0
    for char in line:
        starts.append(column)
        shown = " " * (TAB_WIDTH - column % TAB_WIDTH) if char == "\t" else _printable_char(char)
        pieces.append(shown)
        column += len(shown) if char == "\t" else _display_width(shown)
    starts.append(column)
    return "".join(pieces), starts


def _header(path: Path, diagnostic: Diagnostic, color: bool) -> str:
    """`path:row:col: CODE message` (`path:cell N:row:col: ...` in a notebook)."""
    separator = _paint(":", (CYAN,), color)
    place = separator.join([_paint(_printable(str(path)), (BOLD,), color), *_location(diagnostic).split(":")])
    return f"{place}{separator} {_paint(diagnostic.code, (BOLD, RED), color)} {_printable(diagnostic.message)}"


def _snippet_lines(diagnostic: Diagnostic, color: bool) -> list[str]:
    """The reported line under a numbered gutter, carets under the span (clipped to the line)."""
    line = diagnostic.source_line
    shown, starts = _displayed(line)
    start_index = max(0, min(diagnostic.column - 1, len(line)))
    # A span that goes on past this line is underlined up to the line's end.
    end_index = min(diagnostic.end_column - 1, len(line)) if diagnostic.end_row == diagnostic.row else len(line)
    caret_count = max(1, starts[max(end_index, start_index)] - starts[start_index])
    number = str(diagnostic.row)
    gutter = _paint(" " * (len(number) + 1) + "|", (BOLD, BLUE), color)
    return [
        gutter,
        f"{_paint(number + ' |', (BOLD, BLUE), color)} {shown}",
        f"{gutter} {' ' * starts[start_index]}{_paint('^' * caret_count, (BOLD, RED), color)}",
        gutter,
    ]


def _help_line(diagnostic: Diagnostic, fix: FixInfo, color: bool, unsafe_fixes: bool) -> str:
    note = ""
    if fix.applicability == "unsafe":
        note = " (unsafe fix)" if unsafe_fixes else " (unsafe fix: use --unsafe-fixes)"
    indent = " " * (len(str(diagnostic.row)) + 1) if diagnostic.source_line else ""
    return f"{indent}{_paint('= help', (BOLD, CYAN), color)}: {_printable(fix.message)}{note}"


def _full_lines(results: list[FileResult], *, color: bool, unsafe_fixes: bool) -> list[str]:
    lines: list[str] = []
    for result, diagnostic in _pairs(results):
        lines.append(_header(result.path, diagnostic, color))
        # An empty source_line means the runner had no text for the line: no snippet then.
        if diagnostic.source_line:
            lines += _snippet_lines(diagnostic, color)
        if diagnostic.fix is not None:
            lines.append(_help_line(diagnostic, diagnostic.fix, color, unsafe_fixes or result.unsafe_fixes))
        lines.append("")
    return lines


def _summary_lines(results: list[FileResult], *, show_fixes: bool, unsafe_fixes: bool) -> list[str]:
    lines = []
    if show_fixes:
        lines += [f"Fixed {_plural(result.fixed, 'problem', 'problems')} in {_printable(str(result.path))}"
                  for result in results if result.fixed]
    # Each file's own setting counts: a subproject may turn unsafe fixes on.
    pairs = [(unsafe_fixes or result.unsafe_fixes, diagnostic) for result, diagnostic in _pairs(results)]
    # A file that could not be read or analysed was not checked: never "All checks passed!" then.
    unchecked = sum(1 for result in results if result.error and not result.diagnostics)
    not_checked = f"{_plural(unchecked, 'file', 'files')} could not be checked (see the errors above)."
    if not pairs:
        return lines + ([f"No problems found, but {not_checked}"] if unchecked else ["All checks passed!"])
    fixable = sum(1 for unsafe, diagnostic in pairs if _applicable(diagnostic.fix, unsafe))
    lines.append(f"Found {_plural(len(pairs), 'problem', 'problems')} ({fixable} fixable).")
    if unchecked:
        lines.append(not_checked)
    hidden = sum(1 for unsafe, diagnostic in pairs
                 if diagnostic.fix is not None and diagnostic.fix.applicability == "unsafe" and not unsafe)
    if hidden:
        hidden_fixes = _plural(hidden, "hidden fix", "hidden fixes")
        lines.append(f"{hidden_fixes} can be enabled with the `--unsafe-fixes` option.")
    return lines


# -- json and json-lines ------------------------------------------------------------

def _json_objects(results: list[FileResult]) -> list[dict]:
    """Ruff's JSON shape, so tools that read Ruff's output read gacclint's."""
    objects = []
    for result in results:
        filename = str(result.path.resolve())
        for diagnostic in result.diagnostics:
            objects.append({
                "cell": diagnostic.cell,
                "code": diagnostic.code,
                "end_location": {"row": diagnostic.end_row, "column": diagnostic.end_column},
                "filename": filename,
                # A fix whose edits came out empty (a file libcst cannot read) is none.
                "fix": None if diagnostic.fix is None or not diagnostic.fix.edits else {
                    "applicability": diagnostic.fix.applicability,
                    "message": diagnostic.fix.message,
                    "edits": [{"content": edit.content,
                               "location": {"row": edit.row, "column": edit.column},
                               "end_location": {"row": edit.end_row, "column": edit.end_column}}
                              for edit in diagnostic.fix.edits],
                },
                "location": {"row": diagnostic.row, "column": diagnostic.column},
                "message": diagnostic.message,
                "name": diagnostic.name,
                "noqa_row": diagnostic.noqa_row or diagnostic.row,
                "url": diagnostic.url,
            })
    return objects


# -- github ---------------------------------------------------------------------------

def _escape_github_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_github_property(text: str) -> str:
    return _escape_github_data(text).replace(":", "%3A").replace(",", "%2C")


def _github_command(path: Path, diagnostic: Diagnostic, rows: _NotebookRows) -> str:
    """An `::error` workflow command, which GitHub Actions shows as an annotation on the file.

    A notebook's rows count lines of a cell, not of the .ipynb file GitHub
    shows: a notebook finding is annotated on the line of the .ipynb's JSON
    that holds the cell's row (no columns: they would be the cell's), with its
    cell and position in the message.
    """
    properties = {"title": f"gacclint ({diagnostic.code})", "file": path.as_posix()}
    if diagnostic.cell is None:
        properties.update(line=diagnostic.row, col=diagnostic.column,
                          endLine=diagnostic.end_row, endColumn=diagnostic.end_column)
    else:
        lines = rows.lines(path, diagnostic)
        if lines is not None:
            properties.update(line=lines[0], endLine=lines[1])
    message = f"{_cell_prefix(diagnostic)}{diagnostic.code} {diagnostic.message}"
    rendered = ",".join(f"{key}={_escape_github_property(str(value))}" for key, value in properties.items())
    return f"::error {rendered}::{_escape_github_data(message)}"


# -- fingerprints shared by gitlab and sarif ------------------------------------------

def _relative_posix(path: Path) -> str | None:
    """The path relative to the current directory in posix form, or None when it lies outside it."""
    cwd = os.getcwd()
    absolute = os.path.normpath(os.path.join(cwd, path))
    try:
        relative = os.path.relpath(absolute, cwd)
    except ValueError:  # another drive on Windows
        return None
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return None
    return Path(relative).as_posix()


def _report_path(path: Path) -> str:
    """How a report names the file: relative to the current directory when it is under it."""
    return _relative_posix(path) or Path(os.path.abspath(path)).as_posix()


def _fingerprints(result: FileResult, report_path: str) -> dict[int, tuple[str, int]]:
    """For each diagnostic (by index): a hash of what it is and its 1-based occurrence among identical ones.

    The hash reads the path, code, message and reported line with all its
    whitespace removed, never the row, column or cell: the same finding keeps
    its fingerprint when lines or cells are added above it, or the line is
    re-indented or reformatted. Identical findings of one file are told apart by
    their order in the file.
    """
    by_position = sorted(range(len(result.diagnostics)), key=lambda index: (
        result.diagnostics[index].cell or 0, result.diagnostics[index].row, result.diagnostics[index].column))
    seen: Counter[str] = Counter()
    fingerprints = {}
    for index in by_position:
        diagnostic = result.diagnostics[index]
        line_without_whitespace = "".join(diagnostic.source_line.split())
        identity = "\0".join([report_path, diagnostic.code, diagnostic.message, line_without_whitespace])
        digest = _sha256(identity)
        seen[digest] += 1
        fingerprints[index] = (digest, seen[digest])
    return fingerprints




def _sha256(text: str) -> str:
    import hashlib  # only the formats with fingerprints hash: not imported by every run

    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# -- gitlab ---------------------------------------------------------------------------

def _gitlab_issues(results: list[FileResult], rows: _NotebookRows) -> list[dict]:
    """GitLab's Code Quality report (a subset of the Code Climate issue format)."""
    issues = []
    for result in results:
        path = _report_path(result.path)
        fingerprints = _fingerprints(result, path)
        for index, diagnostic in enumerate(result.diagnostics):
            digest, occurrence = fingerprints[index]
            # A notebook's finding: the lines of the .ipynb holding its cell's rows.
            begin, end = rows.lines(result.path, diagnostic) or (1, 1)
            issues.append({
                "description": f"{_cell_prefix(diagnostic)}{diagnostic.code} {diagnostic.message}",
                "check_name": diagnostic.code,
                "fingerprint": _sha256(f"{digest}:{occurrence}"),
                "severity": "major",
                "location": {
                    "path": path,
                    "lines": {"begin": begin, "end": end},
                },
            })
    return issues


# -- sarif ----------------------------------------------------------------------------

def _unwrapped(text: str) -> str:
    """Paragraphs of a docstring section with their lines joined."""
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in text.strip().split("\n\n"))


def _doc_section(documentation: str, heading: str) -> str:
    marker = f"## {heading}"
    if marker not in documentation:
        return ""
    return documentation.split(marker, 1)[1].split("\n## ", 1)[0].strip()


def _sarif_rules() -> list[dict]:
    """One reporting descriptor per code, in code order (a result's ruleIndex points here)."""
    from gacclint.rules import all_rules  # imports libcst: only this format needs the rules' documentation

    rule_classes = {rule.code: rule for rule in all_rules()}
    descriptors = []
    for code in sorted(CODES):
        rule = rule_classes.get(code)
        if rule is None:
            short, full = BUILTIN_DESCRIPTIONS[code]
            help_text = f"{short}\n\n{full}"
        else:
            documentation = rule.documentation()
            short = rule.summary()
            full = _unwrapped("\n\n".join(_doc_section(documentation, heading)
                                          for heading in ("What it does", "Why is this bad?")))
            help_text = documentation
        descriptors.append({
            "id": code,
            "name": CODES[code],
            "shortDescription": {"text": short},
            "fullDescription": {"text": full},
            "help": {"text": help_text, "markdown": help_text},
            "helpUri": rule_url(code),
            "defaultConfiguration": {"level": _sarif_level(code)},
        })
    return descriptors


def _sarif_level(code: str) -> str:
    # A stale `# noqa` hides nothing today; every other code is a training bug or an unchecked file.
    return "warning" if code == UNUSED_NOQA else "error"


def _sarif_artifact_location(path: Path) -> dict:
    """Relative to %SRCROOT% (the current directory) when under it, as code scanning wants; else a file URI."""
    relative = _relative_posix(path)
    if relative is None:
        return {"uri": Path(os.path.abspath(path)).as_uri()}
    return {"uri": quote(relative), "uriBaseId": SARIF_BASE_ID}


def _directory_uri(directory: str) -> str:
    """A base URI must end with a slash for relative URIs to resolve under it."""
    uri = Path(directory).as_uri()
    return uri if uri.endswith("/") else uri + "/"


def _sarif_region(row: int, column: int, end_row: int, end_column: int) -> dict:
    return {"startLine": row, "startColumn": column, "endLine": end_row, "endColumn": end_column}


def _sarif_fix(fix: FixInfo, artifact_location: dict) -> dict:
    replacements = []
    for edit in fix.edits:
        replacement: dict = {"deletedRegion": _sarif_region(edit.row, edit.column, edit.end_row, edit.end_column)}
        if edit.content:
            replacement["insertedContent"] = {"text": edit.content}
        replacements.append(replacement)
    return {
        "description": {"text": fix.message},
        "artifactChanges": [{"artifactLocation": artifact_location, "replacements": replacements}],
        "properties": {"applicability": fix.applicability},
    }


def _sarif_result(diagnostic: Diagnostic, artifact_location: dict, fingerprint: tuple[str, int],
                  rule_index: dict[str, int], lines: tuple[int, int] | None) -> dict:
    digest, occurrence = fingerprint
    if diagnostic.cell is None:
        region = _sarif_region(diagnostic.row, diagnostic.column, diagnostic.end_row, diagnostic.end_column)
    else:
        # A notebook's rows count lines of a cell: the region is the lines of
        # the .ipynb's JSON holding them (no columns), the cell and row in the message.
        first, last = lines or (1, 1)
        region = {"startLine": first, "endLine": last}
    result = {
        "ruleId": diagnostic.code,
        "level": _sarif_level(diagnostic.code),
        "message": {"text": f"{_cell_prefix(diagnostic)}{diagnostic.message}"},
        "locations": [{"physicalLocation": {"artifactLocation": artifact_location, "region": region}}],
        # The key GitHub code scanning tracks alerts by; its `hash:occurrence` shape.
        "partialFingerprints": {"primaryLocationLineHash": f"{digest[:16]}:{occurrence}"},
    }
    if diagnostic.code in rule_index:
        result["ruleIndex"] = rule_index[diagnostic.code]
    # Edits of a notebook are in cell coordinates, which no SARIF region can express.
    if diagnostic.fix is not None and diagnostic.fix.edits and diagnostic.cell is None:
        result["fixes"] = [_sarif_fix(diagnostic.fix, artifact_location)]
    return result


def _sarif_log(results: list[FileResult], rows: _NotebookRows) -> dict:
    rules = _sarif_rules()
    rule_index = {rule["id"]: index for index, rule in enumerate(rules)}
    sarif_results = []
    notifications = []
    for result in results:
        artifact_location = _sarif_artifact_location(result.path)
        fingerprints = _fingerprints(result, _report_path(result.path))
        for index, diagnostic in enumerate(result.diagnostics):
            sarif_results.append(_sarif_result(diagnostic, artifact_location, fingerprints[index], rule_index,
                                               rows.lines(result.path, diagnostic)))
        if result.error:
            notifications.append({"level": "error", "message": {"text": result.error},
                                  "locations": [{"physicalLocation": {"artifactLocation": artifact_location}}]})
    invocation: dict = {"executionSuccessful": True}
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    return {
        "$schema": SARIF_SCHEMA_URL,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "gacclint", "version": __version__, "informationUri": PROJECT_URL,
                                "rules": rules}},
            "invocations": [invocation],
            "originalUriBaseIds": {SARIF_BASE_ID: {"uri": _directory_uri(os.getcwd())}},
            # libcst counts columns in characters (code points), not UTF-16 units.
            "columnKind": "unicodeCodePoints",
            "results": sarif_results,
        }],
    }
