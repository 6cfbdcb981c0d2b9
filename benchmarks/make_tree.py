"""Build a loop-dense benchmark tree: a library's sources plus real training scripts.

    python benchmarks/make_tree.py OUT --base /tmp/bench/tf \
        --scripts /tmp/bench/diffusers --scripts /tmp/bench/accelerate

OUT receives a copy of --base (an unpacked wheel, say; any folder) and, under
`training_scripts/<name of the folder>/`, every `.py` file of each --scripts
folder whose text holds a `backward(` call, outside its `src/` and `tests/`
folders (the training scripts and examples of a repository, not its library
code), keeping their relative paths. It prints how many files it holds and
how many of them hold a backward call. Nothing is imported or run.

The code copied is for measuring only: keep the tree outside the repository.
benchmarks/README.md says where the reference inputs come from.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

SKIPPED_FOLDERS = {"src", "tests", ".git"}


def training_scripts(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if SKIPPED_FOLDERS & set(relative.parts[:-1]) or not path.is_file():
            continue
        if b"backward(" in path.read_bytes():
            found.append(path)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the tree to make (must not exist)")
    parser.add_argument("--base", type=Path, required=True, help="a folder copied as it is (an unpacked wheel)")
    parser.add_argument("--scripts", type=Path, action="append", default=[],
                        help="a repository checkout whose training scripts are added (repeatable)")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists")
    shutil.copytree(args.base, args.out)
    for repository in args.scripts:
        target = args.out / "training_scripts" / repository.resolve().name
        for path in training_scripts(repository):
            destination = target / path.relative_to(repository)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
    files = [path for path in args.out.rglob("*.py") if path.is_file()]
    with_backward = sum(1 for path in files if b"backward(" in path.read_bytes())
    print(f"{args.out}: {len(files)} .py files, {with_backward} with a backward( call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
