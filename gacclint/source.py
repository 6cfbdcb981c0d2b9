"""Reading and writing source files byte-exactly.

libcst parses bytes and gives them back with their encoding, BOM and line
endings intact, so the bytes are the unit here. A read says in a few words
why a path cannot be read (a folder it may not list, a broken or looping
symbolic link, a device, binary content). A write is atomic (a temporary
file in the target's folder, then a rename over it), keeps the file's mode
(and owner, where allowed), goes through a symbolic link to its target rather
than replacing the link, and is skipped when the file changed or vanished
since it was read.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

# A file this large is never read: not source anyone edits, and reading it
# could exhaust memory.
MAX_BYTES = 64 * 1024 * 1024


# Text, but not in an encoding Python reads source in (UTF-32 first: its
# little-endian mark begins with UTF-16's).
_WIDE_BOMS = ((b"\xff\xfe\0\0", "UTF-32"), (b"\0\0\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


# A line as Python's tokenizer counts rows: \r\n, \r or \n ends it (never the
# form feeds and other separators `str.splitlines` also breaks at).
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_LINE_BYTES = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def split_lines(text: str) -> list[str]:
    """Lines with their endings, split where Python splits them."""
    return _LINE.findall(text)


def split_byte_lines(data: bytes) -> list[bytes]:
    return _LINE_BYTES.findall(data)


class ReadError(Exception):
    """The file cannot be read; the message says why."""


class WriteError(ReadError):
    """The fixed file was not written; the message says why."""


def _reason(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symbolic link loop"
    if error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return str(error)


def read_source(path: Path) -> bytes:
    """One open, one fstat, one read: this runs for every file of a tree."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if os.path.islink(path):
            raise ReadError(f"broken symbolic link (to {os.readlink(path)})") from None
        raise ReadError("no such file or directory") from None
    except IsADirectoryError:
        raise ReadError(_folder_problem(path)) from None
    except OSError as error:
        raise ReadError(_reason(error)) from None
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise ReadError(_folder_problem(path))
        if not stat.S_ISREG(info.st_mode):
            # A FIFO or a device named *.py would block the read or never end
            # (it was opened non-blocking, so the open itself did not).
            raise ReadError("not a regular file")
        if info.st_size > MAX_BYTES:
            raise ReadError(f"file is larger than {MAX_BYTES // (1024 * 1024)} MB; not read")
        chunks = [os.read(descriptor, info.st_size + 1)]
        while chunks[-1]:  # the file grew, or a short read
            chunks.append(os.read(descriptor, 1024 * 1024))
        data = b"".join(chunks)
    except OSError as error:
        raise ReadError(_reason(error)) from None
    finally:
        os.close(descriptor)
    if b"\0" in data:
        for bom, name in _WIDE_BOMS:
            if data.startswith(bom):
                raise ReadError(f"{name} encoded: Python source must be UTF-8 or declare an ASCII-compatible encoding")
        raise ReadError("binary content (NUL bytes)")
    return data


def _folder_problem(path: Path) -> str:
    """Discovery yields a folder it could not list, so that it is reported."""
    try:
        with os.scandir(path):
            pass
    except OSError as error:
        return f"cannot read folder: {_reason(error)}"
    return "is a folder, not a file"


def write_source(path: Path, data: bytes, expected: bytes) -> None:
    """Replace `path` with `data` atomically, unless it changed since it was read as `expected`."""
    target = Path(os.path.realpath(path))  # through a symlink: the link stays a link
    try:
        current = target.read_bytes()
    except FileNotFoundError:
        raise WriteError("deleted on disk while gacclint was fixing it; not written") from None
    except OSError as error:
        raise WriteError(f"cannot read it back before writing ({_reason(error)}); not written") from None
    if current != expected:
        raise WriteError("changed on disk while gacclint was fixing it; not written")
    if data == expected:
        return
    try:
        info = target.stat()
        if info.st_nlink > 1:
            # A rename would leave the other names with the old content.
            raise WriteError(f"has {info.st_nlink} hard links, which an atomic write would split; not written")
        import tempfile  # only a fix that writes needs it

        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".gacclint")
    except OSError as error:
        raise WriteError(f"cannot write: {_reason(error)}; not written") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, stat.S_IMODE(info.st_mode))
        if hasattr(os, "chown") and (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.chown(temporary, info.st_uid, info.st_gid)
            except OSError:
                pass  # only root may give a file away; the mode is kept all the same
        os.replace(temporary, target)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise WriteError(f"cannot write: {_reason(error)}; not written") from None
        raise
