"""Jupyter notebooks: the code cells as one Python program, and fixes written back.

A notebook's code cells run as one program (a loop's optimizer may be built
three cells earlier), so they are checked as one: `read_notebook` joins them
into `Notebook.program`, which the engine lints and fixes like any `.py` file,
and `Notebook.with_program` puts a fixed program back into the notebook.

The program keeps every cell line on a row of its own, so a program row maps to
a cell and a row in it (`locate`); between two cells sits one separator line,
`pass  # <token> cell N`. It is a statement, not a comment, because libcst
hangs comment lines on the statement below them: a fix inserted before a
cell's first statement lands after the separator, in that cell, and one
inserted after a cell's last statement lands before it, in that cell too.

IPython syntax (magics, shell escapes, help) becomes a placeholder of the same
rows and indentation that parses: `pass` for a command, `x = None` for
`x = !ls`, comment lines for a command's continuation lines. Each placeholder
carries a unique marker, so writing back finds it and restores the original
text, and refuses a fix that changed, moved or preceded one (a `%%time` line
must stay first in its cell). Cells under a cell magic whose body is not
Python (`%%bash`, `%%writefile`) become blank lines and are never written.

Writing back never re-serialises the notebook: only the `source` values of the
changed cells are replaced, at their exact span in the original JSON text, so
indentation, key order, escapes, outputs and metadata keep their bytes. A new
`source` keeps its cell's form (a list of lines or one string), its list
layout, its line endings and whether it ended with a newline; in a list, the
lines the fix did not change keep their original JSON spelling.

Each code cell must parse on its own, as Jupyter runs it (IPython first removes
the indentation of an indented first line from the lines that start with it): a syntax error is
reported in the cell's own rows (NotebookSyntaxError), and no statement, string
or bracket of the program can span two cells.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from json.decoder import scanstring

from gacclint.source import split_lines

_BOM = b"\xef\xbb\xbf"
_ENDING = re.compile(r"\r\n|\r|\n")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()

# Cell magics that run their body as Python in the kernel's namespace: the body
# is checked. Any other cell magic's body is another language, a file to write
# (`%%writefile`) or a separate process (`%%python3`): the cell is skipped.
_PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})
# Characters that, first on a statement, make the line an IPython escape:
# %magic, !shell, ?help, /autocall, ,quote and ;quote. None begins a Python statement.
_ESCAPES = frozenset("%!?/,;")
# Line magics IPython runs without their `%` (automagic), as in `pip install x`.
_AUTOMAGICS = frozenset({
    "alias", "autoawait", "autocall", "automagic", "bookmark", "cat", "cd", "clear", "colors", "conda", "config",
    "cp", "debug", "dhist", "dirs", "doctest_mode", "ed", "edit", "env", "gui", "hist", "history", "killbgscripts",
    "ldir", "less", "load", "load_ext", "loadpy", "logoff", "logon", "logstart", "logstate", "logstop", "ls",
    "lsmagic", "lx", "macro", "magic", "mamba", "man", "matplotlib", "micromamba", "mkdir", "more", "mv",
    "notebook", "page", "pastebin", "pdb", "pdef", "pdoc", "pfile", "pinfo", "pinfo2", "pip", "popd", "pprint",
    "precision", "prun", "psearch", "psource", "pushd", "pwd", "pycat", "pylab", "quickref", "recall", "rehashx",
    "reload_ext", "rep", "rerun", "reset", "reset_selective", "rm", "rmdir", "run", "save", "sc", "set_env",
    "store", "sx", "system", "tb", "time", "timeit", "unalias", "unload_ext", "uv", "who", "who_ls", "whos",
    "xdel", "xmode",
})
_AUTOMAGIC_LINE = re.compile(r"([A-Za-z_]\w*)[ \t]+[^\s=(\[{,:;]")
# PEP 263: a comment in the first two rows naming an encoding. The program is
# UTF-8 whatever a cell declares, so such a line is neutralised like a magic.
_CODING_COOKIE = re.compile(r"[ \t\f]*#.*?coding[:=][ \t]*[-\w.]+")
# Characters before `=` that make it part of an operator (`!=`, `+=`, `==`, ...).
_OPERATOR_BEFORE_EQUALS = frozenset("=!<>:+-*/%&|^@~")
# Parts of a notebook gacclint neither reads nor writes: schema errors there are tolerated.
_UNREAD_FIELDS = frozenset({"outputs", "metadata", "attachments", "execution_count"})
# A \u escape of a character outside ASCII, not itself escaped (`\\u00e9`).
_NON_ASCII_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u(?!00[0-7])[0-9a-fA-F]{4}")


class NotebookError(Exception):
    """The notebook cannot be read, or a fix cannot be written back into it; the message says why in one line."""


class NotebookSyntaxError(NotebookError):
    """A code cell does not parse on its own (as Jupyter runs it): where, in the cell's own rows and columns."""

    def __init__(self, message: str, cell: int, row: int, column: int) -> None:
        super().__init__(f"syntax error at cell {cell}:{row}:{column}: {message}")
        self.message, self.cell, self.row, self.column = message, cell, row, column


@dataclass
class _Source:
    """Where a cell's `source` value lies in the notebook's JSON text."""

    key_start: int
    start: int
    end: int
    # Each string's span when the value is a list of lines; None for one string.
    items: list[tuple[int, int]] | None


@dataclass
class _Magic:
    """IPython syntax on one or more consecutive cell lines, and what the program holds instead."""

    first: int  # index of its first line in the cell
    placeholders: list[str]  # one program line (without its ending) per cell line
    header: bool  # a cell magic's `%%` line: nothing may be put before it


@dataclass
class _CodeCell:
    number: int  # 1-based among the code cells
    position: int  # index among all the notebook's cells
    source: _Source
    text: str  # the source as the notebook holds it
    lines: list[str]  # the source's lines, with their endings
    program_lines: list[str]  # the same rows in the program: magics neutralised, always a final line ending
    magics: list[_Magic]
    opaque: bool  # under a non-Python cell magic: never changed
    # IPython runs a cell whose first line is indented without that indentation (its
    # `leading_indent` cleanup): the program holds the lines without it, and a fix puts it back.
    indent: str = ""
    reindentable: bool = True  # every code line held `indent`: else the cell is analysed, never written


@dataclass
class Notebook:
    """A notebook's code cells as one program (UTF-8 bytes), with what it takes to map rows and write fixes back."""

    program: bytes
    _original: bytes = field(repr=False)
    _text: str = field(repr=False)  # the JSON text, without a byte order mark
    _bom: bytes = field(repr=False)
    _cells: list[_CodeCell] = field(repr=False)
    _sources: list[_Source] = field(repr=False)  # every cell's, markdown included: their list layout is shared
    _rows: list[tuple[int, int]] = field(repr=False)  # per program row: (index into _cells, row in that cell)
    _separators: dict[str, int] = field(repr=False)  # separator line -> index of the cell it opens
    _marker: str = field(repr=False)
    _opening_gap: str = field(repr=False)  # JSON text between the top-level `{` and its first key
    _member_gap: str = field(repr=False)  # JSON text between two top-level members
    # Code cells that do not parse on their own, in order: left out of `program` (comment rows).
    syntax_errors: list[NotebookSyntaxError] = field(default_factory=list)

    def locate(self, row: int) -> tuple[int, int]:
        """Program row (1-based) -> (code cell number, row in that cell), both 1-based.

        A separator row, and a row past the program's end, count as rows just
        past the end of the cell before them: an insertion there belongs to it."""
        if not self._cells:
            raise ValueError("the notebook has no code cells")
        if row < 1:
            raise ValueError(f"row {row}: rows count from 1")
        if row > len(self._rows):
            last = self._cells[-1]
            return last.number, len(last.lines) + row - len(self._rows)
        index, cell_row = self._rows[row - 1]
        return self._cells[index].number, cell_row

    def program_row(self, cell_number: int, row: int) -> int:
        """(code cell number, row in that cell), both 1-based -> the program row: `locate` backwards."""
        if not 1 <= cell_number <= len(self._cells):
            raise ValueError(f"cell {cell_number}: the notebook has {len(self._cells)} code cells")
        index = cell_number - 1
        for program_row, (cell_index, cell_row) in enumerate(self._rows, start=1):
            if cell_index == index and cell_row == row:
                return program_row
        lines = len(self._cells[index].lines)
        raise ValueError(f"cell {cell_number}:{row}: the cell has {lines} rows" if lines and not 1 <= row <= lines
                         else f"cell {cell_number}:{row}: this cell is not checked (it does not parse, "
                         "or is not Python)")

    def cell_line(self, row: int) -> str:
        """The original text of a program row's line in its cell, without its line ending ("" past a cell's end)."""
        number, cell_row = self.locate(row)
        lines = self._cells[number - 1].lines
        if cell_row > len(lines):
            return ""
        return _without_ending(lines[cell_row - 1])

    def file_row(self, cell_number: int, row: int) -> int:
        """The line of the .ipynb file (1-based) that holds row `row` of code cell `cell_number`:
        in a `source` list, the line of the string where that row begins; in one string, the line it is on."""
        source = self._cells[cell_number - 1].source
        start = source.start
        if source.items:
            rows_before = 0  # cell rows that begin before each item
            for item_start, item_end in source.items:
                if rows_before >= row:
                    break
                start = item_start
                item = _DECODER.decode(self._text[item_start:item_end])
                rows_before += len(_ENDING.findall(item)) if isinstance(item, str) else 0
        return self._text.count("\n", 0, start) + 1

    def cell_sources(self) -> list[str]:
        """Each code cell's source as the notebook holds it, in order (code cell N at index N - 1)."""
        return [cell.text for cell in self._cells]

    def with_program(self, fixed_program: bytes) -> bytes:
        """The notebook's bytes with each cell the fixed program changed updated, every other byte kept.

        Raises NotebookError when the change cannot be put back into the cells
        it came from: it changes, moves or precedes a neutralised magic line,
        moves code from one cell to another, or disturbs a cell boundary."""
        if fixed_program == self.program:
            return self._original
        try:
            fixed_text = fixed_program.decode("utf-8")
        except UnicodeDecodeError:
            raise NotebookError("not fixed: the fixed program is not UTF-8") from None
        segments = self._segments(split_lines(fixed_text))
        changed = {index: lines for index, lines in enumerate(segments) if lines != self._cells[index].program_lines}
        texts = {index: self._cell_text(self._cells[index], lines) for index, lines in changed.items()}
        _refuse_moves({self._cells[index].number: (self._cells[index].program_lines, lines)
                       for index, lines in changed.items()}, self._marker)
        ensure_ascii = self._text.isascii() and _NON_ASCII_ESCAPE.search(self._text) is not None
        pieces, position = [], 0
        for index in sorted(changed, key=lambda i: self._cells[i].source.start):
            cell = self._cells[index]
            serialized = self._serialize(cell, texts[index], ensure_ascii)
            pieces += [self._text[position:cell.source.start], serialized]
            position = cell.source.end
        pieces.append(self._text[position:])
        new_text = "".join(pieces)
        self._check_written(new_text, texts)
        return self._bom + new_text.encode("utf-8")

    def _segments(self, lines: list[str]) -> list[list[str]]:
        """The fixed program's lines split at the separators, one list per code cell."""
        cuts: list[tuple[int, int]] = []  # (line index, index of the cell it opens)
        for position, line in enumerate(lines):
            opened = self._separators.get(_without_ending(line))
            if opened is not None:
                cuts.append((position, opened))
        if not self._cells or [opened for _, opened in cuts] != list(range(1, len(self._cells))):
            raise NotebookError("not fixed: the fix moves code across a cell boundary")
        segments, start = [], 0
        for position, _ in cuts:
            segments.append(lines[start:position])
            start = position + 1
        segments.append(lines[start:])
        return segments

    def _cell_text(self, cell: _CodeCell, new_lines: list[str]) -> str:
        """A changed cell's new source: magics restored, its line endings and final newline convention kept."""
        where = f"cell {cell.number}"
        if cell.opaque:
            raise NotebookError(f"not fixed: the fix changes {where}, which runs a non-Python cell magic")
        restored = list(new_lines)
        placeholder_rows = {text: (magic, offset) for magic in cell.magics
                            for offset, text in enumerate(magic.placeholders)}
        found: dict[tuple[int, int], int] = {}  # (magic first line, offset) -> index in new_lines
        for position, line in enumerate(new_lines):
            content = _without_ending(line)
            if content in placeholder_rows:
                magic, offset = placeholder_rows[content]
                if (magic.first, offset) in found:
                    row = magic.first + offset + 1
                    raise NotebookError(f"not fixed: the fix repeats IPython line {row} of {where}")
                found[(magic.first, offset)] = position
                original = cell.lines[magic.first + offset]
                restored[position] = _without_ending(original) + line[len(content):]
            elif self._marker in content:
                # A placeholder the fix re-indented or edited: name the line it stands for, when it is this cell's.
                mark = content[content.index(self._marker):]
                row = next((magic.first + offset + 1 for text, (magic, offset) in placeholder_rows.items()
                            if text.endswith(mark)), None)
                if row is None:
                    raise NotebookError(f"not fixed: the fix moves an IPython line of another cell into {where}")
                raise NotebookError(f"not fixed: the fix changes or re-indents IPython line {row} of {where}")
        previous = -1
        for magic in cell.magics:
            for offset in range(len(magic.placeholders)):
                position = found.get((magic.first, offset))
                row = magic.first + offset + 1
                if position is None:
                    raise NotebookError(f"not fixed: the fix changes or removes IPython line {row} of {where}")
                if position <= previous or (offset and position != previous + 1):
                    raise NotebookError(f"not fixed: the fix moves code around IPython line {row} of {where}")
                previous = position
            if magic.header and new_lines[:found[(magic.first, 0)]] != cell.program_lines[:magic.first]:
                raise NotebookError(f"not fixed: the fix puts code before the cell magic on line "
                                    f"{magic.first + 1} of {where}, which must come first")
        if not cell.reindentable:
            raise NotebookError(f"not fixed: the fix changes {where}, whose first line is indented and whose "
                                "other lines are not all: its indentation cannot be put back unambiguously")
        if cell.indent:
            placeholders = set(found.values())
            restored = [line if position in placeholders or not line.strip() else cell.indent + line
                        for position, line in enumerate(restored)]
        text = "".join(restored)
        endings = set(_ENDING.findall(cell.text))
        if endings == {"\r\n"}:
            text = re.sub(r"(?<!\r)\n", "\r\n", text)
        elif endings == {"\n"} or not endings:
            # A cell with no line break takes Jupyter's \n; libcst may have used the program's first ending.
            text = text.replace("\r\n", "\n")
        if not cell.text or cell.text[-1] not in "\r\n":
            text = re.sub(r"(?:\r\n|\r|\n)\Z", "", text)  # Jupyter's convention: no newline after the last line
        return text

    def _serialize(self, cell: _CodeCell, text: str, ensure_ascii: bool) -> str:
        """The JSON text of a new `source` value, in the form and layout the cell's value had."""
        source = cell.source
        if source.items is None:
            return json.dumps(text, ensure_ascii=ensure_ascii)
        originals = [self._text[a:b] for a, b in source.items]
        decoded = [json.loads(raw) for raw in originals]
        lines = _split_like(decoded, text)
        spelled = {}
        for raw, line in zip(originals, decoded):
            spelled.setdefault(line, raw)  # a line the fix kept keeps its JSON spelling
        items = [spelled.get(line) or json.dumps(line, ensure_ascii=ensure_ascii) for line in lines]
        if not items:
            return "[]"
        prefix, separator, suffix = self._list_layout(source)
        return "[" + prefix + separator.join(items) + suffix + "]"

    def _list_layout(self, source: _Source) -> tuple[str, str, str]:
        """(text after `[`, between two lines, before `]`) for a cell's list of lines.

        Every cell's `source` sits at the same depth, so any cell's list shows
        the layout; with none to copy, it follows the notebook's indentation."""
        candidates = [source] + [s for s in self._sources if s is not source and s.items]
        for other in candidates:
            if other.items is not None and len(other.items) >= 2:
                (first_start, first_end), (second_start, _) = other.items[:2]
                return (self._text[other.start + 1:first_start], self._text[first_end:second_start],
                        self._text[other.items[-1][1]:other.end - 1])
        compact_separator = self._member_gap if self._member_gap and "\n" not in self._member_gap else ", "
        for other in candidates:
            if other.items:
                prefix = self._text[other.start + 1:other.items[0][0]]
                separator = "," + prefix if "\n" in prefix else compact_separator
                return prefix, separator, self._text[other.items[0][1]:other.end - 1]
        newline = _ENDING.match(self._opening_gap)
        if newline is None:
            return "", compact_separator, ""
        unit = self._opening_gap[newline.end():]
        line_start = max(self._text.rfind("\n", 0, source.key_start), self._text.rfind("\r", 0, source.key_start)) + 1
        key_indent = self._text[line_start:source.key_start]
        if key_indent.strip(" \t"):
            return "", compact_separator, ""
        prefix = newline.group() + key_indent + unit
        return prefix, "," + prefix, newline.group() + key_indent

    def _check_written(self, new_text: str, texts: dict[int, str]) -> None:
        """The spliced JSON must read back as the notebook with just those sources replaced."""
        try:
            cells = json.loads(new_text)["cells"]
        except (ValueError, KeyError, TypeError):
            cells = None
        for index, text in texts.items():
            cell = self._cells[index]
            written = cells[cell.position]["source"] if cells is not None and cell.position < len(cells) else None
            written_text = "".join(written) if isinstance(written, list) else written
            if written_text != text or isinstance(written, list) != (cell.source.items is not None):
                raise NotebookError(f"not fixed: cell {cell.number} could not be written back exactly")


def read_notebook(data: bytes) -> Notebook:
    """A notebook file's bytes as a Notebook; NotebookError says in one line why it cannot be read."""
    bom = _BOM if data.startswith(_BOM) else b""
    if not data[len(bom):].strip():
        raise NotebookError("empty file: not a notebook")
    try:
        text = data[len(bom):].decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotebookError(f"not UTF-8 JSON: cannot decode byte {error.start} ({error.reason})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise NotebookError(f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise NotebookError("not a notebook: JSON nested too deeply") from None
    _check_format(document)
    sources, opening_gap, member_gap = _locate_sources(text)
    cells_json = document["cells"]
    if len(sources) != len(cells_json):
        raise NotebookError("not a notebook: its cells could not be located in the JSON text")

    code = [(position, source) for position, (cell, source) in enumerate(zip(cells_json, sources))
            if cell["cell_type"] == "code"]
    cell_texts = [_joined(cells_json[position]["source"]) for position, _ in code]
    marker = "gacclint-notebook"
    while any(marker in cell_text for cell_text in cell_texts):
        marker += "-"
    counter = itertools.count(1)
    cells: list[_CodeCell] = []
    rows: list[tuple[int, int]] = []
    separators: dict[str, int] = {}
    program: list[str] = []
    syntax_errors: list[NotebookSyntaxError] = []
    for index, ((position, source), cell_text) in enumerate(zip(code, cell_texts)):
        number = index + 1
        if index:
            separator = f"pass  # {marker} cell {number}"
            separators[separator] = index
            program.append(separator + "\n")
            previous = cells[-1]
            rows.append((index - 1, len(previous.lines) + 1))
        try:
            cell_text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise NotebookError(f"cell {number}: not valid Unicode ({error.reason})") from None
        lines = split_lines(cell_text)
        program_lines, magics, opaque = _neutralise(lines, marker, counter, cookie_rows=max(0, 2 - len(rows)))
        indent = ""
        try:
            _check_syntax(program_lines, number)
        except NotebookSyntaxError as error:
            indent = _leading_indent(lines)
            dedented = _dedented(lines, indent) if indent else None
            if dedented is not None:
                program_lines, magics, opaque = _neutralise(dedented, marker, counter,
                                                            cookie_rows=max(0, 2 - len(rows)))
            if dedented is None or not _parses("".join(program_lines)):
                # Reported, and left out of the program: a pasted sketch (`...` under a `with`) in one
                # cell must not hide the training loops of the others. The cell is never changed.
                syntax_errors.append(error)
                program_lines, magics, opaque = [f"# {marker} does not parse\n"] * len(lines), [], True
                indent = ""
        cells.append(_CodeCell(number, position, source, cell_text, lines, program_lines, magics, opaque, indent,
                               _reindentable(lines, indent)))
        rows.extend((index, row) for row in range(1, len(lines) + 1))
        program.extend(program_lines)
    return Notebook("".join(program).encode("utf-8"), data, text, bom, cells, sources, rows, separators, marker,
                    opening_gap, member_gap, syntax_errors)


def _check_format(document: object) -> None:
    """A notebook of nbformat 4 that the nbformat schema accepts."""
    if not isinstance(document, dict) or "nbformat" not in document:
        raise NotebookError("not a Jupyter notebook: the JSON has no 'nbformat' version")
    major, minor = document.get("nbformat"), document.get("nbformat_minor", 0)
    if not isinstance(major, int) or not isinstance(minor, int):
        raise NotebookError("not a Jupyter notebook: 'nbformat' and 'nbformat_minor' must be integers")
    if major < 4:
        raise NotebookError(f"nbformat {major} notebook: only nbformat 4 is read; upgrade it with "
                            "`jupyter nbconvert --to notebook --inplace`")
    if major > 4:
        raise NotebookError(f"nbformat {major} notebook: only nbformat 4 is read")
    # Imported here: nbformat brings jsonschema, half a second that runs without notebooks need not pay.
    from nbformat.validator import iter_validate

    try:
        errors = [error for error in iter_validate(document, relax_add_props=True) if not _tolerated(error)]
    except RecursionError:
        raise NotebookError("not a notebook: JSON nested too deeply to validate") from None
    if errors:
        error = errors[0]
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
        message = error.message.splitlines()[0] if error.message else "invalid"
        if len(message) > 160:
            message = message[:160] + "..."
        raise NotebookError(f"not a valid nbformat 4 notebook: {path.lstrip('.') or 'top level'}: {message}")


def _tolerated(error) -> bool:
    """A schema error in what gacclint neither reads nor writes (outputs, metadata, attachments, a missing
    cell id, which nbformat adds itself on reading): Jupyter opens such notebooks, so they are checked."""
    if any(part in _UNREAD_FIELDS for part in error.absolute_path):
        return True
    missing = re.fullmatch(r"'(\w+)' is a required property", error.message)
    return error.validator == "required" and missing is not None and missing.group(1) in _UNREAD_FIELDS | {"id"}


def _joined(source: str | list[str]) -> str:
    return "".join(source) if isinstance(source, list) else source


def _without_ending(line: str) -> str:
    return line.rstrip("\r\n")


def _split_like(original: list[str], text: str) -> list[str]:
    """`text` as a list of lines, split the way the cell's original list was.

    Jupyter splits with str.splitlines (which also breaks at \\f, \\x1c, ...);
    other writers split at \\n only. Whichever reproduces the original is used."""
    joined = "".join(original)
    for split in (lambda s: s.splitlines(keepends=True), lambda s: re.findall(r"[^\n]*\n|[^\n]+\Z", s)):
        if split(joined) == original:
            return split(text)
    return text.splitlines(keepends=True)


# --- the JSON text: where values lie ------------------------------------------------------------------

def _value_end(text: str, start: int) -> int:
    return _DECODER.raw_decode(text, start)[1]


def _object_members(text: str, start: int) -> tuple[list[tuple[str, int, int, int]], int]:
    """The members of the object at `start` as (key, key start, value start, value end), and the object's end."""
    members = []
    position = _JSON_SPACE.match(text, start + 1).end()
    while text[position] != "}":
        key_start = position
        key, position = scanstring(text, position + 1)
        position = _JSON_SPACE.match(text, position).end() + 1  # the colon
        value_start = _JSON_SPACE.match(text, position).end()
        value_end = _value_end(text, value_start)
        members.append((key, key_start, value_start, value_end))
        position = _JSON_SPACE.match(text, value_end).end()
        if text[position] == ",":
            position = _JSON_SPACE.match(text, position + 1).end()
    return members, position + 1


def _array_items(text: str, start: int) -> tuple[list[tuple[int, int]], int]:
    """The spans of the array's items at `start`, and the array's end."""
    items = []
    position = _JSON_SPACE.match(text, start + 1).end()
    while text[position] != "]":
        end = _value_end(text, position)
        items.append((position, end))
        position = _JSON_SPACE.match(text, end).end()
        if text[position] == ",":
            position = _JSON_SPACE.match(text, position + 1).end()
    return items, position + 1


def _locate_sources(text: str) -> tuple[list[_Source], str, str]:
    """Each cell's `source` span, and the whitespace the writer put after the top-level `{` and between
    two top-level members (what an indented or compact layout looks like in this file)."""
    start = _JSON_SPACE.match(text).end()
    members, _ = _object_members(text, start)
    sources: list[_Source] = []
    for key, _, value_start, _ in members:
        if key == "cells":  # a repeated key: the last one counts, as in json.loads
            sources = [_cell_source(text, item_start) for item_start, _ in _array_items(text, value_start)[0]]
    opening_gap = text[start + 1:members[0][1]] if members else ""
    member_gap = text[members[0][3]:members[1][1]] if len(members) > 1 else ""
    return sources, opening_gap, member_gap


def _cell_source(text: str, start: int) -> _Source:
    source = None
    for key, key_start, value_start, value_end in _object_members(text, start)[0]:
        if key == "source":
            items = _array_items(text, value_start)[0] if text[value_start] == "[" else None
            source = _Source(key_start, value_start, value_end, items)
    if source is None:  # the schema requires a source: validation has already refused this
        raise NotebookError("not a notebook: a cell has no 'source'")
    return source


# --- IPython syntax ---------------------------------------------------------------------------------------

class _Scanner:
    """Whether a line begins a statement: not inside a string, brackets or a backslash continuation.

    Only there does IPython look for its escapes, so `% k` continuing an
    expression in brackets, or a docstring line starting with `!`, stays Python."""

    def __init__(self) -> None:
        self.depth = 0
        self.quote: str | None = None
        self.continued = False

    def at_statement_start(self) -> bool:
        return self.depth == 0 and self.quote is None and not self.continued

    def feed(self, line: str) -> list[int]:
        """Reads one line (without its ending); returns the positions of its code characters outside brackets."""
        top_level = []
        position, length = 0, len(line)
        in_code = True
        while position < length:
            char = line[position]
            if self.quote is not None:
                if char == "\\":
                    position += 2
                elif line.startswith(self.quote, position):
                    position += len(self.quote)
                    self.quote = None
                else:
                    position += 1
                continue
            if char == "#":
                in_code = False
                break
            if char in "\"'":
                triple = line[position:position + 3]
                self.quote = triple if triple in ('"""', "'''") else char
                position += len(self.quote)
                continue
            if char in "([{":
                self.depth += 1
            elif char in ")]}":
                self.depth = max(0, self.depth - 1)
            elif self.depth == 0:
                top_level.append(position)
            position += 1
        if self.quote in ("'", '"') and position != length + 1:
            self.quote = None  # unterminated on its line: a syntax error the parser reports
        self.continued = in_code and self.quote is None and line.endswith("\\")
        return top_level


def _statement_magic(line: str) -> str | None:
    """The placeholder statement for a line that begins a statement, if it is IPython syntax."""
    stripped = line.lstrip(" \t\f")
    indent = line[:len(line) - len(stripped)]
    if stripped[:1] in _ESCAPES:
        return indent + "pass"
    scanner = _Scanner()
    top_level = scanner.feed(line)
    complete = scanner.depth == 0 and scanner.quote is None
    target = _magic_assignment_target(line, top_level)
    if target is not None:
        return target + " = None"
    code = [position for position in top_level if not line[position].isspace()]
    if complete and code and line[code[-1]] == "?":
        return indent + "pass"  # obj? / obj?? / %magic?: help
    automagic = _AUTOMAGIC_LINE.match(stripped)
    if complete and automagic and automagic.group(1) in _AUTOMAGICS and not _parses(stripped):
        return indent + "pass"
    return None


def _magic_assignment_target(line: str, top_level: list[int]) -> str | None:
    """`x` in `x = !ls` or `x = %sx ls`: the text before the `=` when its value is IPython syntax."""
    for position in top_level:
        if line[position] != "=":
            continue
        if (position and line[position - 1] in _OPERATOR_BEFORE_EQUALS) or line[position + 1:position + 2] == "=":
            return None
        target = line[:position].rstrip()
        if line[position + 1:].lstrip()[:1] in ("!", "%") and _parses(target.lstrip() + " = None"):
            return target
        return None
    return None


def _leading_indent(lines: list[str]) -> str:
    """The indentation of a cell's first line, which IPython removes before running the cell."""
    first = lines[0] if lines else ""
    return first[:len(first) - len(first.lstrip(" \t"))] if first.strip() else ""


def _dedented(lines: list[str], indent: str) -> list[str]:
    """The lines as IPython runs them: `indent` removed from each line that starts with it."""
    return [line[len(indent):] if line.startswith(indent) else line for line in lines]


def _reindentable(lines: list[str], indent: str) -> bool:
    """Every line that holds code starts with `indent`: a fix's lines take it back unambiguously."""
    return all(line.startswith(indent) or not line.strip() for line in lines)


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _neutralise(lines: list[str], marker: str, counter: itertools.count, cookie_rows: int
                ) -> tuple[list[str], list[_Magic], bool]:
    """The program's lines for a cell (IPython syntax replaced, a final line ending), its magics, and
    whether the whole cell is opaque (a cell magic whose body is not Python). Its first `cookie_rows`
    rows are the program's first two, where a coding declaration would count."""
    program = list(lines)
    if program and not _ENDING.search(program[-1][-1:]):
        program[-1] += "\n"
    magics: list[_Magic] = []

    def place(first: int, statement: str, header: bool = False, count: int = 1) -> None:
        placeholders = [f"{statement}  # {marker} magic {next(counter)}"]
        for row in range(first + 1, first + count):
            indent = re.match(r"[ \t]*", lines[row]).group()
            placeholders.append(f"{indent}# {marker} magic {next(counter)}")
        for offset, placeholder in enumerate(placeholders):
            ending = program[first + offset][len(_without_ending(program[first + offset])):]
            program[first + offset] = placeholder + ending
        magics.append(_Magic(first, placeholders, header))

    start = 0
    # A cell magic is the cell's first line; IPython drops blank lines before it.
    first_line = next((row for row, line in enumerate(lines) if line.strip()), None)
    if first_line is not None and lines[first_line].startswith("%%"):
        name = re.match(r"%%(\S*)", lines[first_line]).group(1)
        if name not in _PYTHON_CELL_MAGICS:
            return [line[len(_without_ending(line)):] for line in program], [], True
        place(first_line, "pass", header=True)
        start = first_line + 1
    scanner = _Scanner()
    row = start
    while row < len(lines):
        content = _without_ending(lines[row])
        if row < cookie_rows and scanner.at_statement_start() and _CODING_COOKIE.match(content):
            place(row, re.match(r"[ \t\f]*", content).group() + "#")
            row += 1
            continue
        statement = _statement_magic(content) if scanner.at_statement_start() else None
        if statement is None:
            scanner.feed(content)
            row += 1
            continue
        # An escaped command runs on over the lines its backslashes continue.
        end = row
        while end + 1 < len(lines) and _without_ending(lines[end]).endswith("\\"):
            end += 1
        place(row, statement, count=end - row + 1)
        row = end + 1
    return program, magics, False


def _check_syntax(program_lines: list[str], number: int) -> None:
    """Each cell runs on its own, so each must parse on its own: a cell cannot end inside a statement
    that the next one finishes, and a syntax error is reported where it is in the notebook."""
    try:
        ast.parse("".join(program_lines))
    except SyntaxError as error:
        if _newer_grammar("".join(program_lines)):
            return  # valid in a newer Python than this one (PEP 701 f-strings): read as a `.py` file is
        message = error.msg or "invalid syntax"
        if "too many" in message and "nested" in message:  # CPython's parser limits, not the user's typo
            raise NotebookError(f"cell {number}: nested too deeply to parse ({message})") from None
        raise NotebookSyntaxError(message, number, error.lineno or 1, max(error.offset or 1, 1)) from None
    except ValueError as error:  # null characters
        raise NotebookError(f"cell {number}: {error}") from None
    except (RecursionError, MemoryError):
        raise NotebookError(f"cell {number}: nested too deeply to parse") from None


def _newer_grammar(code: str) -> bool:
    """libcst's parser, which knows the grammar of newer Pythons than the one running, accepts
    `code` (a `.py` file CPython's parser refuses is read by it the same way)."""
    import libcst  # only for the rare cell this Python's parser refuses

    try:
        libcst.parse_module(code)
    except Exception:  # libcst's ParserSyntaxError, or anything it fails on: the cell stays refused
        return False
    return True


def _refuse_moves(changes: dict[int, tuple[list[str], list[str]]], marker: str) -> None:
    """A statement the fix removed from one cell and added to another moves code between cells: refused."""
    net: dict[int, Counter[str]] = {}
    for number, (before, after) in changes.items():
        counts: Counter[str] = Counter()
        for line in after:
            counts[line.strip()] += 1
        for line in before:
            counts[line.strip()] -= 1
        net[number] = Counter({line: count for line, count in counts.items()
                               if count and line and not line.startswith("#") and marker not in line})
    for source_number, source_counts in net.items():
        for line, count in source_counts.items():
            if count >= 0:
                continue
            for target_number, target_counts in net.items():
                if target_number != source_number and target_counts.get(line, 0) > 0:
                    raise NotebookError(f"not fixed: the fix moves `{line}` from cell {source_number} "
                                        f"to cell {target_number}")
