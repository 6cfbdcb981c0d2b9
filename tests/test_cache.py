"""Fix edits worked out only when shown, and the cache's metadata shortcut,
as a user sees them: the same output with and without the cache, edits in
the formats that carry them, and edits to files seen at once."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner

import gacclint.cache
import gacclint.runner
from gacclint.cli import main
from gacclint.diagnostics import Diagnostic, Edit, FixInfo

# GA101 at 4:5; its fix appends `optimizer.zero_grad()` after the step.
NO_CLEAR = """\
for x, y in loader:
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
"""
APPENDED = Edit("    optimizer.zero_grad()\n", 5, 1, 5, 1)
CLEAN = """\
for x, y in loader:
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    optimizer.step()
"""
# Same size as NO_CLEAR, and clean: no backward call left.
SAME_SIZE_CLEAN = NO_CLEAR.replace("loss.backward()", "loss.backwarx()")


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout


def edits_of(output: str) -> list[list[dict]]:
    return [item["fix"]["edits"] for item in json.loads(output)]


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("GACCLINT_CACHE_DIR", str(folder))
    return folder


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """From now on, the files a run reads, in order (the runner's reads, counted)."""
    paths: list[Path] = []
    real = gacclint.runner.read_source

    def counting(path: Path) -> bytes:
        paths.append(path)
        return real(path)

    monkeypatch.setattr(gacclint.runner, "read_source", counting)
    return paths


def test_json_edits_are_the_same_cold_cached_and_warm(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "a.py").write_text(NO_CLEAR)
    cold = run("check", "--no-cache", "--output-format", "json", tmp_path / "a.py")
    assert cold[0] == 1
    assert edits_of(cold[1]) == [[{"content": APPENDED.content, "location": {"row": 5, "column": 1},
                                   "end_location": {"row": 5, "column": 1}}]]
    # First run fills the cache without working out any edit (full format); the
    # next runs answer from the cache and work the edits out only for json and sarif.
    full = run("check", tmp_path / "a.py")
    assert full[0] == 1 and "help: " in full[1]
    assert run("check", "--output-format", "json", tmp_path / "a.py") == cold
    sarif = json.loads(run("check", "--output-format", "sarif", tmp_path / "a.py")[1])
    [result] = sarif["runs"][0]["results"]
    [replacement] = result["fixes"][0]["artifactChanges"][0]["replacements"]
    assert replacement["insertedContent"]["text"] == APPENDED.content


def test_a_file_rewritten_with_its_size_and_timestamp_is_read_again(
        tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gacclint.cache, "RACY_NS", 0)  # trust timestamps however recent
    path = tmp_path / "a.py"
    path.write_text(NO_CLEAR)
    info = path.stat()
    assert run("check", "--output-format", "concise", path)[0] == 1
    assert len(SAME_SIZE_CLEAN) == len(NO_CLEAR)
    path.write_text(SAME_SIZE_CLEAN)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # the change time still moves
    assert run("check", "--output-format", "concise", path) == (0, "All checks passed!\n")
    path.write_text(NO_CLEAR)
    assert run("check", "--output-format", "concise", path)[0] == 1


def test_a_warm_run_opens_no_unchanged_file(tmp_path: Path, cache_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gacclint.cache, "RACY_NS", 0)
    (tmp_path / "a.py").write_text(NO_CLEAR)
    (tmp_path / "b.py").write_text(CLEAN)
    (tmp_path / "c.py").write_text("print('no loop here')\n")
    first = run("check", "--output-format", "concise", tmp_path)
    opened = _count_reads(monkeypatch)
    assert run("check", "--output-format", "concise", tmp_path) == first
    assert opened == []
    (tmp_path / "b.py").write_text(NO_CLEAR)
    assert run("check", "--output-format", "concise", tmp_path)[1].count("GA101") == 2
    assert opened == [tmp_path / "b.py"]


def test_a_file_reached_through_a_link_and_dot_dot_is_known_by_the_file_it_is(
        tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`link/../project` is the project beside the link's target, not the
    `project` beside the link: the cache must not take the other file's
    unchanged metadata for this one's."""
    monkeypatch.setattr(gacclint.cache, "RACY_NS", 0)
    (tmp_path / "real" / "target").mkdir(parents=True)
    (tmp_path / "real" / "project").mkdir()
    (tmp_path / "here" / "project").mkdir(parents=True)
    (tmp_path / "here" / "link").symlink_to(tmp_path / "real" / "target", target_is_directory=True)
    checked = tmp_path / "real" / "project" / "train.py"
    decoy = tmp_path / "here" / "project" / "train.py"
    checked.write_text(CLEAN)
    decoy.write_text(CLEAN)
    monkeypatch.chdir(tmp_path / "here")
    assert run("check", "--output-format", "concise", "link/../project") == (0, "All checks passed!\n")
    checked.write_text(NO_CLEAR)
    assert run("check", "--output-format", "concise", "link/../project")[1].count("GA101") == 1


def test_another_version_of_gacclint_never_reads_this_ones_results(
        tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gacclint.cache, "RACY_NS", 0)
    path = tmp_path / "a.py"
    path.write_text(NO_CLEAR)
    found = run("check", "--output-format", "concise", path)
    assert found[0] == 1
    # Results as a version that reported nothing here would have left them:
    # this version reads them (the file is unchanged), another one does not.
    [file] = cache_dir.glob("check-*.json")
    data = json.loads(file.read_text())
    file.write_text(json.dumps({key: [entry[0], []] if key != gacclint.cache.STAT_KEY else entry
                                for key, entry in data.items()}))
    assert run("check", "--output-format", "concise", path) == (0, "All checks passed!\n")
    monkeypatch.setattr(gacclint.cache, "__version__", "0.0.0-another")
    assert run("check", "--output-format", "concise", path) == found


def test_two_versions_used_in_turn_both_stay_warm(tmp_path: Path, cache_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gacclint.cache, "RACY_NS", 0)
    (tmp_path / "a.py").write_text(NO_CLEAR)
    opened = _count_reads(monkeypatch)
    for version in ("1", "2"):
        monkeypatch.setattr(gacclint.cache, "__version__", version)
        run("check", tmp_path)
    assert opened == [tmp_path / "a.py"] * 2
    for version in ("1", "2"):  # pre-commit's gacclint, then the environment's, and so on
        monkeypatch.setattr(gacclint.cache, "__version__", version)
        assert run("check", "--output-format", "concise", tmp_path)[0] == 1
    assert opened == [tmp_path / "a.py"] * 2
    for version in "3456":  # only the most recent few are kept
        monkeypatch.setattr(gacclint.cache, "__version__", version)
        run("check", tmp_path)
    assert len(list(cache_dir.glob("check-*.json"))) == 1 + gacclint.cache.KEPT_OTHER_VERSIONS


def test_fix_info_with_pending_edits() -> None:
    computed = []
    fix = FixInfo("safe", "Add `optimizer.zero_grad()`", None)
    assert fix.pending
    fix.on_demand(lambda: computed.append(fix.with_edits((APPENDED,))))
    diagnostic = Diagnostic("GA101", "missing-zero-grad", "m", 4, 5, 4, 21, fix)
    # Plain data for the cache and for worker processes: a pending fix stays pending.
    assert Diagnostic.from_dict(json.loads(json.dumps(diagnostic.to_dict()))).fix.pending
    assert pickle.loads(pickle.dumps(fix)).pending
    assert fix.edits == (APPENDED,) and computed == [None]
    assert fix.edits == (APPENDED,) and computed == [None]  # once
    assert Diagnostic.from_dict(diagnostic.to_dict()) == diagnostic
    with pytest.raises(RuntimeError):
        FixInfo("safe", "m", None).edits  # nothing can compute them


def test_edits_worked_out_for_a_format_are_remembered(tmp_path: Path, cache_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.py").write_text(NO_CLEAR)
    run("check", tmp_path)  # the full format: edits left pending, and cached so
    analysed: list[Path] = []
    real = gacclint.runner._run_job

    def counting(job):
        analysed.append(job.path)
        return real(job)

    monkeypatch.setattr(gacclint.runner, "_run_job", counting)
    first = run("check", "--output-format", "json", tmp_path)
    assert edits_of(first[1])[0] and analysed == [tmp_path / "a.py"]  # analysed again, for its edits
    assert run("check", "--output-format", "json", tmp_path) == first
    assert analysed == [tmp_path / "a.py"]  # not again


@pytest.mark.parametrize("row", ["junk", [1, 2], "0:0:0:0:7", None, {"size": 1}])
def test_a_damaged_metadata_row_is_ignored(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                           row: object) -> None:
    monkeypatch.setattr(gacclint.cache, "RACY_NS", 0)
    path = tmp_path / "a.py"
    path.write_text(NO_CLEAR)
    expected = run("check", "--output-format", "concise", path)
    [file] = cache_dir.glob("check-*.json")
    data = json.loads(file.read_text())
    data[gacclint.cache.STAT_KEY] = {str(path): row}
    file.write_text(json.dumps(data))
    assert run("check", "--output-format", "concise", path) == expected
    info = path.stat()  # and a row that matches, but names a digest with no result
    data[gacclint.cache.STAT_KEY] = {str(path): f"{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}:{info.st_ino}:5"}
    file.write_text(json.dumps(data))
    assert run("check", "--output-format", "concise", path) == expected
