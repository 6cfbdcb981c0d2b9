"""Where a fix adds an import: where isort would put it.

isort's default layout: `__future__` imports, then the standard library, then
third-party and first-party sections, each separated by a blank line; inside
a section, the `import x` lines first, then the `from x import y` lines, each
sorted by module name (case-insensitively).
"""

from __future__ import annotations

import sys

import libcst as cst

from gacclint.fixes.edits import Edit, InsertAfter, InsertBefore, Replace
from gacclint.loops.vocabulary import dotted_name

_STDLIB = frozenset(sys.stdlib_module_names)


def _imported(small: cst.BaseSmallStatement) -> str | None:
    """The (first) module a top-level import statement names."""
    if isinstance(small, cst.Import):
        return dotted_name(small.names[0].name)
    if isinstance(small, cst.ImportFrom) and small.module is not None and not small.relative:
        return dotted_name(small.module)
    return None


def _is_stdlib(name: str | None) -> bool:
    return name is not None and name.split(".")[0] in _STDLIB


def add_import(module: cst.Module, name: str) -> tuple[Edit, ...]:
    """Edits adding `import name` (a standard-library module) to `module`."""
    line = f"import {name}"
    imports: list[tuple[cst.SimpleStatementLine, cst.BaseSmallStatement]] = []
    first_code: cst.BaseStatement | None = None
    for index, statement in enumerate(module.body):
        small = statement.body[0] if isinstance(statement, cst.SimpleStatementLine) else None
        if isinstance(small, (cst.Import, cst.ImportFrom)):
            if _imported(small) == "__future__":
                continue
            if first_code is not None:
                break  # the first run of imports only
            imports.append((statement, small))  # type: ignore[arg-type]
            continue
        docstring = (index == 0 and isinstance(small, cst.Expr)
                     and isinstance(small.value, (cst.SimpleString, cst.ConcatenatedString)))
        if docstring:
            continue
        if imports:
            break
        first_code = first_code or statement
    if not imports:
        return (InsertBefore(first_code or module.body[0], line),)
    standard = [(s, small) for s, small in imports if _is_stdlib(_imported(small))]
    plain = [(s, small) for s, small in standard if isinstance(small, cst.Import)]
    for statement, small in plain:
        if (_imported(small) or "").lower() > name.lower():
            return (InsertBefore(statement, line),)
    if plain:
        return (InsertAfter(plain[-1][0], line),)
    if standard:
        return (InsertBefore(standard[0][0], line),)
    # A new standard-library section above the others, a blank line between.
    anchor = imports[0][0]
    new = cst.parse_statement(line + module.default_newline, module.config_for_parsing)
    new = new.with_changes(leading_lines=anchor.leading_lines)
    return (InsertBefore(anchor, new, new=True),
            Replace(anchor, anchor.with_changes(leading_lines=[cst.EmptyLine()])))
