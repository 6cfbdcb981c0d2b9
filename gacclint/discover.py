"""Which files to check: `*.py` and `*.ipynb` under the given paths, minus
what `.gitignore` files and the excludes leave out.

As in Ruff: a path named on the command line is always taken (a file, or a
folder or a symbolic link to one, which is walked), unless `--force-exclude`
applies the excludes to it too (pre-commit names files one by one); while
walking, symbolic links to files are followed but links to folders are not
(they usually point at an environment or a dependency, and may loop). Each
file is yielded once, however many paths reach it. A folder that cannot be
listed, and a broken or looping link named `*.py`, are yielded as they are, so
that reading them reports why.

`.gitignore` files are read with pathspec (git's own matching rules): those
in the walked folders, and those above the walked root up to the top of its
git work tree.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Container, Iterator

from gacclint.config import DEFAULT_EXCLUDES

if TYPE_CHECKING:
    import pathspec

SOURCE_SUFFIXES = (".py", ".ipynb")

# Without settings (discover's own callers): the configuration's defaults.
_DEFAULT_NAMES = frozenset(pattern for pattern in DEFAULT_EXCLUDES if "*" not in pattern)
_DEFAULT_GLOBS = tuple(pattern for pattern in DEFAULT_EXCLUDES if "*" in pattern)

# A path's settings say whether it is excluded (gacclint/config.py): (path, is_dir) -> bool.
Excluded = Callable[[Path, bool], bool]
# The same inside a walk, which never enters an excluded folder, so only the
# entry itself is left to judge: given a walked folder (absolute) and the
# names of its entries, the judge of its entries, (name, absolute path,
# is_dir) -> bool. Asked once per folder, and the judge takes strings: it
# runs for every entry of a tree.
EntryExcluded = Callable[[str, str, bool], bool]
WalkExcluded = Callable[[str, Container[str]], EntryExcluded]

# (absolute folder of the .gitignore, its patterns), shallowest first
_Ignores = tuple[tuple[str, "_GitIgnore"], ...]


def default_excluded(path: Path, is_dir: bool = True) -> bool:
    return path.name in _DEFAULT_NAMES or any(fnmatch.fnmatchcase(path.name, glob) for glob in _DEFAULT_GLOBS)


def discover(paths: list[Path], excluded: Excluded = default_excluded, force_exclude: bool = False,
             respect_gitignore: bool = True, walk_excluded: WalkExcluded | None = None) -> Iterator[Path]:
    """Files named explicitly are yielded (unless force-excluded); folders are walked."""
    for path, _ in discover_identified(paths, excluded, force_exclude, respect_gitignore, walk_excluded):
        yield path


def discover_identified(paths: list[Path], excluded: Excluded = default_excluded, force_exclude: bool = False,
                        respect_gitignore: bool = True,
                        walk_excluded: WalkExcluded | None = None) -> Iterator[tuple[Path, str]]:
    """`discover`, each file with its identity: its real path (absolute, links
    resolved), which names the very file the path reaches, so that its
    metadata can be looked up without asking the path again."""
    if walk_excluded is None:
        def judge(name: str, path: str, is_dir: bool) -> bool:
            return excluded(Path(path), is_dir)

        walk_excluded = lambda folder, names: judge  # noqa: E731
    seen: set[str] = set()
    identity = _Identity()
    for path in paths:
        if path.is_dir():
            if force_exclude and excluded(path, True):
                continue
            ignores = _ignores_above(path) if respect_gitignore else ()
            candidates = _walk(path, walk_excluded, ignores, respect_gitignore, identity)
        elif force_exclude and (excluded(path, False) or _in_excluded_folder(path, excluded)):
            continue
        else:
            candidates = iter([(path, identity(path))])
        for candidate, key in candidates:
            if key not in seen:
                seen.add(key)
                yield candidate, key


def _in_excluded_folder(path: Path, excluded: Excluded) -> bool:
    """pre-commit passes `build/x.py` or `.venv/lib/x.py`: excluded by a folder on the way."""
    return any(excluded(parent, True) for parent in path.parents if parent.name not in ("", ".", ".."))


class _Identity:
    """A file's real path, resolving each folder once (realpath per file is a
    tenth of a second on a big tree)."""

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}

    def __call__(self, path: Path, is_link: bool | None = None) -> str:
        text = os.fspath(path)
        if os.path.islink(text) if is_link is None else is_link:
            return self._real(text)
        folder, name = os.path.split(text)
        return os.path.join(self.folder(folder), name)

    def folder(self, folder: str) -> str:
        real_folder = self._folders.get(folder)
        if real_folder is None:
            real_folder = self._folders[folder] = self._real(folder or ".")
        return real_folder

    @staticmethod
    def _real(text: str) -> str:
        try:
            return os.path.realpath(text)
        except (OSError, ValueError):  # a link loop on some platforms
            return os.path.abspath(text)


class _GitIgnore:
    """A .gitignore's patterns. pathspec tries them one by one for every path; when none is
    a negation (`!`), the verdict is only whether any matches, and one regex of them all
    answers that at once (a repository's .gitignore often has a hundred patterns)."""

    def __init__(self, spec: pathspec.GitIgnoreSpec) -> None:
        self.spec = spec
        self.any_matches: Callable[[str], bool] | None = None
        patterns = [p for p in spec.patterns if p.include is not None]
        if all(p.include and p.regex is not None for p in patterns):
            # A pattern without a `/` matches at any depth: pathspec writes it `^(?:.+/)?X`,
            # which backtracks over every `/`; X after the start or a `/` is the same test.
            anywhere, anchored = [], []
            for pattern in patterns:
                text = _NAMED_GROUP.sub("(?:", pattern.regex.pattern)
                if text.startswith(_AT_ANY_DEPTH):
                    anywhere.append(f"(?:{text[len(_AT_ANY_DEPTH):]})")
                else:
                    anchored.append(f"(?:{text})")
            try:
                search = re.compile(f"(?:^|(?<=/))(?:{'|'.join(anywhere)})").search if anywhere else None
                match = re.compile("|".join(anchored)).match if anchored else None
            except re.error:
                return
            self.any_matches = lambda path: bool((search and search(path)) or (match and match(path)))

    def verdict(self, relative: str) -> bool | None:
        """True: ignored; False: a negation re-includes it; None: no pattern says."""
        if self.any_matches is not None:
            return True if self.any_matches(relative) else None
        return self.spec.check_file(relative).include


_NAMED_GROUP = re.compile(r"\(\?P<\w+>")
_AT_ANY_DEPTH = "^(?:.+/)?"


def _read_gitignore(folder: Path) -> _GitIgnore | None:
    try:
        with open(folder / ".gitignore", encoding="utf-8", errors="replace") as stream:
            lines = stream.read().splitlines()
    except OSError:
        return None
    if not lines:
        return None
    import pathspec  # only a tree with .gitignore files pays for importing it

    return _GitIgnore(pathspec.GitIgnoreSpec.from_lines(lines))


def _ignores_above(root: Path) -> _Ignores:
    """The .gitignore files of the folders above `root`, up to the top of its work tree."""
    folder = Path(os.path.abspath(root))
    chain = []
    for parent in folder.parents:
        spec = _read_gitignore(parent)
        if spec is not None:
            chain.append((os.fspath(parent), spec))
        if (parent / ".git").exists():
            return tuple(reversed(chain))
    return ()  # not in a git work tree: folders above the root do not count


def _ignored(absolute: str, is_dir: bool, ignores: _Ignores) -> bool:
    """git's verdict: the deepest .gitignore with a matching pattern decides."""
    for base, spec in reversed(ignores):
        relative = absolute[len(base):].lstrip(os.sep).replace(os.sep, "/") + ("/" if is_dir else "")
        verdict = spec.verdict(relative)
        if verdict is not None:
            return verdict
    return False


def _walk(root: Path, excluded: WalkExcluded, ignores: _Ignores, respect_gitignore: bool,
          identity: _Identity) -> Iterator[tuple[Path, str]]:
    """Depth first, in sorted order: a folder's files, then its subfolders;
    each with its identity (its real path). Only the root's real path is
    asked of the system: the subfolders walked are no links, so each one's
    real path is its parent's and its name."""
    text = os.fspath(root)
    stack = [(text, _prefix(os.path.abspath(text)), _prefix(identity.folder(text)), ignores)]
    while stack:
        directory, absolute_prefix, real_prefix, inherited = stack.pop()
        try:
            with os.scandir(directory) as listing:
                by_name = {entry.name: entry for entry in listing}
        except OSError:
            yield Path(directory), identity(directory)  # unreadable: reading it says why
            continue
        absolute_directory = absolute_prefix[:-1] or os.sep
        if respect_gitignore and ".gitignore" in by_name:  # no open() for the folders that have none
            own = _read_gitignore(Path(directory))
            if own is not None:
                inherited = inherited + ((absolute_directory, own),)
        judge = None  # asked for at the first entry to judge: settings met on the way may be bad (an error)
        subdirectories = []
        folder = None  # as a Path, once a file in it is yielded
        for name in sorted(by_name):
            entry = by_name[name]
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_link = is_dir = False
            if is_dir:
                absolute = absolute_prefix + name
                if judge is None:
                    judge = excluded(absolute_directory, by_name)
                if not judge(name, absolute, True) and not (inherited and _ignored(absolute, True, inherited)):
                    subdirectories.append((entry.path, absolute + os.sep, real_prefix + name + os.sep, inherited))
            elif name.endswith(SOURCE_SUFFIXES):
                if is_link and _points_to_folder(entry):
                    continue  # a link to a folder is not walked, whatever its name
                absolute = absolute_prefix + name
                if judge is None:
                    judge = excluded(absolute_directory, by_name)
                if judge(name, absolute, False) or (inherited and _ignored(absolute, False, inherited)):
                    continue
                if folder is None:
                    folder = Path(directory)
                yield _child(folder, name), identity(entry.path, is_link=True) if is_link else real_prefix + name
        stack.extend(reversed(subdirectories))


def _child(folder: Path, name: str) -> Path:
    """`folder / name`, where `name` is one entry of the folder: pathlib's own
    shortcut for this (what Path.iterdir uses, up to Python 3.12) skips
    parsing the whole path again, a third of a warm run's walk."""
    if _make_child_relpath is not None:
        return _make_child_relpath(folder, name)
    return folder / name


_make_child_relpath = getattr(Path, "_make_child_relpath", None)


def _prefix(folder: str) -> str:
    """`folder` with a separator at its end, ready to take an entry's name."""
    return folder if folder.endswith(os.sep) else folder + os.sep


def _points_to_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False
