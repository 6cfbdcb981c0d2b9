"""Reading and writing source files byte-exactly.

libcst parses bytes and gives them back with their encoding, BOM and line
endings intact, so the bytes are the unit here; writes are atomic and keep
the file's mode.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

# A file this large is generated code, not a training script someone edits.
MAX_BYTES = 20 * 1024 * 1024


class ReadError(Exception):
    """The file cannot be read; the message says why."""


def read_source(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ReadError(f"file is larger than {MAX_BYTES // (1024 * 1024)} MB")
        data = path.read_bytes()
    except OSError as error:
        raise ReadError(error.strerror or str(error)) from None
    if b"\0" in data:
        raise ReadError("binary content (NUL bytes)")
    return data


def write_source(path: Path, data: bytes, expected: bytes) -> None:
    """Replace `path` with `data` atomically, unless it changed since it was read."""
    try:
        if path.read_bytes() != expected:
            raise ReadError("changed on disk while gacclint was fixing it; not written")
        mode = stat.S_IMODE(path.stat().st_mode)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".gacclint")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as error:
        raise ReadError(error.strerror or str(error)) from None
