#!/usr/bin/env python3
"""Run `check` and `fix` over copies of real repositories and tabulate what went wrong.

    python scripts/realrepos.py /path/to/repo [/path/to/other ...] [--unsafe-fixes] [--jobs N]

For each repository, in this process (no subprocess, no import of the code
read): the files gacclint discovers, findings per code, files it could not
read or parse, crashes (an exception escaping the engine, a rule or a fix),
fixes whose result does not parse (dropped by the fixpoint, or written and
rejected by CPython's own parser), fixes that are not stable (a second `fix`
changes the file again), and the seconds it took. `fix` runs on a temporary
copy of each file that has findings, never on the given tree.

Prints a Markdown table, then one line per problem with its path and reason.
Exits 1 when any repository had a crash, an unparseable or an unstable fix.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gacclint.analysis import Job, run_job  # noqa: E402
from gacclint.discover import discover  # noqa: E402
from gacclint.fixes.apply import fix_source  # noqa: E402
from gacclint.notebook import read_notebook  # noqa: E402
from gacclint.source import ReadError, read_source  # noqa: E402
from gacclint.selection import Selection, UnknownCode, parse_codes  # noqa: E402


@dataclass
class FileResult:
    path: str
    seconds: float = 0.0
    codes: Counter = field(default_factory=Counter)
    unreadable: str | None = None
    crashes: list[str] = field(default_factory=list)
    unparseable: list[str] = field(default_factory=list)
    unstable: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    applied: int = 0


@dataclass
class RepoResult:
    name: str
    files: int = 0
    seconds: float = 0.0
    codes: Counter = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    unparseable: list[str] = field(default_factory=list)
    unstable: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    applied: int = 0
    slowest: tuple[float, str] = (0.0, "")


def _cpython_error(source: bytes) -> str | None:
    """CPython's complaint, compiling (never running) the source: catches what
    parsing alone does not, such as a `continue` moved out of its loop."""
    try:
        compile(source, "<fixed>", "exec", dont_inherit=True)
    except SyntaxError as error:
        return f"{error.msg} at {error.lineno}:{error.offset}"
    except (ValueError, RecursionError, MemoryError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def _crash(stage: str, error: BaseException) -> str:
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return f"{stage}: {type(error).__name__}: {error} ({Path(frame.filename).name}:{frame.lineno})"


def run_file(path: Path, shown: str, selection: Selection, unsafe: bool) -> FileResult:
    """Check one file, then fix a temporary copy of it twice. Internal errors
    propagate (debug=True): they are what this script counts."""
    result = FileResult(shown)
    started = time.perf_counter()
    try:
        source = read_source(path)
    except ReadError as error:
        result.unreadable = str(error)
        return result
    try:
        report = run_job(Job(path, source, selection, debug=True))
    except Exception as error:  # noqa: BLE001
        result.crashes.append(_crash("check", error))
        result.seconds = time.perf_counter() - started
        return result
    if report.error:
        result.unreadable = report.error
    result.codes.update(f.code for f in report.diagnostics)
    if not report.diagnostics:
        result.seconds = time.perf_counter() - started
        return result
    with tempfile.TemporaryDirectory(prefix="gacclint-realrepos-") as scratch:
        copy = Path(scratch, path.name)
        shutil.copyfile(path, copy)
        try:
            fixed = run_job(Job(copy, source, selection, "fix", unsafe, write=True, debug=True))
        except Exception as error:  # noqa: BLE001
            result.crashes.append(_crash("fix", error))
            result.seconds = time.perf_counter() - started
            return result
        if fixed.error and fixed.error.startswith("not fixed: libcst"):
            result.refused.append(fixed.error)
        elif fixed.error:
            result.crashes.append(f"fix: {fixed.error}")
        result.applied = fixed.fixed
        for line in fixed.dropped:
            (result.unparseable if "does not parse" in line else result.dropped).append(line)
        if fixed.fixed:
            written = copy.read_bytes()
            if copy.suffix == ".ipynb":  # what is analysed and fixed is the program of its code cells
                written, source = read_notebook(written).program, read_notebook(source).program
            if written != fixed.fixed_source:
                result.crashes.append("fix: the file on disk is not the fixed content")
            complaint = _cpython_error(written)
            if complaint and not _cpython_error(source):
                result.unparseable.append(f"fixed ({fixed.fixed} fixes), CPython rejects it: {complaint}")
            try:
                again = fix_source(written, selection, unsafe)
            except Exception as error:  # noqa: BLE001
                result.crashes.append(_crash("second fix", error))
            else:
                if again.changed:
                    codes = ",".join(f.code for f in again.applied)
                    result.unstable.append(f"a second fix applies {codes}")
    result.seconds = time.perf_counter() - started
    return result


def _run_file_job(job: tuple[str, str, Selection, bool]) -> FileResult:
    path, shown, selection, unsafe = job
    return run_file(Path(path), shown, selection, unsafe)


def run_repo(root: Path, selection: Selection, unsafe: bool, jobs: int) -> RepoResult:
    result = RepoResult(root.name)
    started = time.perf_counter()
    paths = list(discover([root]))
    result.files = len(paths)
    work = [(str(p), str(p.relative_to(root)) if p.is_relative_to(root) else str(p),
             selection, unsafe) for p in paths]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            files = list(pool.map(_run_file_job, work, chunksize=8))
    else:
        files = [_run_file_job(job) for job in work]
    for file in files:
        result.codes.update(file.codes)
        result.applied += file.applied
        if file.unreadable:
            result.unreadable.append(f"{file.path}: {file.unreadable}")
        result.crashes += [f"{file.path}: {line}" for line in file.crashes]
        result.unparseable += [f"{file.path}: {line}" for line in file.unparseable]
        result.unstable += [f"{file.path}: {line}" for line in file.unstable]
        result.dropped += [f"{file.path}: {line}" for line in file.dropped]
        result.refused += [f"{file.path}: {line}" for line in file.refused]
        result.slowest = max(result.slowest, (file.seconds, file.path))
    result.seconds = time.perf_counter() - started
    return result


def table(results: list[RepoResult]) -> str:
    lines = ["| repository | files | findings per code | unreadable | crashes | fixes applied | "
             "fixes not parsing | fixes not stable | fixes dropped | seconds | slowest file |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        codes = ", ".join(f"{code} {n}" for code, n in sorted(r.codes.items())) or "-"
        slowest = f"{r.slowest[0]:.1f} s `{r.slowest[1]}`" if r.slowest[1] else "-"
        lines.append(f"| {r.name} | {r.files} | {codes} | {len(r.unreadable)} | {len(r.crashes)} | {r.applied} | "
                     f"{len(r.unparseable)} | {len(r.unstable)} | {len(r.dropped)} | {r.seconds:.1f} | {slowest} |")
    total = RepoResult("**total**")
    for r in results:
        total.files += r.files
        total.codes.update(r.codes)
        total.applied += r.applied
        total.seconds += r.seconds
        for name in ("unreadable", "crashes", "unparseable", "unstable", "dropped", "refused"):
            getattr(total, name).extend(getattr(r, name))
    if len(results) > 1:
        codes = ", ".join(f"{code} {n}" for code, n in sorted(total.codes.items())) or "-"
        lines.append(f"| {total.name} | {total.files} | {codes} | {len(total.unreadable)} | {len(total.crashes)} | "
                     f"{total.applied} | {len(total.unparseable)} | {len(total.unstable)} | {len(total.dropped)} | "
                     f"{total.seconds:.1f} | |")
    return "\n".join(lines)


def details(results: list[RepoResult], verbose: bool) -> str:
    sections = [("Crashes", "crashes"), ("Fixes that do not parse", "unparseable"), ("Fixes not stable", "unstable"),
                ("Files not fixed because libcst would not write them back byte for byte", "refused")]
    if verbose:
        sections += [("Fixes dropped (their own finding stays)", "dropped"), ("Files not read or parsed", "unreadable")]
    out = []
    for title, name in sections:
        items = [f"- {r.name}/{line}" for r in results for line in getattr(r, name)]
        if items:
            out.append(f"\n### {title}\n")
            out.extend(items)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repositories", nargs="+", type=Path, help="repository folders (read only; fixes run on copies)")
    parser.add_argument("--select", default=None, help="codes or prefixes, as for gacclint check")
    parser.add_argument("--ignore", default=None)
    parser.add_argument("--unsafe-fixes", action="store_true", help="apply unsafe fixes too")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="files checked in parallel (processes)")
    parser.add_argument("--verbose", "-v", action="store_true", help="also list dropped fixes and unreadable files")
    args = parser.parse_args(argv)
    try:
        selection = Selection.build(parse_codes(args.select) if args.select else None, parse_codes(args.ignore or ""))
    except UnknownCode as error:
        parser.error(str(error))
    results = []
    for repository in args.repositories:
        if not repository.is_dir():
            parser.error(f"{repository}: not a folder")
        results.append(run_repo(repository.resolve(), selection, args.unsafe_fixes, args.jobs))
        print(f"{repository}: done in {results[-1].seconds:.1f} s", file=sys.stderr, flush=True)
    print(table(results))
    print(details(results, args.verbose))
    bad = any(r.crashes or r.unparseable or r.unstable for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
