"""Bad input gets one clear line naming the path and the reason; the run goes on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gacclint.cli import main

LOOP = "for x in loader:\n    loss_fn(model(x)).backward()\n    optimizer.step()\n"

CASES = {
    "nul_bytes.py": (b"x = 1\x00\n" + LOOP.encode(), "binary content (NUL bytes)"),
    "undecodable.py": (b"# caf\xe9\n" + LOOP.encode(), "cannot decode"),
    "deep_parentheses.py": (("for x in loader:\n    loss = " + "(" * 3000 + "x" + ")" * 3000 + "\n    loss.backward()\n").encode(),
                            "too many nested parentheses"),
    "deep_sum.py": (("for x in loader:\n    loss = " + "+".join(["x"] * 20000) + "\n    loss.backward()\n").encode(),
                    "nested too deeply"),
    "deep_attributes.py": (("for x in loader:\n    loss = x" + ".a" * 5000 + "\n    loss.backward()\n").encode(),
                           "nested too deeply"),
    "utf16.py": (LOOP.encode("utf-16"), "UTF-16 encoded: Python source must be UTF-8 or declare an ASCII-compatible encoding"),
    "unknown_coding.py": (b"# -*- coding: klingon -*-\n" + LOOP.encode(), "cannot decode: unknown encoding: klingon"),
    "bom_and_latin1.py": (b"\xef\xbb\xbf# coding: latin-1\n" + LOOP.encode(), "cannot decode"),
}

# Code that does not parse is a finding of its own (GA001) at CPython's position,
# like Ruff's syntax errors: in every output format, with the run going on.
SYNTAX_ERRORS = {
    "python2.py": (b'print "hello"\n' + LOOP.encode(), "1:1: GA001 SyntaxError: Missing parentheses in call to 'print'"),
    "python2_exec.py": (b'exec "x = 1"\n' + LOOP.encode(), "1:1: GA001 SyntaxError: Missing parentheses in call to 'exec'"),
    "tabs_and_spaces.py": (b"for x in loader:\n\tloss_fn(model(x)).backward()\n        optimizer.step()\n",
                           "3:1: GA001 SyntaxError: inconsistent use of tabs and spaces in indentation"),
    "unterminated.py": (LOOP.encode() + b's = """never closed\n',
                        "4:5: GA001 SyntaxError: unterminated triple-quoted string literal"),
}


@pytest.mark.parametrize("name", sorted(SYNTAX_ERRORS))
def test_syntax_error_is_a_finding_with_its_position_and_others_are_still_checked(tmp_path: Path, name: str) -> None:
    content, expected = SYNTAX_ERRORS[name]
    (tmp_path / name).write_bytes(content)
    (tmp_path / "good.py").write_text(LOOP)
    result = CliRunner().invoke(main, ["check", "--output-format", "concise", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / name}:{expected}" in result.stdout
    assert "good.py:3:5: GA101" in result.stdout
    assert result.stderr == ""
    as_json = CliRunner().invoke(main, ["check", "--output-format", "json", str(tmp_path / name)])
    [finding] = json.loads(as_json.stdout)
    assert finding["code"] == "GA001" and finding["name"] == "syntax-error"
    assert f'{finding["location"]["row"]}:{finding["location"]["column"]}:' == expected.split(" ")[0]
    CliRunner().invoke(main, ["fix", str(tmp_path)])
    assert (tmp_path / name).read_bytes() == content


# Valid code nested deeper than Python's recursion limit allows a tree walk:
# analysed on a thread with a large stack, not reported as too deep.
DEEP_BUT_VALID = {
    "deep_calls.py": ("for x in loader:\n    loss(x).backward()\n    y = " + "f(" * 150 + "x" + ")" * 150
                      + "\n    optimizer.step()\n").encode(),
    "deep_lambdas.py": ("for x in loader:\n    loss_fn(model(x)).backward()\n    f = " + "lambda: " * 500 + "x\n"
                        "    optimizer.step()\n").encode(),
}


@pytest.mark.parametrize("name", sorted(DEEP_BUT_VALID))
def test_deep_but_valid_nesting_is_analysed(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(DEEP_BUT_VALID[name])
    result = CliRunner().invoke(main, ["check", "--output-format", "concise", str(tmp_path)])
    assert result.stderr == ""
    assert f"{name}:4:5: GA101" in result.stdout
    fixed = CliRunner().invoke(main, ["fix", str(tmp_path)])
    assert fixed.exit_code == 0, fixed.output
    assert (tmp_path / name).read_bytes().endswith(b"    optimizer.zero_grad()\n")


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_file_is_one_line_and_others_are_still_checked(tmp_path: Path, name: str) -> None:
    content, reason = CASES[name]
    (tmp_path / name).write_bytes(content)
    (tmp_path / "good.py").write_text(LOOP)
    result = CliRunner().invoke(main, ["check", "--output-format", "concise", str(tmp_path)])
    assert result.exit_code == 2  # a file that was not checked is an error (issue 17)
    [line] = [line for line in result.stderr.splitlines() if name in line]
    assert line.startswith(f"gacclint: {tmp_path / name}: ") and reason in line
    assert "good.py:3:5: GA101" in result.stdout  # the run went on
    assert "Traceback" not in result.output
    # fix never touches a file it could not read
    CliRunner().invoke(main, ["fix", str(tmp_path)])
    assert (tmp_path / name).read_bytes() == content


def test_empty_file_is_clean(tmp_path: Path) -> None:
    (tmp_path / "empty.py").write_bytes(b"")
    assert CliRunner().invoke(main, ["check", str(tmp_path)]).exit_code == 0


def test_pep263_file_is_decoded_fixed_and_written_back_in_its_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin.py"
    source = "# -*- coding: latin-1 -*-\n# café\n" + LOOP
    path.write_bytes(source.encode("latin-1"))
    result = CliRunner().invoke(main, ["fix", str(path)])
    assert result.exit_code == 0
    fixed = path.read_bytes()
    assert fixed == (source + "    optimizer.zero_grad()\n").encode("latin-1")


def test_utf8_bom_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "bom.py"
    path.write_bytes(b"\xef\xbb\xbf" + LOOP.encode())
    CliRunner().invoke(main, ["fix", str(path)])
    assert path.read_bytes() == b"\xef\xbb\xbf" + (LOOP + "    optimizer.zero_grad()\n").encode()


# --- a 10 MB generated file ------------------------------------------------------------


def _generated(megabytes: int) -> str:
    row = "TABLE_{0} = {{'name': 'value_{0}', 'weights': [{0}, {0}, {0}]}}\n"
    lines, size, number = [], 0, 0
    while size < megabytes * 1024 * 1024:
        lines.append(row.format(number))
        size += len(lines[-1])
        number += 1
    return "".join(lines)


def test_a_10_mb_generated_file_is_read_in_a_moment_and_never_parsed_whole(tmp_path: Path) -> None:
    """Without a training loop it is clean after a text search; with one, it is
    reported and skipped: analysing megabytes of generated code would take minutes."""
    table = _generated(10)
    (tmp_path / "table_pb2.py").write_text(table)
    (tmp_path / "generated_loop.py").write_text(LOOP + table)
    (tmp_path / "good.py").write_text(LOOP)
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["check", str(tmp_path)])
    elapsed = time.perf_counter() - started
    assert elapsed < 10, elapsed  # about 0.1 s
    assert result.exit_code == 2  # a file that was not checked is an error (issue 17)
    assert result.stderr.splitlines() == [
        f"gacclint: {tmp_path / 'generated_loop.py'}: 10.0 MB is more than the 1 MB gacclint analyses in one file "
        "(generated code?); skipped"]
    assert "good.py:3:5: GA101" in result.stdout
    CliRunner().invoke(main, ["fix", str(tmp_path)])
    assert (tmp_path / "generated_loop.py").read_text() == LOOP + table


# --- line endings, tabs, form feeds, final newlines: kept outside the edited lines ----------

ZERO_GRAD = "    optimizer.zero_grad()"
PRESERVED = {
    # GA202 then GA203 on a file whose line endings alternate: each kept line keeps its own,
    # the inserted line takes the file's first.
    "mixed_line_endings": (
        b"for i, (x, y) in enumerate(loader):\r\n    loss = loss_fn(model(x), y) / k\n    loss.backward()\r\n"
        b"    if (i + 1) % k == 0:\n        optimizer.step()\r\n        optimizer.zero_grad()\n",
        b"for i, (x, y) in enumerate(loader):\r\n    window = min(k, len(loader) - (i // k) * k)\r\n"
        b"    loss = loss_fn(model(x), y) / window\n    loss.backward()\r\n"
        b"    if (i + 1) % k == 0 or (i + 1) == len(loader):\n        optimizer.step()\r\n        optimizer.zero_grad()\n"),
    "tabs_and_trailing_whitespace": (
        b"for x in loader:\n\tloss_fn(model(x)).backward()  \t# trailing\n\toptimizer.step()\n\n\n# end \t\n",
        b"for x in loader:\n\tloss_fn(model(x)).backward()  \t# trailing\n\toptimizer.step()\n\toptimizer.zero_grad()\n"
        b"\n\n# end \t\n"),
    "form_feed_lines": (
        b"import torch\n\f\ndef train():\n    for x in loader:\n        loss_fn(model(x)).backward()\n\f\n"
        b"        optimizer.step()\n\f\n# end\n",
        b"import torch\n\f\ndef train():\n    for x in loader:\n        loss_fn(model(x)).backward()\n\f\n"
        b"        optimizer.step()\n        optimizer.zero_grad()\n\f\n# end\n"),
    "no_final_newline": (LOOP.rstrip("\n").encode(), (LOOP + ZERO_GRAD).encode()),
    "no_final_newline_after_a_comment": ((LOOP + "# end").encode(), (LOOP + ZERO_GRAD + "\n# end").encode()),
    "bom_crlf_and_coding": (
        b"\xef\xbb\xbf# -*- coding: utf-8 -*-\r\n" + LOOP.replace("\n", "\r\n").encode(),
        b"\xef\xbb\xbf# -*- coding: utf-8 -*-\r\n" + (LOOP + ZERO_GRAD + "\n").replace("\n", "\r\n").encode()),
}


@pytest.mark.parametrize("name", sorted(PRESERVED))
def test_a_fix_keeps_the_bytes_outside_its_lines(tmp_path: Path, name: str) -> None:
    source, fixed = PRESERVED[name]
    path = tmp_path / "train.py"
    path.write_bytes(source)
    result = CliRunner().invoke(main, ["fix", str(path)])
    assert (result.exit_code, result.stderr) == (0, "")
    assert path.read_bytes() == fixed
    assert CliRunner().invoke(main, ["fix", str(path)]).exit_code == 0
    assert path.read_bytes() == fixed


# libcst writes back neither a form feed before code on a line nor a final
# lone CR; such a file is reported and left alone rather than changed there.
NOT_REPRODUCED = {
    "form_feed_before_code": (b"import torch\n\fdef train():\n    for x in loader:\n        loss_fn(model(x)).backward()\n"
                              b"        optimizer.step()\n", "a form feed before code on line 2"),
    "lone_cr_line_endings": (LOOP.replace("\n", "\r").encode(), "a final lone CR line ending on line 3"),
}


@pytest.mark.parametrize("name", sorted(NOT_REPRODUCED))
def test_a_file_libcst_cannot_write_back_is_reported_and_not_changed(tmp_path: Path, name: str) -> None:
    source, where = NOT_REPRODUCED[name]
    path = tmp_path / "train.py"
    path.write_bytes(source)
    message = f"gacclint: {path}: not fixed: libcst would not keep {where}, outside the fix"
    result = CliRunner().invoke(main, ["fix", str(path)])
    assert result.exit_code == 1
    assert result.stderr == message + "\n"
    assert "GA101" in result.stdout and "Fixed" not in result.stdout
    result = CliRunner().invoke(main, ["fix", "--diff", str(path)])
    assert result.stderr.splitlines()[0] == message
    assert result.stdout == ""  # no diff
    assert path.read_bytes() == source


# --- reproducers for the owners of the engine and the fixes (strict: they flip when fixed) ----


FORM_FEED_BEFORE_NESTED_BLOCK = b"def f():\n    if a:\n\f        b = 1\n    c = 2\n" + LOOP.encode()


def test_valid_code_with_a_form_feed_before_a_nested_block_is_checked(tmp_path: Path) -> None:
    """libcst's tokenizer rejects it (Instagram/LibCST#446 family); checking reads CPython's
    tree (gacclint/loops/lean.py), so the file is checked. Fixing it still needs libcst."""
    compile(FORM_FEED_BEFORE_NESTED_BLOCK, "valid", "exec")
    (tmp_path / "train.py").write_bytes(FORM_FEED_BEFORE_NESTED_BLOCK)
    result = CliRunner().invoke(main, ["check", str(tmp_path)])
    assert result.stderr == ""
    assert "GA101" in result.stdout


def test_internal_error_skips_the_file_unless_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gacclint.analysis

    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(gacclint.analysis, "lint_module", broken)
    (tmp_path / "train.py").write_text(LOOP)
    result = CliRunner().invoke(main, ["check", str(tmp_path)])
    assert result.exit_code == 2  # a file that was not checked is an error (issue 17)
    assert "internal error, file skipped (KeyError: boom); rerun with --debug" in result.stderr
    assert "Traceback" not in result.output
    debug = CliRunner().invoke(main, ["check", "--debug", str(tmp_path)])
    assert debug.exit_code == 2
    assert "Traceback" in debug.stderr


# Valid Python (CPython reads a tab as reaching the next multiple of 8) that libcst's tokenizer rejects.
TAB_AFTER_SPACES = (b"def f(model, opt, x):\n    for it in range(3):\n        loss = model(x).mean()\n"
                    b"        loss.backward()\n        opt.step()\n        if it > 0:\n"
                    b"            for images in range(2):\n                imgs = x\n"
                    b"               \timgs = imgs + 1\n                with torch.no_grad():\n"
                    b"            \t    imgs_v = imgs\n")


def test_valid_code_libcst_cannot_read_is_checked_and_not_fixed_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_bytes(TAB_AFTER_SPACES)
    why = ("valid Python that libcst's parser cannot read (tokenizer error: no matching outer block for dedent "
           "at 1:1): it cannot be fixed or explained")
    checked = CliRunner().invoke(main, ["check", "--no-cache", "--output-format", "concise", str(path)])
    assert "GA101" in checked.stdout and "GA001" not in checked.stdout
    # `fix` still reports what it found, and says why it fixed nothing
    fixed = CliRunner().invoke(main, ["fix", "--no-cache", str(path)])
    assert fixed.exit_code == 1, fixed.output
    assert fixed.stderr.splitlines() == [f"gacclint: {path}:5: fix for GA101 not made: {why}"]
    assert "GA101" in fixed.stdout and "GA001" not in fixed.stdout
    # formats that carry edits give the finding no fix, whether its edits were pending or not
    for extra in ([], ["--unsafe-fixes"]):
        shown = CliRunner().invoke(main, ["check", "--no-cache", "--output-format", "json", *extra, str(path)])
        found = json.loads(shown.stdout)
        assert [(d["code"], d["fix"]) for d in found] == [("GA101", None)]
    explained = CliRunner().invoke(main, ["explain", f"{path}:4"])
    assert explained.exit_code == 2, explained.output
    assert explained.stderr.splitlines()[0] == f"gacclint: {path}: {why}"
    assert path.read_bytes() == TAB_AFTER_SPACES


def test_a_last_line_of_blanks_without_a_line_break_is_kept_and_the_file_fixed(tmp_path: Path) -> None:
    """libcst drops the empty line before such a last line; the fix leaves the tail aside and
    puts it back byte for byte instead of refusing the whole file."""
    path = tmp_path / "train.py"
    source = LOOP.encode() + b"\n        "
    path.write_bytes(source)
    result = CliRunner().invoke(main, ["fix", "--no-cache", str(path)])
    assert result.exit_code == 0, result.output
    assert "Fixed 1 problem" in result.stdout
    fixed = path.read_bytes()
    assert fixed == LOOP.encode() + b"    optimizer.zero_grad()\n" + b"\n        "
