"""Results of `check`, remembered by content hash and settings.

A file's entry is keyed by the hash of its bytes, its path (findings name the
file's cells and rows, not the path, but per-file settings do) and the
fingerprint of the selection that applies to it; the cache file itself is
named by gacclint's version and a fingerprint of its own code, so an upgrade
or an edit of a rule never reads old results. Only files that pass the
textual gate have entries: for the rest, the gate is as cheap as a lookup.

The folder (`.gacclint_cache/` in the project root, or $GACCLINT_CACHE_DIR) holds a `.gitignore` of `*` (and a
CACHEDIR.TAG), so it never shows up in `git status` or in backups.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from gacclint import __version__
from gacclint.diagnostics import Diagnostic

FOLDER = ".gacclint_cache"
FOLDER_VARIABLE = "GACCLINT_CACHE_DIR"


def cache_folder(project_root: Path) -> Path:
    return Path(os.environ.get(FOLDER_VARIABLE) or project_root / FOLDER)
# Entries not used for the longest time go first past this many.
MAX_ENTRIES = 20_000
_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# This folder is a cache made by gacclint.\n"


def _code_fingerprint() -> str:
    """Changes whenever gacclint's own code does (an editable install included)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.blake2b(__version__.encode(), digest_size=8)
    for path in sorted(package.rglob("*.py")):
        info = path.stat()
        digest.update(f"{path.relative_to(package)}:{info.st_size}:{info.st_mtime_ns};".encode())
    return digest.hexdigest()


class ResultCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.file = self.folder / f"check-{_code_fingerprint()}.json"
        self._entries: dict[str, list] | None = None
        self._dirty = False

    @staticmethod
    def key(path: Path, source: bytes, settings: str) -> str:
        digest = hashlib.blake2b(source, digest_size=16)
        digest.update(b"\0" + os.path.abspath(path).encode(errors="surrogateescape") + b"\0" + settings.encode())
        return digest.hexdigest()

    def _load(self) -> dict[str, list]:
        if self._entries is None:
            try:
                entries = json.loads(self.file.read_text(encoding="utf-8"))
                self._entries = entries if isinstance(entries, dict) else {}
            except (OSError, ValueError):
                self._entries = {}  # no cache yet, or a damaged one: start over
        return self._entries

    def get(self, key: str) -> list[Diagnostic] | None:
        entry = self._load().get(key)
        if not isinstance(entry, list) or len(entry) != 2:
            return None
        try:
            diagnostics = [Diagnostic.from_dict(item) for item in entry[1]]
        except (TypeError, KeyError, AttributeError, ValueError):  # damaged, or written by hand
            return None
        entry[0] = time.time()
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
            newest = sorted(entries.items(), key=lambda item: item[1][0], reverse=True)[:MAX_ENTRIES]
            entries = dict(newest)
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
            for stale in self.folder.glob("check-*.json"):
                if stale != self.file:
                    stale.unlink(missing_ok=True)
        except OSError:
            pass

    def _prepare_folder(self) -> None:
        self.folder.mkdir(exist_ok=True)
        ignore = self.folder / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# Made by gacclint: the cache is never committed.\n*\n", encoding="utf-8")
        tag = self.folder / "CACHEDIR.TAG"
        if not tag.exists():
            tag.write_text(_TAG, encoding="utf-8")
