"""Which files to check: `*.py` under the given paths, minus the usual excludes."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

DEFAULT_EXCLUDES = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", ".env", "env", "__pycache__", ".tox", ".nox", ".mypy_cache",
    ".ruff_cache", ".pytest_cache", "build", "dist", "site-packages", "node_modules", ".eggs", ".gacclint_cache",
})

# Every backward in RULES.md is a call spelled `...backward(`; a file without
# one holds no training loop, so it is never parsed. ("backward compatible" in
# a docstring does not count.)
PREFILTER = re.compile(rb"backward\s*\(")


def discover(paths: list[Path]) -> Iterator[Path]:
    """Files named explicitly are always yielded; directories are walked."""
    for path in paths:
        if path.is_dir():
            yield from _walk(path)
        else:
            yield path


def _walk(root: Path) -> Iterator[Path]:
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d not in DEFAULT_EXCLUDES and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(directory, name)


def may_hold_training_loop(source: bytes) -> bool:
    return PREFILTER.search(source) is not None
