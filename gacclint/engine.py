"""Check one source: parse once, build the loop model, run the rules, locate findings."""

from __future__ import annotations

import ast
from dataclasses import dataclass

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from gacclint.loops.find import build_model
from gacclint.loops.lean import Layout, Unsupported
from gacclint.rules import all_rules
from gacclint.rules.base import Finding, Fix
from gacclint.selection import Selection


@dataclass(frozen=True)
class Located:
    """A finding with its place in the source (1-based rows and columns)."""

    code: str
    message: str
    row: int
    column: int
    end_row: int
    end_column: int
    fix: Fix | None
    finding: Finding


class SourceError(Exception):
    """The source cannot be checked; the message says why."""


class SyntaxProblem(SourceError):
    """The source does not parse: reported as a GA001 finding at its position."""

    def __init__(self, message: str, row: int, column: int) -> None:
        super().__init__(f"syntax error at {row}:{column}: {message}")
        self.message, self.row, self.column = message, row, column


def syntax_problem(error: SyntaxError) -> SyntaxProblem:
    return SyntaxProblem(error.msg or "invalid syntax", error.lineno or 1, max(error.offset or 1, 1))


def cpython_tree(source: bytes) -> tuple[ast.Module | None, SyntaxProblem | None]:
    """CPython's own parser first: it rejects pathological nesting in microseconds,
    where libcst's native parser can crash the process or take minutes. Returns
    its tree, or its complaint about an ordinary syntax error (libcst may still
    know a newer grammar); raises SourceError for what must never reach libcst."""
    try:
        return ast.parse(source), None
    except (RecursionError, MemoryError):
        raise SourceError("nested too deeply to parse") from None
    except ValueError as error:  # "source code string cannot contain null bytes"
        raise SourceError(str(error)) from None
    except SyntaxError as error:
        if too_nested(error):
            raise SourceError(f"nested too deeply to parse ({error.msg} at line {error.lineno})") from None
        return None, syntax_problem(error)


def too_nested(error: SyntaxError) -> bool:
    """CPython's parser limits, which libcst must never be handed."""
    return "too many" in (error.msg or "") and "nested" in (error.msg or "")


def parse(source: bytes, complaint: SyntaxProblem | None = None, prechecked: bool = False) -> cst.Module:
    """libcst's tree of `source`. `prechecked`: the caller ran CPython's parser
    on it already (its complaint, if any, is `complaint`)."""
    if not prechecked:
        complaint = cpython_tree(source)[1]
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as error:
        if complaint is None:
            # CPython accepts it (mixed tab and space indentation libcst's tokenizer rejects):
            # valid Python, so no syntax error to report, but nothing to rewrite or explain with.
            raise SourceError(f"valid Python that libcst's parser cannot read ({error.message} at "
                              f"{error.raw_line}:{error.raw_column + 1}): it cannot be fixed or explained") from None
        raise complaint or SyntaxProblem(error.message, error.raw_line, error.raw_column + 1) from None
    except (UnicodeDecodeError, LookupError) as error:
        raise SourceError(f"cannot decode: {error}") from None
    except SyntaxError as error:  # raised by the encoding detection: no usable coding declaration
        raise SourceError(f"cannot decode: {error.msg}") from None
    except RecursionError:
        raise SourceError("nesting too deep to parse") from None


def lint_module(module: cst.Module, selection: Selection, layout: Layout | None = None) -> list[Located]:
    """`layout`: `module` is a lean tree (gacclint/loops/lean.py) and this is where its nodes are;
    raises Unsupported when a finding lands on a node it has no place for."""
    model = build_model(module, layout)
    if not model.loops and not model.step_helpers:
        return []
    findings: list[Finding] = []
    seen: set[tuple[str, int]] = set()
    for rule_class in all_rules():
        if not selection.selects(rule_class.code):
            continue
        for finding in rule_class().check_module(model):
            key = (finding.code, id(finding.node))
            if key not in seen:
                seen.add(key)
                findings.append(finding)
    if not findings:
        return []
    if layout is not None:
        def place(node: cst.CSTNode) -> tuple[int, int, int, int]:
            found = layout.position(node)
            if found is None:
                raise Unsupported(f"no place for a {type(node).__name__} node")
            return found
    else:
        try:
            positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
        except (RecursionError, KeyError):
            # libcst's position pass recurses per nesting level (and reports the
            # overflow as a KeyError): 500 nested lambdas exhaust it.
            raise SourceError("nested too deeply to analyse") from None

        def place(node: cst.CSTNode) -> tuple[int, int, int, int]:
            span = positions[node]
            return span.start.line, span.start.column, span.end.line, span.end.column
    located = []
    for finding in findings:
        row, column, end_row, end_column = place(finding.node)
        located.append(Located(finding.code, finding.message, row, column + 1, end_row, end_column + 1,
                               finding.fix, finding))
    located.sort(key=lambda f: (f.row, f.column, f.code))
    return located


def lint_source(source: bytes, selection: Selection) -> tuple[cst.Module, list[Located]]:
    module = parse(source)
    return module, lint_module(module, selection)
