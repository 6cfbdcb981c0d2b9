"""Results of `check`, remembered by content hash and settings.

A file's entry is keyed by the hash of its bytes, its path (findings name the
file's cells and rows, not the path, but per-file settings do) and the
fingerprint of the selection that applies to it; the cache file itself is
named by gacclint's version and a fingerprint of its own code, so an upgrade
or an edit of a rule never reads old results (the files of the few versions
used last stay beside it, for two gacclints used in turn). Only files that pass the
textual gate have entries.

A warm run reads only metadata: the cache also remembers, per file (by its
real path), the file's size, modification and change times and inode as last
read, with the hash of the bytes it held then (or that it failed the textual
gate). When all
four still match, the file is not opened. A file changed within two seconds
of being read is not remembered this way (a later edit could keep its
timestamps in a coarse-grained file system): it is read and hashed again.

The folder (`.gacclint_cache/` in the project root, or $GACCLINT_CACHE_DIR) holds a `.gitignore` of `*` (and a
CACHEDIR.TAG), so it never shows up in `git status` or in backups.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from gacclint import __version__
from gacclint.diagnostics import Diagnostic

try:  # hashlib's own blake2b: importing hashlib loads OpenSSL as well, a few ms of every run
    from _blake2 import blake2b
except ImportError:  # an interpreter without the module
    from hashlib import blake2b

FOLDER = ".gacclint_cache"
FOLDER_VARIABLE = "GACCLINT_CACHE_DIR"


def cache_folder(project_root: Path) -> Path:
    return Path(os.environ.get(FOLDER_VARIABLE) or project_root / FOLDER)
# Entries not used for the longest time go first past this many.
MAX_ENTRIES = 20_000
# Cache files of other versions (or other code) kept beside this one's.
KEPT_OTHER_VERSIONS = 2
# The key of the table of file metadata in the cache file (result keys are hex).
STAT_KEY = "@stat"
# A file whose timestamps are this recent when read is not remembered by them.
RACY_NS = 2_000_000_000
# The digest remembered for a file that fails the textual gate (never analysed).
NOT_A_CANDIDATE = ""
_TOUCH_SECONDS = 3600
_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# This folder is a cache made by gacclint.\n"


def _code_fingerprint() -> str:
    """Changes whenever gacclint's own code does (an editable install included)."""
    package = os.path.dirname(os.path.realpath(__file__))
    digest = blake2b(__version__.encode(), digest_size=8)
    found = []
    for folder, folders, files in os.walk(package):
        folders[:] = [name for name in folders if name != "__pycache__"]
        found.extend(os.path.join(folder, name) for name in files if name.endswith(".py"))
    for path in sorted(found):
        info = os.stat(path)
        digest.update(f"{os.path.relpath(path, package)}:{info.st_size}:{info.st_mtime_ns};".encode())
    return digest.hexdigest()


def _stat_prefix(info: os.stat_result) -> str:
    """A metadata row is one string, `size:mtime:ctime:inode:digest`: a warm
    run reads a row for every file, and JSON reads one string six times
    faster than a list of five values."""
    return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}:{info.st_ino}:"


class ResultCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.file = self.folder / f"check-{_code_fingerprint()}.json"
        self._entries: dict[str, list] | None = None
        self._stat: dict[str, str] = {}
        self._dirty = False
        self._now = time.time_ns()
        self._load()

    @staticmethod
    def digest(source: bytes) -> str:
        return blake2b(source, digest_size=16).hexdigest()

    @staticmethod
    def key(path: Path | str, digest: str, settings: str) -> str:
        """A result's key: the content's digest, the absolute path, the settings' fingerprint."""
        key = blake2b(digest.encode(), digest_size=16)
        key.update(b"\0" + os.path.abspath(path).encode(errors="surrogateescape") + b"\0" + settings.encode())
        return key.hexdigest()

    def known_digest(self, path: str, info: os.stat_result) -> str | None:
        """The digest of the bytes `path` held when last read, if its metadata
        says it still holds them (NOT_A_CANDIDATE: they failed the textual
        gate); None when it must be read."""
        row = self._stat.get(path)
        if type(row) is not str:
            return None
        prefix = _stat_prefix(info)
        return row[len(prefix):] if row.startswith(prefix) else None

    def remember(self, path: str, info: os.stat_result, digest: str) -> None:
        """`path`, as `info` describes it, held bytes of `digest` (NOT_A_CANDIDATE: failing the gate)."""
        self._load()
        row = _stat_prefix(info) + digest
        if max(info.st_mtime_ns, info.st_ctime_ns) > self._now - RACY_NS:
            if self._stat.pop(path, None) is not None:
                self._dirty = True
            return
        if self._stat.get(path) != row:
            self._stat[path] = row
            self._dirty = True

    def _load(self) -> dict[str, list]:
        if self._entries is None:
            try:
                entries = json.loads(self.file.read_text(encoding="utf-8"))
                self._entries = entries if isinstance(entries, dict) else {}
            except (OSError, ValueError):
                self._entries = {}  # no cache yet, or a damaged one: start over
            stat = self._entries.pop(STAT_KEY, None)
            if isinstance(stat, dict):
                self._stat = stat  # rows checked as they are read: most are never looked at twice
        return self._entries

    def get(self, key: str) -> list[Diagnostic] | None:
        entry = self._load().get(key)
        if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], list):
            return None
        try:
            diagnostics = [Diagnostic.from_dict(item) for item in entry[1]]
        except (TypeError, KeyError, AttributeError, ValueError):  # damaged, or written by hand
            return None
        now = time.time()
        if not isinstance(entry[0], (int, float)) or now - entry[0] > _TOUCH_SECONDS:
            entry[0] = now  # last used, for trimming; a warm run rewrites the file at most hourly for it
            self._dirty = True
        return diagnostics

    def put(self, key: str, diagnostics: list[Diagnostic]) -> None:
        self._load()[key] = [time.time(), [d.to_dict() for d in diagnostics]]
        self._dirty = True

    def save(self) -> None:
        """Best effort: a read-only checkout or a full disk only costs speed."""
        if not self._dirty or self._entries is None:
            return
        entries = self._entries
        if len(entries) > MAX_ENTRIES:
            newest = sorted(entries.items(), key=lambda item: item[1][0] if isinstance(item[1], list) and item[1]
                            and isinstance(item[1][0], (int, float)) else 0, reverse=True)[:MAX_ENTRIES]
            entries = dict(newest)
        stat = self._stat
        if len(stat) > 10 * MAX_ENTRIES:  # most files fail the gate: several per result entry
            stat = dict(list(stat.items())[-10 * MAX_ENTRIES:])
        entries = {**entries, STAT_KEY: stat}
        import tempfile

        try:
            self._prepare_folder()
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".check-", suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(entries, stream, separators=(",", ":"))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would lock a shared checkout's cache to one user
            os.replace(temporary, self.file)
            self._drop_old_versions()
        except OSError:
            pass

    def _drop_old_versions(self) -> None:
        """Other versions' cache files, but the most recently written few: two
        gacclints used on one project in turn (pre-commit's and the virtual
        environment's) would otherwise delete each other's, and each run of
        either would be cold."""
        others = []
        for other in self.folder.glob("check-*.json"):
            if other != self.file:
                try:
                    others.append((other.stat().st_mtime_ns, other))
                except OSError:
                    continue  # deleted meanwhile
        for _, stale in sorted(others, reverse=True)[KEPT_OTHER_VERSIONS:]:
            stale.unlink(missing_ok=True)

    def _prepare_folder(self) -> None:
        self.folder.mkdir(exist_ok=True)
        ignore = self.folder / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# Made by gacclint: the cache is never committed.\n*\n", encoding="utf-8")
        tag = self.folder / "CACHEDIR.TAG"
        if not tag.exists():
            tag.write_text(_TAG, encoding="utf-8")
