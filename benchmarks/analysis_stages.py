"""Where a cold check's analysis time goes, stage by stage, in one process.

    python benchmarks/analysis_stages.py /tmp/bench/dense --runs 3

For every file under the tree that passes both gates (gacclint/gate.py), it
times CPython's parse, the lean tree built from it (gacclint/loops/lean.py),
the loop model with the rules on that tree, and, for comparison, libcst's own
parse of the same source (what `check` did before the lean tree, and what
`fix` still does). CPU seconds, each stage's fastest of `--runs` runs, the
cycle collector paused as the runner pauses it. The workers of a real run
split this work between the cores.

It also times one bare visit of every node of CPython's tree, each node's
type looked up and its children pushed, nothing else: the least any model
written in Python that reads the whole module costs on top of the parse,
whatever it is built on.
"""

from __future__ import annotations

import argparse
import ast
import gc
import sys
import time
from pathlib import Path

import libcst as cst

from gacclint.analysis import _decode
from gacclint.engine import lint_module
from gacclint.gate import may_hold_training_loop, owns_backward_call
from gacclint.loops.lean import lean_module
from gacclint.selection import Selection


def candidates(tree: Path) -> list[bytes]:
    found = []
    for path in sorted(tree.rglob("*.py")):
        source = path.read_bytes()
        if not may_hold_training_loop(source):
            continue
        try:
            parsed = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if owns_backward_call(parsed, source):
            found.append(source)
    return found


def bare_visit(tree: ast.AST) -> dict[type, int]:
    """Every node of `tree`, counted by type: no model does less per node."""
    counts: dict[type, int] = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        node_type = type(node)
        counts[node_type] = counts.get(node_type, 0) + 1
        for name in node._fields:
            value = getattr(node, name)
            if isinstance(value, list):
                stack.extend(item for item in value if isinstance(item, ast.AST))
            elif isinstance(value, ast.AST):
                stack.append(value)
    return counts


def one_run(sources: list[bytes], with_libcst: bool) -> dict[str, float]:
    spent = {"CPython parse": 0.0, "lean tree": 0.0, "model and rules": 0.0, "libcst parse (for fixes)": 0.0,
             "one bare visit (floor)": 0.0, "objects left for the collector": 0}
    selection = Selection()
    for source in sources:
        gc.disable()
        try:
            start = time.process_time()
            tree = ast.parse(source)
            parsed = time.process_time()
            module, layout = lean_module(_decode(source), tree)
            built = time.process_time()
            lint_module(module, selection, layout)
            linted = time.process_time()
            spent["CPython parse"] += parsed - start
            spent["lean tree"] += built - parsed
            spent["model and rules"] += linted - built
            start = time.process_time()
            bare_visit(tree)
            spent["one bare visit (floor)"] += time.process_time() - start
            if with_libcst:
                start = time.process_time()
                cst.parse_module(source)
                spent["libcst parse (for fixes)"] += time.process_time() - start
        finally:
            gc.enable()
        del tree, module, layout
        # What reference counting could not free: the cycle collector's work after a file.
        spent["objects left for the collector"] += gc.collect()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-libcst", action="store_true", help="skip timing libcst's parse")
    options = parser.parse_args()
    sys.setrecursionlimit(30_000)
    sources = candidates(options.tree)
    best: dict[str, float] = {}
    for _ in range(options.runs):
        for stage, seconds in one_run(sources, not options.no_libcst).items():
            best[stage] = min(best.get(stage, seconds), seconds)
    megabytes = sum(len(s) for s in sources) / 1e6
    print(f"{len(sources)} files analysed ({megabytes:.1f} MB), CPU seconds, fastest of {options.runs}:")
    check = best["CPython parse"] + best["lean tree"] + best["model and rules"]
    left = best.pop("objects left for the collector")
    for stage, seconds in best.items():
        if stage.startswith("libcst") and options.no_libcst:
            continue
        print(f"  {stage:<26} {seconds:7.2f}")
    print(f"  {'check, all stages':<26} {check:7.2f}")
    floor = best["CPython parse"] + best["one bare visit (floor)"]
    print(f"  {'parse + one bare visit':<26} {floor:7.2f}")
    print(f"objects left for the cycle collector: {left:,.0f} (a cycle in the model keeps a file's tree alive)")


if __name__ == "__main__":
    main()
