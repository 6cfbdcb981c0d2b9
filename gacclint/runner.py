"""Check and fix files: the part of the pipeline that touches the file system."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from gacclint.discover import discover, may_hold_training_loop
from gacclint.engine import Located, SourceError, lint_source, parse
from gacclint.fixes.apply import Dropped, fix_source
from gacclint.selection import Selection
from gacclint.source import ReadError, WriteError, read_source, write_source

# Set by `--debug`: let internal errors propagate with their traceback.
DEBUG = False

# A file that may hold a training loop is parsed and analysed only below this
# size: the largest file of a 22-repository corpus is a third of it, and a
# generated module of several megabytes would take minutes. A larger file is
# reported and skipped (one without `backward(` is never parsed at all).
MAX_ANALYSED_BYTES = 1024 * 1024


def _describe(error: BaseException) -> str:
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


def _read(path: Path) -> tuple[bytes, bool]:
    """The file's bytes, and whether it is to be analysed."""
    source = read_source(path)
    if not may_hold_training_loop(source):
        return source, False
    if len(source) > MAX_ANALYSED_BYTES:
        raise ReadError(f"{len(source) / (1024 * 1024):.1f} MB is more than the {MAX_ANALYSED_BYTES // (1024 * 1024)} MB "
                        "gacclint analyses in one file (generated code?); skipped")
    return source, True


@dataclass
class FileReport:
    path: Path
    source: bytes = b""
    module: cst.Module | None = None
    findings: list[Located] = field(default_factory=list)
    error: str | None = None
    fixed: bytes | None = None  # set by fix when the content changed
    applied: list[Located] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)


def check_paths(paths: list[Path], selection: Selection) -> list[FileReport]:
    return [check_file(path, selection) for path in discover(paths)]


def check_file(path: Path, selection: Selection) -> FileReport:
    report = FileReport(path)
    try:
        report.source, analyse = _read(path)
        if analyse:
            report.module, report.findings = lint_source(report.source, selection)
    except (ReadError, SourceError) as error:
        report.error = str(error)
    except RecursionError:
        report.error = "nested too deeply to analyse"
    except MemoryError:
        report.error = "out of memory while analysing it; skipped"
    except Exception as error:  # noqa: BLE001 - one file's bug must not stop the run
        if DEBUG:
            raise
        report.error = f"internal error, file skipped ({_describe(error)}); rerun with --debug"
    return report


def unreproducible(source: bytes) -> str | None:
    """Why a fix of `source` would change bytes outside its edits, or None.

    A fix writes the whole module back from libcst's tree, and libcst loses a
    few things CPython accepts: a form feed before the code on a line, the
    last of lone-CR line endings. Such a file is not fixed rather than changed
    where no fix asked for it."""
    regenerated = parse(source).bytes
    if regenerated == source:
        return None
    lines, again = _lines(source), _lines(regenerated)
    row = next((i for i, (a, b) in enumerate(zip(lines, again)) if a != b), min(len(lines), len(again)))
    line = lines[row] if row < len(lines) else b""
    what = ("a form feed before code" if b"\f" in line else
            "a final lone CR line ending" if line.endswith(b"\r") else "every byte")
    return f"not fixed: libcst would not keep {what} on line {row + 1}, outside the fix"


def _lines(data: bytes) -> list[bytes]:
    return re.findall(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z", data)


def fix_file(path: Path, selection: Selection, unsafe: bool, write: bool) -> FileReport:
    report = FileReport(path)
    try:
        report.source, analyse = _read(path)
        if not analyse:
            return report
        outcome = fix_source(report.source, selection, unsafe)
        report.findings, report.applied, report.dropped = outcome.remaining, outcome.applied, outcome.dropped
        if outcome.changed:
            refusal = unreproducible(report.source)
            if refusal is None and write:
                try:
                    write_source(path, outcome.fixed, report.source)
                except WriteError as error:
                    refusal = str(error)
            if refusal is not None:
                # Nothing was fixed: report what the file held when it was read.
                report.error, report.applied, report.dropped = refusal, [], []
                report.module, report.findings = lint_source(report.source, selection)
                return report
            report.fixed = outcome.fixed
    except (ReadError, SourceError) as error:
        report.error = str(error)
    except RecursionError:
        report.error = "nested too deeply to analyse; not changed"
    except MemoryError:
        report.error = "out of memory while analysing it; not changed"
    except Exception as error:  # noqa: BLE001 - one file's bug must not stop the run
        if DEBUG:
            raise
        report.error = f"internal error, file not changed ({_describe(error)}); rerun with --debug"
    return report
