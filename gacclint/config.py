"""Settings: `[tool.gacclint]` in pyproject.toml, under command-line overrides.

Discovery, as in Ruff: a checked path takes the nearest `pyproject.toml`
upward from its folder (a folder: from itself) that has a `[tool.gacclint]`
table; pyproject files without one are passed over. With none, the defaults
apply and the root is the current directory. `--config PATH` replaces
discovery for every path: a file named `pyproject.toml` is read from its
`[tool.gacclint]` table (absent: the defaults), any other file is TOML with
the same keys at top level (a `gacclint.toml`). The root of a config file,
the folder its patterns are relative to, is the folder holding it.

Keys (codes are rule codes, prefixes such as `GA2`, or `ALL`; see
gacclint/selection.py for precedence):

    select = ["GA"]                 # replaces the default, ALL
    ignore = ["GA203"]
    extend-select = ["GA002"]       # adds; the only way to turn on opt-in codes besides select
    per-file-ignores = { "tests/**" = ["GA2"], "!src/**" = ["GA101"] }
    exclude = ["generated/"]        # replaces the default excludes
    extend-exclude = ["legacy.py"]  # adds to them
    unsafe-fixes = true

Command line over config, as in Ruff: `--select` starts afresh (the config's
select, ignore and extend-select no longer count); `--ignore` and
`--extend-select` apply on top of the config's selection; `--exclude`
replaces the config's `exclude` (and the defaults), `--extend-exclude` and
`--per-file-ignores` add to the config's; `--unsafe-fixes` /
`--no-unsafe-fixes` decide over `unsafe-fixes`.

Patterns are gitignore patterns (pathspec's GitIgnoreSpec), matched against
the path relative to the folder they belong to: the config's root for the
config's patterns, the current directory for the command line's. A pattern
with no slash but a trailing one matches at any depth (`build`, `*.egg-info`,
`test_*.py`: a name); one with a slash elsewhere is anchored there
(`src/gen/`, `/setup.py`); `**` spans folders; a trailing `/` matches folders
only; `*` never crosses a `/` (`tests/*.py` is not `tests/sub/x.py`: write
`tests/**`). A path outside the pattern's folder is matched by its name
alone.

Excludes: in order, the default excludes (or `exclude`), `extend-exclude`,
then the command line's; the last matching pattern decides and `!pattern`
re-includes, so `extend-exclude = ["!build"]` checks `build` folders again.
As in git, a path inside an excluded folder stays excluded (`is_excluded`
looks at its folders up to the root); re-include the folder instead.

Per-file ignores: each pattern whose path matches adds its codes, which are
then off in that file however specifically they were selected (GA001
excepted); `!pattern` applies to every file the pattern does not match.

Paths are made absolute against the current directory without resolving
links: a file reached through a link is configured where the link is.

Errors are one line naming the file and the problem (ConfigError).
This module imports neither libcst nor the rules.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Container

if TYPE_CHECKING:
    import pathspec

from gacclint.selection import Selection, UnknownCode, check_codes

DEFAULT_EXCLUDES = (
    ".git", ".hg", ".svn", ".venv", "venv", ".env", "env", "__pycache__", ".tox", ".nox", ".mypy_cache",
    ".ruff_cache", ".pytest_cache", "build", "dist", "site-packages", "node_modules", ".eggs", "*.egg-info",
    ".gacclint_cache", ".ipynb_checkpoints",
)
_CODE_KEYS = ("select", "ignore", "extend-select")
_PATTERN_KEYS = ("exclude", "extend-exclude")
_KEYS = (*_CODE_KEYS, "per-file-ignores", *_PATTERN_KEYS, "unsafe-fixes")


class ConfigError(Exception):
    """A configuration that cannot be used; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class CliOverrides:
    """What the command line says; None and () leave the config's value."""

    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    extend_select: tuple[str, ...] = ()
    exclude: tuple[str, ...] | None = None
    extend_exclude: tuple[str, ...] = ()
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    unsafe_fixes: bool | None = None


# A gitignore pattern that can only match a path's last component, and means
# the same in fnmatch: no slash, no negation, no escape, no `**`, no spaces.
_NAME_PATTERN = re.compile(r"(?!.*\*\*)[^/!\\#\s][^/\\\s]*")


def _gitignore_spec(patterns: tuple[str, ...], source: str) -> pathspec.GitIgnoreSpec:
    import pathspec

    try:
        return pathspec.GitIgnoreSpec.from_lines(patterns)
    except ValueError as error:  # pathspec's GitIgnorePatternError
        raise ConfigError(f"{source}: {error}") from None


@dataclass(frozen=True)
class _Patterns:
    """Gitignore patterns relative to `base`."""

    base: Path
    patterns: tuple[str, ...]
    # None until needed when the patterns are all plain names (see `names`):
    # importing pathspec is a tenth of a warm run.
    spec: pathspec.GitIgnoreSpec | None = field(compare=False, repr=False)
    # When every pattern is a bare name or a slash-free glob with no `!` (the
    # defaults are), a pattern matches exactly when it matches the path's last
    # component: a set lookup instead of pathspec's regexes for every file.
    names: frozenset[str] | None = field(default=None, compare=False, repr=False)
    globs: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def compile(cls, base: Path, patterns: tuple[str, ...], source: str) -> _Patterns:
        lines = [p.strip() for p in patterns if p.strip() and not p.lstrip().startswith("#")]
        if all(_NAME_PATTERN.fullmatch(p) for p in lines):
            names = frozenset(p for p in lines if not any(c in p for c in "*?["))
            globs = tuple(p for p in lines if p not in names)
            return cls(base, patterns, None, names, globs)
        return cls(base, patterns, _gitignore_spec(patterns, source))

    def _spec(self) -> pathspec.GitIgnoreSpec:
        if self.spec is None:
            object.__setattr__(self, "spec", _gitignore_spec(self.patterns, "patterns"))
        assert self.spec is not None
        return self.spec

    def verdict(self, path: str, is_dir: bool) -> bool | None:
        """True: excluded by the last matching pattern; False: re-included (`!`); None: no pattern matches.
        `path` is absolute and normalised (strings: this runs for every walked file)."""
        if self.names is not None:
            name = os.path.basename(path)
            if name in self.names or any(fnmatch.fnmatchcase(name, glob) for glob in self.globs):
                return True
            return None
        base = os.fspath(self.base)
        if path.startswith(base) and path[len(base):len(base) + 1] == os.sep:
            relative = path[len(base) + 1:].replace(os.sep, "/")
        else:
            relative = os.path.basename(path)
        return self._spec().check_file(relative + "/" if is_dir else relative).include

    def matches(self, path: Path) -> bool:
        return self._spec().match_file(_relative(path, self.base))


@dataclass(frozen=True)
class _PerFileIgnore:
    files: _Patterns  # one pattern, without its `!`
    negated: bool
    codes: tuple[str, ...]

    def applies_to(self, path: Path) -> bool:
        return self.files.matches(path) != self.negated


@dataclass(frozen=True)
class _Options:
    """The keys of one config file (or none: the defaults), validated."""

    path: Path | None = None
    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    extend_select: tuple[str, ...] = ()
    per_file_ignores: tuple[_PerFileIgnore, ...] = ()
    exclude: _Patterns | None = None
    extend_exclude: _Patterns | None = None
    unsafe_fixes: bool | None = None


@dataclass(frozen=True)
class Settings:
    """Everything that decides how the files under one config are checked."""

    root: Path  # folder of the config file (or the current directory when none)
    config_path: Path | None
    unsafe_fixes: bool
    selection: Selection  # before per-file ignores: see selection_for
    per_file_ignores: tuple[_PerFileIgnore, ...]
    excludes: tuple[_Patterns, ...]  # in order; the last pattern that matches decides
    cwd: Path = field(compare=False, repr=False)  # what relative paths are relative to
    _selections: dict[Path, Selection] = field(default_factory=dict, compare=False, repr=False)
    _excluded: dict[tuple[str, bool], bool] = field(default_factory=dict, compare=False, repr=False)
    _entry_judge: dict[str, Callable[[str, str, bool], bool]] = field(default_factory=dict, compare=False,
                                                                       repr=False)

    def selection_for(self, path: Path) -> Selection:
        """The selection for the file at `path`: per-file ignores applied."""
        absolute = _absolute(path, self.cwd)
        selection = self._selections.get(absolute)
        if selection is None:
            ignored = [code for rule in self.per_file_ignores if rule.applies_to(absolute) for code in rule.codes]
            selection = self._selections[absolute] = self.selection.without(ignored)
        return selection

    def is_excluded(self, path: Path, is_dir: bool | None = None) -> bool:
        """Whether `path` (or a folder holding it, below the root) is excluded.
        `is_dir` spares a stat when the caller knows (trailing-`/` patterns
        match folders only)."""
        absolute = os.path.normpath(os.path.join(self.cwd, path))
        return self._is_excluded(absolute, os.path.isdir(absolute) if is_dir is None else is_dir)

    def entry_judge(self) -> Callable[[str, str, bool], bool]:
        """`is_excluded` for a walk, which never enters an excluded folder, so
        only the entry's own name and patterns are left to decide: a function
        of the entry's (name, absolute path, is_dir), made once, as a walk asks
        it of every entry of a tree. When every
        pattern is a plain name or glob (the defaults are), one set lookup and
        one regular expression decide from the name alone."""
        judge = self._entry_judge.get("")
        if judge is None:
            judge = self._entry_judge[""] = self._make_entry_judge()
        return judge

    def _make_entry_judge(self) -> Callable[[str, str, bool], bool]:
        if not all(group.names is not None for group in self.excludes):
            verdict = self._verdict
            return lambda name, path, is_dir: verdict(path, is_dir)
        names = frozenset().union(*(group.names for group in self.excludes if group.names))
        globs = [glob for group in self.excludes for glob in group.globs]
        if not globs:
            return lambda name, path, is_dir: name in names
        # fnmatch.fnmatchcase is this very match, one pattern at a time.
        match = re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs)).match
        return lambda name, path, is_dir: name in names or match(name) is not None

    def _verdict(self, path: str, is_dir: bool) -> bool:
        verdicts = [group.verdict(path, is_dir) for group in self.excludes]
        return next((verdict for verdict in reversed(verdicts) if verdict is not None), False)

    def _is_excluded(self, path: str, is_dir: bool) -> bool:
        root = os.fspath(self.root)
        if path == root:  # what the patterns are relative to; a root named `build` is still checked
            return False
        known = self._excluded.get((path, is_dir))
        if known is not None:
            return known
        parent = os.path.dirname(path)
        if parent.startswith(root) and (len(parent) == len(root) or parent[len(root)] == os.sep) \
                and self._is_excluded(parent, True):
            excluded = True
        else:
            excluded = self._verdict(path, is_dir)
        self._excluded[(path, is_dir)] = excluded
        return excluded

    def fingerprint(self) -> str:
        """Stable text of everything that changes results, for cache keys."""
        return json.dumps({
            "selection": self.selection.fingerprint(),
            "per_file_ignores": [[str(rule.files.base), rule.negated, rule.files.patterns, rule.codes]
                                 for rule in self.per_file_ignores],
            "excludes": [[str(group.base), group.patterns] for group in self.excludes],
            "unsafe_fixes": self.unsafe_fixes,
        }, separators=(",", ":"))


class SettingsResolver:
    """The Settings of every checked path: discovered config files under the
    command line's overrides, each file read once and each folder looked up once."""

    def __init__(self, overrides: CliOverrides, config: Path | None = None, cwd: Path | None = None) -> None:
        """Raises ConfigError for a bad `config` file or command-line pattern,
        UnknownCode for an unknown command-line code."""
        self._overrides = overrides
        self._cwd = Path(os.path.abspath(cwd if cwd is not None else Path.cwd()))
        Selection.build(overrides.select, overrides.ignore, overrides.extend_select)  # validates the codes
        self._cli_exclude = None if overrides.exclude is None else _Patterns.compile(
            self._cwd, tuple(overrides.exclude), "--exclude")
        self._cli_extend_exclude = _Patterns.compile(self._cwd, tuple(overrides.extend_exclude), "--extend-exclude")
        self._cli_per_file_ignores = tuple(
            _per_file_ignore(self._cwd, pattern, _cli_codes(codes), "--per-file-ignores")
            for pattern, codes in overrides.per_file_ignores)
        self._by_folder: dict[str, Settings] = {}
        self._fixed: Settings | None = None
        if config is not None:
            config_path = _absolute(config, self._cwd)
            options = _read_options(config_path, self._cwd, table_required=False)
            assert options is not None  # without a table is the defaults, not None
            self._fixed = self._settings(options)

    def for_path(self, path: Path) -> Settings:
        """The Settings of `path` (a file or a folder); raises ConfigError for
        a bad pyproject.toml on the way up."""
        if self._fixed is not None:
            return self._fixed
        absolute = os.path.normpath(os.path.join(self._cwd, path))
        return self.for_folder(absolute if os.path.isdir(absolute) else os.path.dirname(absolute))

    def for_folder(self, folder: str, names: Container[str] | None = None) -> Settings:
        """The Settings of the files in `folder` (absolute and normalised:
        strings, as this runs for every folder of a walk). `names`: the
        folder's entries, when the caller has listed it (a walk has): a
        folder without a `pyproject.toml` among them is not asked for one."""
        if self._fixed is not None:
            return self._fixed
        passed: list[str] = []
        while folder not in self._by_folder:
            candidate = os.path.join(folder, "pyproject.toml")
            listed = names is not None and not passed
            passed.append(folder)
            options = (_read_options(Path(candidate), self._cwd, table_required=True)
                       if (not listed or "pyproject.toml" in names) and _is_file(candidate) else None)
            parent = os.path.dirname(folder)
            if options is not None:
                self._by_folder[folder] = self._settings(options)
            elif parent == folder:
                self._by_folder[folder] = self._settings(_Options())
            else:
                folder = parent
        settings = self._by_folder[folder]
        for visited in passed:
            self._by_folder[visited] = settings
        return settings

    def _settings(self, options: _Options) -> Settings:
        overrides = self._overrides
        root = options.path.parent if options.path is not None else self._cwd
        selection = Selection.build(options.select, options.ignore, options.extend_select)
        if overrides.select is not None or overrides.ignore or overrides.extend_select:
            selection = Selection.build(overrides.select, overrides.ignore, overrides.extend_select, base=selection)
        if self._cli_exclude is not None:
            replacing = self._cli_exclude
        elif options.exclude is not None:
            replacing = options.exclude
        else:
            replacing = _Patterns.compile(root, DEFAULT_EXCLUDES, "default excludes")
        excludes = tuple(group for group in (replacing, options.extend_exclude, self._cli_extend_exclude)
                         if group is not None and group.patterns)
        unsafe_fixes = next((value for value in (overrides.unsafe_fixes, options.unsafe_fixes) if value is not None),
                            False)
        return Settings(root=root, config_path=options.path, unsafe_fixes=unsafe_fixes, selection=selection,
                        per_file_ignores=options.per_file_ignores + self._cli_per_file_ignores, excludes=excludes,
                        cwd=self._cwd)


def _read_options(path: Path, cwd: Path, table_required: bool) -> _Options | None:
    """The validated keys of a config file; None for a pyproject.toml without
    a [tool.gacclint] table when `table_required`."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    shown = _shown(path, cwd)
    try:
        document = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise ConfigError(f"{shown}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{shown}: not UTF-8: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{shown}: invalid TOML: {' '.join(str(error).split())}") from None
    if path.name == "pyproject.toml":
        tool = document.get("tool")
        table = tool.get("gacclint") if isinstance(tool, dict) else None
        where = f"[tool.gacclint] of {shown}"
        if table is None:
            return None if table_required else _Options(path)
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table, not {_type_name(table)}")
    else:
        table, where = document, shown
    return _validated(table, path, where)


def _validated(table: dict[str, Any], path: Path, where: str) -> _Options:
    for key in table:
        if key not in _KEYS:
            import difflib

            close = difflib.get_close_matches(key, _KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown key '{key}' in {where}{hint}")
    codes = {key: _codes(table[key], f"'{key}'", where) for key in _CODE_KEYS if key in table}
    patterns = {key: _Patterns.compile(path.parent, _strings(table[key], f"'{key}'", where), f"'{key}' in {where}")
                for key in _PATTERN_KEYS if key in table}
    unsafe_fixes = table.get("unsafe-fixes")
    if unsafe_fixes is not None and not isinstance(unsafe_fixes, bool):
        raise ConfigError(f"'unsafe-fixes' in {where} must be true or false, not {_type_name(unsafe_fixes)}")
    return _Options(
        path=path, select=codes.get("select"), ignore=codes.get("ignore", ()),
        extend_select=codes.get("extend-select", ()),
        per_file_ignores=_per_file_ignores(table.get("per-file-ignores", {}), path.parent, where),
        exclude=patterns.get("exclude"), extend_exclude=patterns.get("extend-exclude"), unsafe_fixes=unsafe_fixes,
    )


def _per_file_ignores(value: Any, root: Path, where: str) -> tuple[_PerFileIgnore, ...]:
    if not isinstance(value, dict):
        raise ConfigError(f"'per-file-ignores' in {where} must be a table of pattern = [codes], "
                          f"not {_type_name(value)}")
    return tuple(_per_file_ignore(root, pattern, _codes(codes, f"'per-file-ignores' entry '{pattern}'", where),
                                  f"'per-file-ignores' in {where}")
                 for pattern, codes in value.items())


def _per_file_ignore(base: Path, pattern: str, codes: tuple[str, ...], source: str) -> _PerFileIgnore:
    negated = pattern.startswith("!")
    return _PerFileIgnore(_Patterns.compile(base, (pattern[1:] if negated else pattern,), source), negated, codes)


def _codes(value: Any, what: str, where: str) -> tuple[str, ...]:
    codes = tuple(code.strip().upper() for code in _strings(value, what, where))
    try:
        check_codes(codes)
    except UnknownCode as error:
        shown = ", ".join(f"'{code}'" for code in error.codes)
        noun = "rule code or prefix" if len(error.codes) == 1 else "rule codes or prefixes"
        raise ConfigError(f"unknown {noun} {shown} in {what} in {where}") from None
    return codes


def _cli_codes(codes: tuple[str, ...]) -> tuple[str, ...]:
    normalized = tuple(code.strip().upper() for code in codes)
    check_codes(normalized)
    return normalized


def _strings(value: Any, what: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{what} in {where} must be a list of strings, not {_type_name(value)}")
    return tuple(value)


def _type_name(value: Any) -> str:
    if isinstance(value, list):
        kinds = sorted({_type_name(item) for item in value})
        return f"a list with {' and '.join(kinds)}"
    return {bool: "a boolean", str: "a string", int: "an integer", float: "a number", dict: "a table"}.get(
        type(value), type(value).__name__)


def _is_file(path: str) -> bool:
    try:
        return os.path.isfile(path)
    except OSError:  # a folder on the way up that we may not look into holds no config of ours
        return False


def _absolute(path: Path, cwd: Path) -> Path:
    """Absolute without resolving links: a linked file is configured where it is reached."""
    return Path(os.path.normpath(cwd / path))


def _relative(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix() if path.is_relative_to(base) and path != base else path.name


def _shown(path: Path, cwd: Path) -> str:
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)
