"""Which files to check: `*.py` under the given paths, minus the usual excludes.

As in Ruff: a path named on the command line is always taken (a file, or a
folder or a symbolic link to one, which is walked); while walking, symbolic
links to files are followed but links to folders are not (they usually point
at an environment or a dependency, and may loop). Each file is yielded once,
however many paths reach it. A folder that cannot be listed, and a broken or
looping link named `*.py`, are yielded as they are, so that reading them
reports why.
"""

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
    seen: set[str] = set()
    for path in paths:
        if path.is_dir():
            candidates = _walk(path)
        else:
            candidates = iter([path])
        for candidate in candidates:
            key = _identity(candidate)
            if key not in seen:
                seen.add(key)
                yield candidate


def _identity(path: Path) -> str:
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):  # a link loop on some platforms
        return os.path.abspath(path)


def _excluded(name: str) -> bool:
    return name in DEFAULT_EXCLUDES or name.endswith(".egg-info")


def _walk(root: Path) -> Iterator[Path]:
    """Depth first, in sorted order: a folder's files, then its subfolders."""
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            yield directory  # unreadable: reading it says why
            continue
        subdirectories = []
        for entry in entries:
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_link = is_dir = False
            if is_dir:
                if not _excluded(entry.name):
                    subdirectories.append(Path(entry.path))
            elif entry.name.endswith(".py"):
                if is_link and _points_to_folder(entry):
                    continue  # a link to a folder is not walked, whatever its name
                yield Path(entry.path)
        stack.extend(reversed(subdirectories))


def _points_to_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def may_hold_training_loop(source: bytes) -> bool:
    return PREFILTER.search(source) is not None
