"""gacclint's rules inside flake8: `flake8 --select GA`.

Registered as the flake8 extension `GA` (an entry point in the group
`flake8.extension`). It analyses the text flake8 read, with every code that is
on by default in gacclint; flake8's own `--select`, `--ignore`,
`--per-file-ignores` and `# noqa` then choose among them. gacclint's own
settings (`[tool.gacclint]`) are not read: flake8's options are the
configuration here.
"""

from __future__ import annotations

import ast
import io
import tokenize
from typing import Iterator

from gacclint import __version__
from gacclint.diagnostics import SYNTAX_ERROR
from gacclint.runner import analyse_source
from gacclint.selection import Selection

Finding = tuple[int, int, str, type]


class GacclintChecker:
    name = "gacclint"
    version = __version__

    # flake8 runs a plugin that takes `tree` once per file (the other plugin
    # kinds run per line); the analysis reads the text of `lines`, not the tree.
    def __init__(self, tree: ast.AST, lines: list[str]) -> None:
        self.lines = lines

    def run(self) -> Iterator[Finding]:
        try:
            diagnostics = analyse_source(_source_bytes(self.lines), Selection())
        except Exception as error:  # noqa: BLE001 - as in `gacclint check`, one file must not stop the run
            # The file is not passed silently: too large, nested too deeply or
            # a gacclint bug, it is reported where flake8 reports findings.
            yield 1, 0, f"{SYNTAX_ERROR} gacclint could not analyse this file: {_describe(error)}", type(self)
            return
        for diagnostic in diagnostics:
            # flake8 counts columns from 0; gacclint from 1.
            column = max(diagnostic.column - 1, 0)
            yield diagnostic.row, column, f"{diagnostic.code} {diagnostic.message}", type(self)


def _source_bytes(lines: list[str]) -> bytes:
    """The file's bytes again: flake8 decoded them (by their coding cookie, BOM
    dropped), gacclint reads bytes and decodes them the same way, so the text
    is encoded in the encoding it declares (columns count characters either way)."""
    text = "".join(lines)
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(text.encode("utf-8", errors="replace")).readline)
    except SyntaxError:  # an unknown encoding in the cookie: flake8 would not have parsed the file
        encoding = "utf-8"
    return text.encode(encoding, errors="replace")


def _describe(error: Exception) -> str:
    """Why the file was not analysed, in the words `gacclint check` uses."""
    from gacclint.analysis import describe
    from gacclint.engine import SourceError

    if isinstance(error, SourceError):
        return str(error)
    if isinstance(error, RecursionError):
        return "nested too deeply to analyse"
    if isinstance(error, MemoryError):
        return "out of memory while analysing it"
    return f"internal error ({describe(error)}); run `gacclint check --debug` on it"
