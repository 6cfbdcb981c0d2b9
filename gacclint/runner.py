"""Check and fix files: the part of the pipeline that touches the file system."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from gacclint.discover import discover, may_hold_training_loop
from gacclint.engine import Located, SourceError, lint_source
from gacclint.fixes.apply import Dropped, fix_source
from gacclint.selection import Selection
from gacclint.source import ReadError, read_source, write_source

# Set by `--debug`: let internal errors propagate with their traceback.
DEBUG = False


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
        report.source = read_source(path)
        if may_hold_training_loop(report.source):
            report.module, report.findings = lint_source(report.source, selection)
    except (ReadError, SourceError) as error:
        report.error = str(error)
    except RecursionError:
        report.error = "nested too deeply to analyse"
    except Exception as error:  # noqa: BLE001 - one file's bug must not stop the run
        if DEBUG:
            raise
        report.error = f"internal error, file skipped ({type(error).__name__}: {error}); rerun with --debug"
    return report


def fix_file(path: Path, selection: Selection, unsafe: bool, write: bool) -> FileReport:
    report = FileReport(path)
    try:
        report.source = read_source(path)
        if not may_hold_training_loop(report.source):
            return report
        outcome = fix_source(report.source, selection, unsafe)
        report.findings, report.applied, report.dropped = outcome.remaining, outcome.applied, outcome.dropped
        if outcome.changed:
            report.fixed = outcome.fixed
            if write:
                write_source(path, outcome.fixed, report.source)
    except (ReadError, SourceError) as error:
        report.error = str(error)
    except RecursionError:
        report.error = "nested too deeply to analyse; not changed"
    except Exception as error:  # noqa: BLE001 - one file's bug must not stop the run
        if DEBUG:
            raise
        report.error = f"internal error, file not changed ({type(error).__name__}: {error}); rerun with --debug"
    return report
