"""The file system at its worst: unreadable files and folders, broken and looping
links, files changed or deleted while being fixed, and writes that are atomic,
keep the mode and owner, and touch only the files that changed.

Tests run as root in CI, where a file mode does not stop a read: there the
denial is simulated by patching the one call that would fail.
"""

from __future__ import annotations

import errno
import os
import tempfile
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

import gacclint.analysis
import gacclint.runner
import gacclint.source
from gacclint.cli import main
from gacclint.discover import discover
from gacclint.source import ReadError, read_source, write_source

BUGGY = "for x in loader:\n    loss_fn(model(x)).backward()\n    optimizer.step()\n"
FIXED = BUGGY + "    optimizer.zero_grad()\n"
CLEAN = "for x in loader:\n    optimizer.zero_grad()\n    loss_fn(model(x)).backward()\n    optimizer.step()\n"
# GA202 without `len(...)`: its only fix is unsafe, so a plain `fix` leaves it.
UNSAFE_ONLY = ("for i, (x, y) in enumerate(data):\n    loss = loss_fn(model(x), y) / k\n    loss.backward()\n"
               "    if (i + 1) % k == 0:\n        optimizer.step()\n        optimizer.zero_grad()\n")
ROOT = os.geteuid() == 0
OLD = 1_000_000_000  # a modification time long past


def run(*args: str | Path):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def deny(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make `path` unreadable: by its mode, or (as root, whom modes do not stop) by patching."""
    if not ROOT:
        path.chmod(0)
        return
    denied = os.path.abspath(path)

    if path.is_dir():
        real_scandir = os.scandir

        def scandir(target=".", *args, **kwargs):
            if os.path.abspath(target) == denied:
                raise PermissionError(errno.EACCES, "Permission denied", str(target))
            return real_scandir(target, *args, **kwargs)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        real_open = os.open

        def open_(target, *args, **kwargs):
            if os.path.abspath(target) == denied:
                raise PermissionError(errno.EACCES, "Permission denied", str(target))
            return real_open(target, *args, **kwargs)

        monkeypatch.setattr(os, "open", open_)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "good.py").write_text(BUGGY)
    return tmp_path


def one_line_about(result, path: Path) -> str:
    [line] = [line for line in result.stderr.splitlines() if line.startswith(f"gacclint: {path}: ")]
    return line[len(f"gacclint: {path}: "):]


def still_checked(result, tree: Path) -> None:
    assert f"{tree / 'good.py'}:3:5: GA101" in result.stdout


# --- reading -----------------------------------------------------------------------


def test_unreadable_file_is_one_line_and_the_run_goes_on(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tree / "secret.py"
    secret.write_text(BUGGY)
    deny(monkeypatch, secret)
    result = run("check", tree)
    assert result.exit_code == 2  # a file that was not checked is an error (issue 17)
    assert one_line_about(result, secret) == "permission denied"
    still_checked(result, tree)
    result = run("fix", tree)
    assert one_line_about(result, secret) == "permission denied"
    assert (tree / "good.py").read_text() == FIXED
    monkeypatch.undo()
    secret.chmod(0o644)
    assert secret.read_text() == BUGGY


def test_unreadable_folder_is_one_line_and_the_run_goes_on(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tree / "locked"
    locked.mkdir()
    (locked / "inside.py").write_text(BUGGY)
    deny(monkeypatch, locked)
    try:
        result = run("check", tree)
        assert result.exit_code == 2  # a file that was not checked is an error (issue 17)
        assert one_line_about(result, locked) == "cannot read folder: permission denied"
        still_checked(result, tree)
        assert "inside.py" not in result.output
    finally:
        monkeypatch.undo()
        locked.chmod(0o755)


def test_broken_symlink_is_reported_in_a_walk_and_as_an_argument(tree: Path) -> None:
    broken = tree / "gone.py"
    broken.symlink_to("missing.py")
    result = run("check", tree)
    assert result.exit_code == 2  # a file that was not checked is an error (issue 17)
    assert one_line_about(result, broken) == "broken symbolic link (to missing.py)"
    still_checked(result, tree)
    result = run("check", broken)
    assert result.exit_code == 2
    assert one_line_about(result, broken) == "broken symbolic link (to missing.py)"
    assert run("fix", tree).exit_code == 2
    assert broken.is_symlink() and not broken.exists()


def test_symlink_loops_end(tree: Path) -> None:
    (tree / "a.py").symlink_to("b.py")
    (tree / "b.py").symlink_to("a.py")
    sub = tree / "sub"
    sub.mkdir()
    (sub / "up").symlink_to("..")  # a folder loop: never walked
    (sub / "self").symlink_to(".")
    result = run("check", tree)
    assert result.exit_code == 2  # a file that was not checked is an error (issue 17)
    assert one_line_about(result, tree / "a.py") == "symbolic link loop"
    assert one_line_about(result, tree / "b.py") == "symbolic link loop"
    still_checked(result, tree)
    assert result.stdout.count("GA101") == 1
    named = run("check", tree / "a.py")  # named on the command line, not only met in a walk
    assert named.exit_code == 2
    assert one_line_about(named, tree / "a.py") == "symbolic link loop"


def test_links_to_folders_are_not_walked_but_links_to_files_are_followed(tree: Path, tmp_path_factory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "outside.py").write_text(BUGGY)
    (tree / "venv_link").symlink_to(elsewhere, target_is_directory=True)
    (tree / "linked.py").symlink_to(elsewhere / "outside.py")
    assert [p.name for p in discover([tree])] == ["good.py", "linked.py"]
    # A link named on the command line is followed.
    assert [p.name for p in discover([tree / "venv_link"])] == ["outside.py"]


def test_a_file_reached_twice_is_checked_once(tree: Path) -> None:
    (tree / "alias.py").symlink_to("good.py")
    paths = list(discover([tree, tree / "good.py", tree / "alias.py", tree]))
    assert paths == [tree / "alias.py"]  # the first name met, in sorted order
    result = run("check", tree, tree / "good.py")
    assert result.stdout.count("GA101") == 1


def test_fix_through_a_symlink_writes_the_target_and_keeps_the_link(tmp_path: Path) -> None:
    (tmp_path / "real.py").write_text(BUGGY)
    link = tmp_path / "link.py"
    link.symlink_to("real.py")
    assert run("fix", link).exit_code == 0
    assert link.is_symlink() and os.readlink(link) == "real.py"
    assert (tmp_path / "real.py").read_text() == FIXED


def test_a_folder_named_like_a_module_is_walked(tmp_path: Path) -> None:
    package = tmp_path / "odd.py"
    package.mkdir()
    (package / "train.py").write_text(BUGGY)
    assert [p.name for p in discover([tmp_path])] == ["train.py"]


def test_a_fifo_is_not_read(tree: Path) -> None:
    fifo = tree / "pipe.py"
    os.mkfifo(fifo)
    result = run("check", tree)  # would block forever if it were opened
    assert one_line_about(result, fifo) == "not a regular file"
    still_checked(result, tree)


def test_a_path_named_twice_and_a_missing_one(tree: Path) -> None:
    result = run("check", tree / "good.py", tree / "good.py", tree / "nope.py")
    assert result.exit_code == 2  # a file that was not checked is an error (issue 17)
    assert result.stdout.count("GA101") == 1
    assert "nope.py: no such file or directory" in result.stderr


def test_read_source_says_why(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="^no such file or directory$"):
        read_source(tmp_path / "nope.py")
    with pytest.raises(ReadError, match="^is a folder, not a file$"):
        read_source(tmp_path)
    utf16 = tmp_path / "utf16.py"
    utf16.write_bytes(BUGGY.encode("utf-16"))
    with pytest.raises(ReadError, match="^UTF-16 encoded"):
        read_source(utf16)


# --- writing -----------------------------------------------------------------------


def _stamp(*paths: Path) -> dict[Path, tuple[int, int]]:
    for path in paths:
        os.utime(path, (OLD, OLD))
    return {path: (path.stat().st_mtime_ns, path.stat().st_ino) for path in paths}


def test_only_files_that_change_are_written(tmp_path: Path) -> None:
    files = {"buggy.py": BUGGY, "clean.py": CLEAN, "unsafe_only.py": UNSAFE_ONLY, "broken.py": "for x in (:\n",
             "notes.txt": "loss.backward()", "no_loop.py": "x = 1\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    before = _stamp(*(tmp_path / name for name in files))
    run("check", tmp_path)
    run("fix", "--diff", tmp_path)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in before} == before
    run("fix", tmp_path)
    after = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in before}
    assert [p.name for p in before if after[p] != before[p]] == ["buggy.py"]
    assert {p.name: p.read_text() for p in before} == {**files, "buggy.py": FIXED}
    assert sorted(os.listdir(tmp_path)) == sorted(files)  # no temporary file left behind
    # A second fix writes nothing at all.
    again = _stamp(*before)
    run("fix", tmp_path)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in before} == again


def test_a_file_changed_between_reading_and_writing_is_not_written(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "train.py"
    path.write_text(BUGGY)
    edited = BUGGY + "# someone else's edit\n"
    real = gacclint.analysis.fix_source

    def fix_then_edit(*args, **kwargs):
        outcome = real(*args, **kwargs)
        path.write_text(edited)  # the editor saves while gacclint is working
        return outcome

    monkeypatch.setattr(gacclint.analysis, "fix_source", fix_then_edit)
    result = run("fix", path)
    assert result.exit_code == 1
    assert one_line_about(result, path) == "changed on disk while gacclint was fixing it; not written"
    assert path.read_text() == edited
    assert "Fixed" not in result.stdout
    assert f"{path}:3:5: GA101" in result.stdout  # what it found in the file it read


def test_a_file_deleted_between_reading_and_writing_is_not_recreated(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "train.py"
    path.write_text(BUGGY)
    real = gacclint.analysis.fix_source

    def fix_then_delete(*args, **kwargs):
        outcome = real(*args, **kwargs)
        path.unlink()
        return outcome

    monkeypatch.setattr(gacclint.analysis, "fix_source", fix_then_delete)
    result = run("fix", path)
    assert result.exit_code == 1
    assert one_line_about(result, path) == "deleted on disk while gacclint was fixing it; not written"
    assert os.listdir(tmp_path) == []


def test_a_failed_write_leaves_the_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "train.py"
    path.write_text(BUGGY)

    def full_disk(source, destination):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gacclint.source.os, "replace", full_disk)
    result = run("fix", path)
    assert result.exit_code == 1
    assert one_line_about(result, path) == "cannot write: no space left on device; not written"
    assert path.read_text() == BUGGY
    assert os.listdir(tmp_path) == ["train.py"]


def test_a_folder_gacclint_may_not_write_in(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "train.py"
    path.write_text(BUGGY)

    def read_only_folder(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only_folder)
    result = run("fix", path)
    assert one_line_about(result, path) == "cannot write: permission denied; not written"
    assert path.read_text() == BUGGY


def test_hard_links_are_not_split(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_text(BUGGY)
    os.link(path, tmp_path / "copy.py")
    result = run("fix", path)
    assert "has 2 hard links, which an atomic write would split; not written" in one_line_about(result, path)
    assert (tmp_path / "copy.py").read_text() == BUGGY


def test_write_keeps_mode_and_owner(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_text(BUGGY)
    path.chmod(0o640 | stat.S_ISGID)
    if ROOT:
        os.chown(path, 1234, 5678)
    write_source(path, FIXED.encode(), BUGGY.encode())
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640 | stat.S_ISGID
    if ROOT:
        assert (info.st_uid, info.st_gid) == (1234, 5678)
    assert path.read_text() == FIXED


def test_write_of_unchanged_content_does_not_touch_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_text(BUGGY)
    before = _stamp(path)
    write_source(path, BUGGY.encode(), BUGGY.encode())
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before[path]


# --- scripts/realrepos.py ---------------------------------------------------------------


def test_realrepos_script_reports_a_table_and_never_writes_the_tree(tmp_path: Path, capsys, monkeypatch) -> None:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("realrepos", Path(__file__).parent.parent / "scripts" / "realrepos.py")
    realrepos = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "realrepos", realrepos)
    spec.loader.exec_module(realrepos)
    repository = tmp_path / "repo"
    (repository / "pkg").mkdir(parents=True)
    (repository / "pkg" / "train.py").write_text(BUGGY)
    (repository / "clean.py").write_text(CLEAN)
    (repository / "broken.py").write_text("for x in (:\n    loss.backward()\n")
    (repository / "ff.py").write_bytes(b"import torch\n\fdef f():\n" + BUGGY.replace("\n", "\n    ").rstrip(" ").encode()
                                       .replace(b"for", b"    for", 1))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in repository.rglob("*.py")}
    assert realrepos.main([str(repository), "--unsafe-fixes", "--verbose"]) == 0
    assert gacclint.runner.DEBUG is False
    out = capsys.readouterr().out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in repository.rglob("*.py")} == before
    header, rule, row = out.splitlines()[:3]
    assert header.startswith("| repository | files | findings per code |")
    assert row.startswith("| repo | 4 | GA001 1, GA101 2 | 0 | 0 | 1 | 0 | 0 | 0 |")
    assert "- repo/ff.py: not fixed: libcst would not keep a form feed before code on line 2" in out
