"""Where a warm `gacclint check` spends its time, stage by stage, in one process.

    python benchmarks/warm_stages.py /path/to/tree --runs 7

A warm run (the cache filled, no file changed) pays for starting Python and
importing gacclint, walking the tree, one `stat` per file, reading the cache
file, looking every file up in it, and printing. `bench.py` times the whole
command; this splits the part after the imports into those stages, so that
a change to one of them can be measured on its own. Each stage is run
`--runs` times and its fastest run is printed (the least disturbed by other
work on the machine), in milliseconds.

The first run fills the cache in a scratch folder ($GACCLINT_CACHE_DIR), so
the tree is left untouched. For the import time itself, use Python's own
`python -X importtime -m gacclint check TREE`.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", type=Path)
    parser.add_argument("--runs", type=int, default=7)
    arguments = parser.parse_args()
    tree = arguments.tree.resolve()
    os.environ.setdefault("GACCLINT_CACHE_DIR", tempfile.mkdtemp(prefix="gacclint-warm-stages-"))

    started = time.perf_counter()
    from gacclint.cli import main as cli_main
    imported = time.perf_counter() - started

    from gacclint.cache import ResultCache, cache_folder
    from gacclint.config import CliOverrides, SettingsResolver
    from gacclint.discover import discover_identified
    from gacclint.formats import render
    from gacclint.runner import RunOptions, run, walk_exclusion

    def check() -> None:
        stdout, sys.stdout = sys.stdout, io.StringIO()
        try:
            cli_main(["check", "-q", str(tree)])
        except SystemExit:  # the command's exit code: 1 when it finds something
            pass
        finally:
            sys.stdout = stdout

    check()  # fills the cache
    fastest: dict[str, float] = {}

    def timed(stage: str, action, *arguments):
        begun = time.perf_counter()
        value = action(*arguments)
        fastest[stage] = min(fastest.get(stage, float("inf")), time.perf_counter() - begun)
        return value

    def walk(settings: SettingsResolver) -> list[tuple[Path, str]]:
        return list(discover_identified([tree], lambda path, is_dir: settings.for_path(path).is_excluded(path, is_dir),
                                        walk_excluded=walk_exclusion(settings)))

    def stat(files: list[tuple[Path, str]]) -> None:
        for _, name in files:
            os.stat(name)

    def read_cache(settings: SettingsResolver) -> ResultCache:
        return ResultCache(cache_folder(settings.for_path(Path.cwd()).root))

    def render_full(results: list) -> str:
        return render(results, "full", color=False, show_fixes=False, unsafe_fixes=False)

    files: list[tuple[Path, str]] = []
    for _ in range(arguments.runs):
        files = timed("walk", walk, SettingsResolver(CliOverrides()))
        timed("stat", stat, files)
        timed("cache file", read_cache, SettingsResolver(CliOverrides()))
        results = timed("run (walk, stat, cache and lookups)", run, [tree], SettingsResolver(CliOverrides()),
                        RunOptions())
        timed("render", render_full, results)
        timed("whole check, after imports", check)
    print(f"{len(files)} files under {tree}")
    print(f"{'import gacclint.cli (first, once)':40} {imported * 1000:8.1f} ms")
    for stage, seconds in fastest.items():
        print(f"{stage:40} {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
