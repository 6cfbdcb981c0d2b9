"""A whole run: discover the files, keep only those that could hold a training
loop, answer what the cache knows, analyse the rest (in parallel when it
pays), and return one result per file, in discovery order.

This module stays light: the analysis (and libcst) is imported only when
some file needs it, so a warm run over a big tree reads, hashes and prints.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from gacclint.cache import NOT_A_CANDIDATE, ResultCache, cache_folder
from gacclint.diagnostics import MAX_ANALYSED_BYTES, Diagnostic, FileResult, Job
from gacclint.discover import WalkExcluded, discover_identified
from gacclint.gate import may_hold_training_loop, owns_backward_call
from gacclint.selection import Selection
from gacclint.source import ReadError, read_source

if TYPE_CHECKING:
    from gacclint.config import Settings, SettingsResolver

# Set by `--debug`: let internal errors propagate with their traceback.
DEBUG = False

# Below this much source to analyse, starting worker processes (each imports
# libcst) costs more than it saves.
PARALLEL_MIN_BYTES = 200_000


@dataclass(frozen=True)
class RunOptions:
    mode: str = "check"  # "check" | "fix" | "add-noqa"
    unsafe: bool | None = None  # None: as the settings say
    write: bool = True
    diff: bool = False
    force_exclude: bool = False
    use_cache: bool = True
    progress: bool = False  # a progress bar on stderr
    jobs: int | None = None  # worker processes; None: one per core this process may run on
    # check: work out fix edits in the analysis (True), or only if a format
    # asks for them (None/False: FixInfo's edits stay pending until accessed,
    # then all pending files are analysed again with edits, in parallel).
    edits: bool | None = None


def analyse_source(source: bytes, selection: Selection | None = None) -> list[Diagnostic]:
    """The findings in one Python source (rows of that source); for plugins."""
    from gacclint.analysis import analyse_source as analyse

    return analyse(source, selection or Selection())


def run(paths: list[Path], resolver: SettingsResolver, options: RunOptions) -> list[FileResult]:
    files = discover_identified(paths, lambda path, is_dir: resolver.for_path(path).is_excluded(path, is_dir),
                                options.force_exclude, walk_excluded=walk_exclusion(resolver))
    results: dict[int, FileResult] = {}
    keys: dict[int, str] = {}
    cache: ResultCache | None = None
    if options.mode == "check" and options.use_cache:
        cache = ResultCache(cache_folder(resolver.for_path(Path.cwd()).root))
    analyser = _Analyser(options)
    later = _PendingEdits(options, cache)
    eager_edits = options.edits is True
    fingerprints: dict[Selection, str] = {}  # most files share one selection

    def fingerprint(selection: Selection) -> str:
        known = fingerprints.get(selection)
        if known is None:
            known = fingerprints[selection] = selection.fingerprint()
        return known

    count = 0
    for index, (path, name) in enumerate(files):  # name: the real path, which the cache knows files by
        count = index + 1
        info = None
        if cache is not None:
            try:
                info = os.stat(name)
            except OSError:
                pass  # reading it says why
            else:
                digest = cache.known_digest(name, info)
                if digest == NOT_A_CANDIDATE:
                    results[index] = FileResult(path)
                    continue
                if digest is not None:  # unchanged since it was last read: not even opened
                    settings = resolver.for_path(path)
                    selection = settings.selection_for(path)
                    keys[index] = key = cache.key(name, digest, fingerprint(selection))
                    known = cache.get(key)
                    if known is not None and not (eager_edits and _pending(known)):
                        results[index] = FileResult(path, diagnostics=known, unsafe_fixes=_unsafe(settings, options))
                        later.add(index, results[index], lambda p=path, s=selection, t=settings: _job(
                            p, read_source(p), s, t, options), key)
                        continue
        try:
            source = read_source(path)
        except ReadError as error:
            results[index] = FileResult(path, error=str(error))
            continue
        worth = _worth_analysing(path, source)
        if cache is not None:
            digest = ResultCache.digest(source) if worth else NOT_A_CANDIDATE
            if info is not None:
                cache.remember(name, info, digest)
        if not worth:
            results[index] = FileResult(path)
            continue
        settings = resolver.for_path(path)
        selection = settings.selection_for(path)
        job = _job(path, source, selection, settings, options)
        if cache is not None:
            keys[index] = key = cache.key(name, digest, fingerprint(selection))
            known = cache.get(key)
            if known is not None and not (eager_edits and _pending(known)):
                results[index] = FileResult(path, diagnostics=known, unsafe_fixes=_unsafe(settings, options))
                later.add(index, results[index], lambda job=job: job, key)
                continue
        analyser.add(index, job)
    for index, result in analyser.results().items():
        results[index] = result
        if cache is not None and index in keys and result.error is None:
            cache.put(keys[index], result.diagnostics)
        later.add(index, result, lambda job=analyser.jobs[index]: job, keys.get(index))
    if cache is not None:
        cache.save()
    return [results[index] for index in range(count)]


def _pending(diagnostics: list[Diagnostic]) -> bool:
    return any(d.fix is not None and d.fix.pending for d in diagnostics)


class _PendingEdits:
    """Fix edits a check left pending (gacclint/diagnostics.py's FixInfo): the
    first time one is asked for, every file with pending edits is analysed
    again with edits (in parallel, as a run is), and each fix gets its own."""

    def __init__(self, options: RunOptions, cache: ResultCache | None) -> None:
        self.options = options
        self.cache = cache  # where the edits are remembered once worked out
        self.files: dict[int, tuple[FileResult, Callable[[], Job], str | None]] = {}

    def add(self, index: int, result: FileResult, job: Callable[[], Job], key: str | None = None) -> None:
        if not _pending(result.diagnostics):
            return
        self.files[index] = (result, job, key)
        for diagnostic in result.diagnostics:
            if diagnostic.fix is not None and diagnostic.fix.pending:
                diagnostic.fix.on_demand(self.resolve)

    def resolve(self) -> None:
        files, self.files = self.files, {}
        if not files:
            return
        from dataclasses import replace

        from gacclint.analysis import fill_edits

        analyser = _Analyser(replace(self.options, progress=False))
        for index, (_, job, _) in files.items():
            try:
                made = job()
            except ReadError:
                continue  # gone since: its fixes get no edits
            analyser.add(index, replace(made, mode="check", write=False, edits=True))
        computed = analyser.results()
        for index, (result, _, key) in files.items():
            again = computed.get(index)
            fill_edits([d for d in result.diagnostics if d.fix is not None and d.fix.pending],
                       again.diagnostics if again is not None else [])
            if self.cache is not None and key is not None and again is not None and again.error is None:
                self.cache.put(key, result.diagnostics)  # the next run that shows edits has them at once
        if self.cache is not None:
            self.cache.save()


def walk_exclusion(resolver: SettingsResolver) -> WalkExcluded:
    """The judge of a walked folder's entries: its settings' (gacclint/discover.py)."""
    return lambda folder, names: resolver.for_folder(folder, names).entry_judge()


def _worth_analysing(path: Path, source: bytes) -> bool:
    if path.suffix == ".ipynb":
        # A cell's source is a JSON string, where a line break between
        # `backward` and `(` is spelt `\n`: only the name itself is sure.
        return b"backward" in source
    return may_hold_training_loop(source)


def _unsafe(settings: Settings, options: RunOptions) -> bool:
    return options.unsafe if options.unsafe is not None else settings.unsafe_fixes


def _job(path: Path, source: bytes, selection: Selection, settings: Settings, options: RunOptions) -> Job:
    return Job(path, source, selection, options.mode, _unsafe(settings, options), options.write, options.diff, DEBUG,
               edits=options.mode != "check" or options.edits is True)


def usable_cores() -> int:
    """The cores this process may run on: in a container or under `taskset`
    that can be far fewer than the machine's (os.cpu_count()), and every
    worker beyond them costs its memory and start-up for nothing."""
    counted = getattr(os, "process_cpu_count", None)  # Python 3.13
    if counted is not None:
        return counted() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # macOS and Windows have no affinity to ask
        return os.cpu_count() or 1


class _Analyser:
    """Runs the jobs in this process, or, once enough source waits for
    analysis, in worker processes that start while discovery goes on (the
    first worker imports libcst while the tree is still being read)."""

    def __init__(self, options: RunOptions) -> None:
        self.workers = options.jobs or usable_cores()
        self.progress = options.progress
        self.jobs: dict[int, Job] = {}
        self.waiting_bytes = 0
        self.pool = None
        self.futures: dict = {}  # future -> job index

    def add(self, index: int, job: Job) -> None:
        self.jobs[index] = job
        if self.pool is not None:
            self.futures[self.pool.submit(_run_job, job)] = index
            return
        self.waiting_bytes += len(job.source)
        if self.workers > 1 and len(self.jobs) > 1 and self.waiting_bytes >= PARALLEL_MIN_BYTES and not DEBUG:
            from concurrent.futures import ProcessPoolExecutor  # multiprocessing: 30 ms to import

            # Workers leave Ctrl-C to this process, which ends them (gacclint/cli.py).
            self.pool = ProcessPoolExecutor(max_workers=self.workers, initializer=_ignore_interrupts)
            # The largest files first, so that no worker starts one last while the others idle.
            for waiting in sorted(self.jobs, key=lambda i: len(self.jobs[i].source), reverse=True):
                self.futures[self.pool.submit(_run_job, self.jobs[waiting])] = waiting

    def results(self) -> dict[int, FileResult]:
        found: dict[int, FileResult] = {}
        with _progress(len(self.jobs), self.progress) as advance:
            if self.pool is None:
                for index, job in self.jobs.items():
                    found[index] = _run_job(job)
                    advance()
            else:
                from concurrent.futures import as_completed

                try:
                    for future in as_completed(self.futures):
                        index = self.futures[future]
                        try:
                            found[index] = future.result()
                        except Exception as error:  # noqa: BLE001 - a worker that died (killed, out of memory)
                            found[index] = FileResult(self.jobs[index].path,
                                                      error=f"analysis failed ({type(error).__name__}); skipped")
                        advance()
                except BaseException:
                    # Ctrl-C: drop the queued files instead of waiting for them (the CLI ends the workers).
                    self.pool.shutdown(wait=False, cancel_futures=True)
                    raise
                self.pool.shutdown()
        for index, result in found.items():
            result.unsafe_fixes = self.jobs[index].unsafe
        return found


def _ignore_interrupts() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_source(path: Path, source: bytes, resolver: SettingsResolver, options: RunOptions) -> FileResult:
    """One source held in memory (standard input, an editor's buffer), analysed
    as the file at `path` would be, with its settings; nothing is written or cached."""
    settings = resolver.for_path(path)
    if not _worth_analysing(path, source):
        return FileResult(path, unsafe_fixes=_unsafe(settings, options))
    job = _job(path, source, settings.selection_for(path), settings, options)
    result = _run_job(Job(job.path, job.source, job.selection, job.mode, job.unsafe, False, job.diff, job.debug))
    result.unsafe_fixes = job.unsafe
    return result


def _run_job(job: Job) -> FileResult:
    """CPython's parser first (gate 2 of gacclint/gate.py): most files that
    mention a backward call (in a docstring, say) end here, and never import
    libcst."""
    with _collector_paused():
        tree = None
        if job.path.suffix != ".ipynb" and len(job.source) <= MAX_ANALYSED_BYTES:
            try:
                tree = ast.parse(job.source)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                pass  # the analysis reports why
            else:
                if not owns_backward_call(tree, job.source):
                    return FileResult(job.path)
        from gacclint.analysis import run_job

        result = run_job(job, tree)
        # Freed while the collector still sleeps: once it wakes, its first pass walks
        # every object made since it slept that is still alive.
        del tree
    return result


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while one file is parsed and analysed. Its trees and
    loop model are hundreds of thousands of objects with almost no cycles (reference
    counting frees them); left on, the collector walks them again and again as they are
    made, a fifth to a quarter of the analysis time. What cycles a file leaves are
    collected after it."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _progress:
    """A transient progress bar on stderr for runs a person is watching."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled and total >= 20 and sys.stderr.isatty()
        self._bar = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("gacclint"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task("analysing", total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.stop()
