"""Bad input gets one clear line naming the path and the reason; the run goes on."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gacclint.cli import main

LOOP = "for x in loader:\n    loss_fn(model(x)).backward()\n    optimizer.step()\n"

CASES = {
    "nul_bytes.py": (b"x = 1\x00\n" + LOOP.encode(), "binary content (NUL bytes)"),
    "undecodable.py": (b"# caf\xe9\n" + LOOP.encode(), "cannot decode"),
    "python2.py": (b'print "hello"\n' + LOOP.encode(), "syntax error at 1:1: Missing parentheses in call to 'print'"),
    "deep_parentheses.py": (("for x in loader:\n    loss = " + "(" * 3000 + "x" + ")" * 3000 + "\n    loss.backward()\n").encode(),
                            "too many nested parentheses"),
    "deep_sum.py": (("for x in loader:\n    loss = " + "+".join(["x"] * 20000) + "\n    loss.backward()\n").encode(),
                    "nested too deeply"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_file_is_one_line_and_others_are_still_checked(tmp_path: Path, name: str) -> None:
    content, reason = CASES[name]
    (tmp_path / name).write_bytes(content)
    (tmp_path / "good.py").write_text(LOOP)
    result = CliRunner().invoke(main, ["check", str(tmp_path)])
    assert result.exit_code == 1
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
