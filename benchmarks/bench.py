"""Time `gacclint check` over a source tree, next to Ruff and TorchFix.

    python benchmarks/bench.py /path/to/tree --runs 5
    python benchmarks/bench.py /path/to/tree --subsets 25,50,100

For gacclint it measures three states of its result cache: cold with
`--no-cache`, cold with the cache folder deleted before each run (the run
pays for writing it), and warm (the cache filled by an untimed run first).
A gacclint without `--no-cache` is timed as it is. Ruff and
TorchFix are timed when found on PATH or given with --ruff-cmd and
--torchfix-cmd (an empty command skips one).

Every command runs in a scratch folder (so gacclint's `.gacclint_cache/`
lands there, not in the tree) with the tree's absolute path as its last
argument, its output discarded. Reported per command: the median wall time
over --runs runs (min and max beside it), files per second (the `.py` and
`.ipynb` files under the tree, whether or not a tool reads them all), and
two peak memories: the largest single process (the kernel's exact maximum
resident set, descendants included, from wait4) and, on Linux, the sum over
the command's whole process tree (sampled every 50 ms from /proc; gacclint
analyses in worker processes, Ruff in threads of one process).

The tree's files are read once before the first timing, so no command pays
for the first read from disk. gacclint's modules (the package this Python
imports) are compiled to bytecode first, as installing a wheel does: where
PYTHONDONTWRITEBYTECODE is set, every run, and every worker of a run, would
otherwise compile them from source again. Results print as a Markdown table.

With Ruff, each gacclint run is followed by a Ruff run (A B A B ...), and
each gacclint row gives its time as a ratio to Ruff's: the median of the
pair-by-pair ratios, so that a machine whose speed drifts during the
benchmark still compares like with like. See benchmarks/README.md for the
trees (benchmarks/make_tree.py builds the loop-dense one).
"""

from __future__ import annotations

import argparse
import compileall
import os
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DEFAULT_RUFF = "ruff check --no-cache --select F401 --exit-zero"
DEFAULT_TORCHFIX = "torchfix"
CACHE_FOLDER = ".gacclint_cache"
GACCLINT_EXITS = {0, 1}  # clean, findings; 2 is a usage or internal error
SAMPLE_SECONDS = 0.05
PROC = Path("/proc")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
CHILDREN_LISTED = (PROC / "self" / "task" / str(os.getpid()) / "children").exists()


@dataclass
class Sample:
    seconds: float
    largest_process_kib: int
    process_tree_kib: int | None  # None where /proc does not list children


@dataclass
class Row:
    tool: str
    mode: str
    samples: list[Sample]
    # Ruff's run right after each of these (same machine state): the ratios' denominators.
    paired: list[Sample] | None = None

    def ratios(self) -> list[float] | None:
        if not self.paired:
            return None
        return [mine.seconds / theirs.seconds for mine, theirs in zip(self.samples, self.paired)]


class ProcessTreeMemory:
    """The peak of the summed resident memory of a process and all its
    descendants, sampled from /proc in a background thread."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ProcessTreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, sum(_resident_kib(pid) for pid in self._tree()))
            self._stop.wait(SAMPLE_SECONDS)

    def _tree(self) -> list[int]:
        tree, pending = [], [self.root_pid]
        while pending:
            pid = pending.pop()
            tree.append(pid)
            pending.extend(_children(pid))
        return tree


def _children(pid: int) -> list[int]:
    """From /proc/PID/task/TID/children (Linux 3.5+), which lists only this
    process's children: far cheaper to poll than every /proc/PID/stat."""
    children = []
    try:
        for task in (PROC / str(pid) / "task").iterdir():
            children.extend(int(child) for child in (task / "children").read_text().split())
    except OSError:  # the process ended meanwhile
        pass
    return children


def _resident_kib(pid: int) -> int:
    try:
        return int((PROC / str(pid) / "statm").read_text().split()[1]) * PAGE_KIB
    except (OSError, IndexError, ValueError):
        return 0


def _max_rss_kib(usage: resource.struct_rusage) -> int:
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    return usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss


def run_once(command: list[str], workdir: Path, accepted_exits: set[int] | None) -> Sample:
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=stderr)
        if CHILDREN_LISTED:
            with ProcessTreeMemory(process.pid) as memory:
                _, status, usage = os.wait4(process.pid, 0)
            # The tree never holds less than its largest process: a run shorter
            # than the sampling interval is still credited with that.
            tree_kib: int | None = max(memory.peak_kib, _max_rss_kib(usage))
        else:
            _, status, usage = os.wait4(process.pid, 0)
            tree_kib = None
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        if accepted_exits is not None and process.returncode not in accepted_exits:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"{shlex.join(command)} exited {process.returncode}:\n{tail}")
    return Sample(seconds, _max_rss_kib(usage), tree_kib)


def source_files(tree: Path) -> list[Path]:
    return sorted(path for path in tree.rglob("*") if path.suffix in (".py", ".ipynb") and path.is_file())


def read_everything(files: list[Path]) -> None:
    for path in files:
        path.read_bytes()


def compile_gacclint() -> None:
    try:
        import gacclint
    except ImportError:
        return  # timed through a command of another environment: its install compiled it
    compileall.compile_dir(str(Path(gacclint.__file__).parent), quiet=1)


def supports(command: list[str], option: str, workdir: Path) -> bool:
    # Asked from where the runs start: `python -m gacclint` imports from its current folder first.
    result = subprocess.run([*command, "--help"], cwd=workdir, capture_output=True, text=True)
    return option in result.stdout


def clear_cache(workdir: Path) -> None:
    shutil.rmtree(workdir / CACHE_FOLDER, ignore_errors=True)


def gacclint_rows(command: list[str], tree: Path, workdir: Path, runs: int,
                  reference: Callable[[], Sample] | None = None) -> list[Row]:
    """gacclint's rows; with `reference` (Ruff), each run paired with one of it."""
    def check(*options: str) -> Sample:
        return run_once([*command, *options, str(tree)], workdir, GACCLINT_EXITS)

    if not supports(command, "--no-cache", workdir):
        return [timed("gacclint", "as is (no cache options)", runs, check, reference)]
    rows = [timed("gacclint", "cold, --no-cache", runs, lambda: check("--no-cache"), reference)]

    def after_clearing() -> Sample:
        clear_cache(workdir)
        return check()

    rows.append(timed("gacclint", "cold, cache deleted", runs, after_clearing, reference))
    clear_cache(workdir)
    check()  # fills the cache
    rows.append(timed("gacclint", "warm cache", runs, check, reference))
    return rows


def timed(tool: str, mode: str, runs: int, measure: Callable[[], Sample],
          reference: Callable[[], Sample] | None = None) -> Row:
    """`runs` samples of `measure` (each followed by one of `reference`, if
    given), each announced on stderr as it ends (a run over a large tree can
    take minutes)."""
    samples: list[Sample] = []
    paired: list[Sample] = []
    for number in range(1, runs + 1):
        samples.append(measure())
        note = ""
        if reference is not None:
            paired.append(reference())
            note = f" (ruff {paired[-1].seconds:.2f} s)"
        print(f"{tool}, {mode}: run {number}/{runs}: {samples[-1].seconds:.2f} s{note}", file=sys.stderr, flush=True)
    return Row(tool, mode, samples, paired or None)


def subset_rows(command: list[str], tree: Path, files: list[Path], workdir: Path, runs: int,
                percentages: list[int]) -> list[tuple[int, int, Row]]:
    """gacclint on copies of growing random subsets of the tree (the same
    order for every size, so each subset holds the smaller ones)."""
    shuffled = files[:]
    random.Random(0).shuffle(shuffled)
    no_cache = ["--no-cache"] if supports(command, "--no-cache", workdir) else []
    results = []
    for percentage in percentages:
        chosen = shuffled[:max(1, round(len(shuffled) * percentage / 100))]
        with tempfile.TemporaryDirectory(prefix=f"subset-{percentage}-") as folder:
            subset = Path(folder)
            for path in chosen:
                destination = subset / path.relative_to(tree)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, destination)
            target = [*command, *no_cache, str(subset)]
            row = timed("gacclint", f"{percentage}% of the files", runs,
                        lambda: run_once(target, workdir, GACCLINT_EXITS))
        results.append((percentage, len(chosen), row))
    return results


def _mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.0f}"


def _peaks(samples: list[Sample]) -> tuple[str, str]:
    largest = max(sample.largest_process_kib for sample in samples)
    trees = [sample.process_tree_kib for sample in samples]
    return _mib(largest), _mib(None if None in trees else max(t for t in trees if t is not None))


def timing_table(rows: list[Row], file_count: int) -> str:
    lines = ["| tool | mode | runs | median s | min–max s | × ruff (median of pairs) | files/s "
             "| peak RSS, largest process (MiB) | peak RSS, all processes (MiB) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        times = [sample.seconds for sample in row.samples]
        median = statistics.median(times)
        largest, tree = _peaks(row.samples)
        ratios = row.ratios()
        ratio = f"{statistics.median(ratios):.2f}" if ratios else ""
        lines.append(f"| {row.tool} | {row.mode} | {len(times)} | {median:.2f} | {min(times):.2f}–{max(times):.2f} "
                     f"| {ratio} | {file_count / median:.0f} | {largest} | {tree} |")
    return "\n".join(lines)


def ratio_lines(rows: list[Row]) -> list[str]:
    """One line per gacclint mode: its time as a multiple of Ruff's in the same run."""
    lines = []
    for row in rows:
        ratios = row.ratios()
        if ratios:
            lines.append(f"gacclint {row.mode}: {statistics.median(ratios):.2f}x ruff "
                         f"(pairs {min(ratios):.2f}x–{max(ratios):.2f}x; medians "
                         f"{statistics.median(s.seconds for s in row.samples):.2f} s vs "
                         f"{statistics.median(s.seconds for s in row.paired or []):.2f} s)")
    return lines


def subset_table(results: list[tuple[int, int, Row]]) -> str:
    lines = ["| share of the files | files | median s "
             "| peak RSS, largest process (MiB) | peak RSS, all processes (MiB) |",
             "|---:|---:|---:|---:|---:|"]
    for percentage, count, row in results:
        largest, tree = _peaks(row.samples)
        median = statistics.median(sample.seconds for sample in row.samples)
        lines.append(f"| {percentage}% | {count} | {median:.2f} | {largest} | {tree} |")
    return "\n".join(lines)


def _version(command: list[str], workdir: Path) -> str:
    """`PROGRAM --version`, the program being the words before a `check` subcommand."""
    program = command[:command.index("check")] if "check" in command else command[:1]
    result = subprocess.run([*program, "--version"], cwd=workdir, capture_output=True, text=True)
    return (result.stdout or result.stderr).strip().splitlines()[0] if result.returncode == 0 else "version unknown"


def _split(text: str) -> list[str]:
    """The words of a command, its program made absolute when named by a
    relative path (`.venv/bin/gacclint`): every command runs in a scratch folder."""
    words = shlex.split(text)
    if words and os.sep in words[0]:
        words[0] = os.path.abspath(words[0])  # not resolved: a venv's python is a link out of the venv
    return words


def _command(text: str | None, default: str) -> list[str] | None:
    """The command to run, or None: an empty --*-cmd skips the tool, and a
    default is used only when its program is on PATH."""
    if text is not None:
        return _split(text) or None
    words = shlex.split(default)
    return words if shutil.which(words[0]) else None


def _gacclint_command(text: str | None) -> list[str]:
    if text:
        return _split(text)
    program = shutil.which("gacclint")
    return [program, "check"] if program else [sys.executable, "-m", "gacclint", "check"]


def _percentages(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(not 0 < value <= 100 for value in values):
        raise argparse.ArgumentTypeError("percentages between 1 and 100, comma-separated (25,50,100)")
    return sorted(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", type=Path, help="the folder to check")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command and mode (default: 5)")
    parser.add_argument("--gacclint-cmd", metavar="CMD",
                        help="gacclint's check command, without the tree (default: `gacclint check` from PATH, "
                             "else `python -m gacclint check`)")
    parser.add_argument("--ruff-cmd", metavar="CMD",
                        help=f"Ruff's command, without the tree (default: `{DEFAULT_RUFF}` when ruff is on PATH; "
                             "'' skips it)")
    parser.add_argument("--torchfix-cmd", metavar="CMD",
                        help=f"TorchFix's command, without the tree (default: `{DEFAULT_TORCHFIX}` when on PATH; "
                             "'' skips it); its exit code is ignored")
    parser.add_argument("--subsets", type=_percentages, metavar="P,P,...",
                        help="also run gacclint (without its cache) on these percentages of the files, "
                             "to see whether its memory stays flat as the tree grows (e.g. 25,50,100)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    tree = args.tree.resolve()
    if not tree.is_dir():
        parser.error(f"{tree}: not a folder")

    files = source_files(tree)
    gacclint = _gacclint_command(args.gacclint_cmd)
    ruff = _command(args.ruff_cmd, DEFAULT_RUFF)
    torchfix = _command(args.torchfix_cmd, DEFAULT_TORCHFIX)
    read_everything(files)
    compile_gacclint()

    with tempfile.TemporaryDirectory(prefix="gacclint-bench-") as scratch:
        workdir = Path(scratch)
        print(f"tree: {tree} ({len(files)} .py/.ipynb files); {os.cpu_count()} CPUs; "
              f"Python {sys.version.split()[0]}")
        for name, command in (("gacclint", gacclint), ("ruff", ruff), ("torchfix", torchfix)):
            if command is not None:
                print(f"- {name}: `{shlex.join(command)}` ({_version(command, workdir)})")
        print()
        ruff_run = None if ruff is None else (lambda: run_once([*ruff, str(tree)], workdir, {0}))
        if ruff_run is not None:
            ruff_run()  # warm-up: neither tool's first run pays for loading its program
        rows = gacclint_rows(gacclint, tree, workdir, args.runs, ruff_run)
        if ruff is not None:
            references = [sample for row in rows for sample in row.paired or []]
            rows.append(Row("ruff", "as given (every paired run)", references))
        if torchfix is not None:
            rows.append(timed("torchfix", "as given", args.runs,
                              lambda: run_once([*torchfix, str(tree)], workdir, None)))
        print(timing_table(rows, len(files)))
        ratios = ratio_lines(rows)
        if ratios:
            print()
            print("\n".join(ratios))
        if args.subsets:
            print()
            print(subset_table(subset_rows(gacclint, tree, files, workdir, args.runs, args.subsets)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
