"""Jupyter notebooks: code cells checked as one program, findings located in cells,
fixes written back into the changed cells only, every other byte kept."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import libcst as cst
import pytest

from gacclint.engine import lint_source
from gacclint.fixes.apply import fix_source
from gacclint.fixes.edits import InsertAfter, InsertBefore, MoveAfter, apply_edits
from gacclint.notebook import NotebookError, read_notebook
from gacclint.selection import Selection

NOTEBOOKS = Path(__file__).resolve().parent.parent / "fixtures" / "notebooks"

LOOP = """\
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)  # température
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()"""
LOOP_FIXED = """\
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y)  # température
    window = min(k, len(loader) - (i // k) * k)
    (loss / window).backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()"""


def code_cell(source: str, as_list: bool = True, **extra) -> dict:
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": source.splitlines(keepends=True) if as_list else source}
    cell.update(extra)
    return cell


def markdown_cell(source: str, as_list: bool = True) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": source.splitlines(keepends=True) if as_list else source}


def notebook(cells: list[dict], minor: int = 4) -> dict:
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
            "nbformat": 4, "nbformat_minor": minor}


def dump(document: dict, **options) -> bytes:
    """The notebook as Jupyter (indent=1, sorted keys, non-ASCII kept, final newline) or another writer saves it."""
    options = {"indent": 1, "sort_keys": True, "ensure_ascii": False} | options
    newline, final = options.pop("newline", "\n"), options.pop("final", "\n")
    text = json.dumps(document, **options) + final
    return text.replace("\n", newline).encode("utf-8")


def fixed_notebook(data: bytes) -> bytes:
    notebook_ = read_notebook(data)
    outcome = fix_source(notebook_.program, Selection(), unsafe=True)
    assert not outcome.dropped
    return notebook_.with_program(outcome.fixed)


def findings(data: bytes) -> list[tuple[int, int, str]]:
    notebook_ = read_notebook(data)
    _, located = lint_source(notebook_.program, Selection())
    return [(*notebook_.locate(f.row), f.code) for f in located]


def changed_region(before: bytes, after: bytes) -> tuple[int, int]:
    """[start, end) of `before` outside which `after` has the same bytes."""
    start = 0
    while start < min(len(before), len(after)) and before[start] == after[start]:
        start += 1
    end = 0
    while end < min(len(before), len(after)) - start and before[-1 - end] == after[-1 - end]:
        end += 1
    return start, len(before) - end


# --- the fixtures: a notebook with bugs, its fixed twin, a clean notebook ---------------------------------

def test_findings_name_the_code_cell_and_its_row() -> None:
    # Cell 4 among code cells (the 6th cell): after two markdown cells and a cell of magics.
    data = (NOTEBOOKS / "train_accumulate.ipynb").read_bytes()
    notebook_ = read_notebook(data)
    _, located = lint_source(notebook_.program, Selection())
    assert [(*notebook_.locate(f.row), f.column, f.code) for f in located] == [(4, 4, 9, "GA201"), (4, 5, 12, "GA202")]
    assert [notebook_.cell_line(f.row) for f in located] == [
        "        loss.backward()", "        if (i + 1) % accumulation_steps == 0:"]


def test_fix_writes_the_fixed_twin_and_only_the_loop_cell() -> None:
    path = NOTEBOOKS / "train_accumulate.ipynb"
    before, twin = path.read_bytes(), (NOTEBOOKS / "train_accumulate.fixed.ipynb").read_bytes()
    after = fixed_notebook(before)
    assert after == twin
    # Every byte outside the loop cell's `source` list is the original's.
    text = before.decode()
    source_start = text.index('"source": [', text.index('"id": "train"')) + len('"source": [')
    source_end = text.index("\n   ]", source_start)
    start, end = changed_region(before, after)
    assert source_start <= start and end <= len(text[:source_end].encode())
    old, new = json.loads(before), json.loads(after)
    assert [c for c in old["cells"] if c.get("id") != "train"] == [c for c in new["cells"] if c.get("id") != "train"]
    assert old["metadata"] == new["metadata"]
    train_old, train_new = (next(c for c in doc["cells"] if c.get("id") == "train") for doc in (old, new))
    assert train_old | {"source": None} == train_new | {"source": None}


def test_fixed_twin_is_clean_and_stable() -> None:
    twin = (NOTEBOOKS / "train_accumulate.fixed.ipynb").read_bytes()
    assert findings(twin) == []
    notebook_ = read_notebook(twin)
    assert not fix_source(notebook_.program, Selection(), unsafe=True).changed


def test_clean_notebook_with_magics_has_no_findings() -> None:
    data = (NOTEBOOKS / "clean.ipynb").read_bytes()
    assert findings(data) == []
    assert fixed_notebook(data) == data


# --- program rows and cells -------------------------------------------------------------------------------

def test_each_cell_keeps_its_rows_and_separator_rows_belong_to_the_cell_before() -> None:
    data = dump(notebook([code_cell("a = 1\nb = 2\n"), markdown_cell("text"), code_cell(""), code_cell("c = 3")]))
    notebook_ = read_notebook(data)
    program = notebook_.program.decode().splitlines()
    assert len(program) == 2 + 1 + 0 + 1 + 1  # cell 1, separator, empty cell 2, separator, cell 3
    assert [notebook_.locate(row) for row in range(1, len(program) + 1)] == [(1, 1), (1, 2), (1, 3), (2, 1), (3, 1)]
    assert notebook_.cell_line(5) == "c = 3" and notebook_.cell_line(3) == ""
    assert notebook_.locate(7) == (3, 3)  # past the end: the last cell's rows go on


def test_notebook_without_code_cells() -> None:
    notebook_ = read_notebook(dump(notebook([markdown_cell("# only words")])))
    assert notebook_.program == b""
    with pytest.raises(ValueError):
        notebook_.locate(1)


def test_a_loop_may_use_what_earlier_cells_built() -> None:
    cells = [code_cell("k = 4"), code_cell("optimizer = torch.optim.SGD(model.parameters(), lr=0.1)"),
             code_cell(LOOP.replace(" or (i + 1) == len(loader)", ""))]
    assert findings(dump(notebook(cells))) == [(3, 3, "GA201"), (3, 4, "GA202")]


# --- IPython syntax -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("cell", "neutralised"), [
    ("%matplotlib inline\nx = 1", [0]),
    ("%time y = f(x)\n%timeit -n 3 f(x)", [0, 1]),
    ("!pip install torch\n!!ls", [0, 1]),
    ("!pip install \\\n    torch \\\n    numpy\nx = 1", [0, 1, 2]),
    ("?model\nmodel?\nmodel.parameters??\n%time?", [0, 1, 2, 3]),
    ("files = !ls\nout = %sx ls -la\nd[k] = !!echo hi", [0, 1, 2]),
    ("for i in range(3):\n    !echo $i\n    %time f(i)", [1, 2]),
    ("/print 1 2\n,print a b\n;print a b", [0, 1, 2]),
    ("pip install torch\ncd ..", [0, 1]),
    ("%%time\nfor i in range(3):\n    f(i)", [0]),
    ("\n%%capture output\n!pip install torch", [1, 2]),
    # Python that looks like IPython: none of it is touched.
    ("y = (a\n     % b)\nz = a \\\n    % b", []),
    ('"""\n!not a shell command\n%not a magic\nwhat?\n"""', []),
    ("x = 'why?'\nif x != y:\n    pass", []),
    ("ls = [\n    1,\n]\ntime = 3\nls -la", []),
])
def test_ipython_lines_are_neutralised_on_their_own_rows(cell: str, neutralised: list[int]) -> None:
    notebook_ = read_notebook(dump(notebook([code_cell(cell)])))
    program = notebook_.program.decode().splitlines()
    original = cell.splitlines()
    assert len(program) == len(original)
    ast.parse(notebook_.program)
    assert [row for row, (a, b) in enumerate(zip(original, program)) if a != b] == neutralised
    assert [notebook_.cell_line(row + 1) for row in range(len(original))] == original


@pytest.mark.parametrize("cell", ["%%bash\nfor i in 1 2; do echo $i; done",
                                  "%%writefile train.py\nfor x in loader:\n    loss.backward(",
                                  "%%html\n<b>bold</b>"])
def test_cells_under_non_python_cell_magics_are_skipped(cell: str) -> None:
    notebook_ = read_notebook(dump(notebook([code_cell(cell), code_cell("x = 1")])))
    program, rows = notebook_.program.decode().splitlines(), len(cell.splitlines())
    assert program[:rows] == [""] * rows and program[rows + 1:] == ["x = 1"]


def test_assignment_magic_keeps_its_target() -> None:
    notebook_ = read_notebook(dump(notebook([code_cell("gpus = !nvidia-smi -L")])))
    assert notebook_.program.decode().startswith("gpus = None  # ")


def test_python_cell_magic_body_is_checked() -> None:
    cell = "%%time\n" + LOOP.replace(" or (i + 1) == len(loader)", "")
    data = dump(notebook([code_cell("import torch"), code_cell(cell)]))
    assert findings(data) == [(2, 4, "GA201"), (2, 5, "GA202")]
    fixed = json.loads(fixed_notebook(data))["cells"][1]["source"]
    assert fixed[0] == "%%time\n" and "(loss / window).backward()\n" in "".join(fixed)


@pytest.mark.parametrize("first_cell", ["", "# -*- coding: latin-1 -*-"], ids=["empty-first-cell", "in-first-cell"])
def test_coding_cookie_on_the_programs_first_rows_does_not_change_the_encoding(first_cell: str) -> None:
    # With an empty first cell, the second cell's first line is the program's second row.
    cookie = "" if first_cell else "# -*- coding: latin-1 -*-\n"
    data = dump(notebook([code_cell(first_cell), code_cell(cookie + "name = 'été'\n" + LOOP)]))
    assert "latin-1" not in read_notebook(data).program.decode()
    assert findings(data) == [(2, 5 if cookie else 4, "GA201")]
    after = json.loads(fixed_notebook(data))["cells"]
    assert after[0]["source"] == code_cell(first_cell)["source"]
    assert "".join(after[1]["source"]) == cookie + "name = 'été'\n" + LOOP_FIXED


def test_lone_surrogate_in_a_cell_is_refused() -> None:
    data = dump(notebook([code_cell("x = '\ud800'")]), ensure_ascii=True)
    with pytest.raises(NotebookError, match="^cell 1: not valid Unicode"):
        read_notebook(data)


# --- writing back: form and layout --------------------------------------------------------------------------

WRITERS = {
    "jupyter": {},
    "indent2-unsorted": {"indent": 2, "sort_keys": False},
    "ascii-escapes": {"ensure_ascii": True},
    "compact": {"indent": None},
    "compact-tight": {"indent": None, "separators": (",", ":")},
    "crlf-file": {"newline": "\r\n"},
    "no-final-newline": {"final": ""},
}


@pytest.mark.parametrize("writer", WRITERS.values(), ids=WRITERS.keys())
@pytest.mark.parametrize("as_list", [True, False], ids=["list-of-lines", "one-string"])
@pytest.mark.parametrize("final_newline", [False, True], ids=["jupyter-cell-end", "newline-cell-end"])
def test_fix_writes_back_in_the_notebooks_own_form(writer: dict, as_list: bool, final_newline: bool) -> None:
    end = "\n" if final_newline else ""

    def document(loop: str) -> dict:
        return notebook([
            markdown_cell("# Entraînement\nwith accumulation", as_list),
            code_cell("import torch\nk = 4\n", as_list, execution_count=1,
                      outputs=[{"name": "stdout", "output_type": "stream", "text": ["ok\n"]}]),
            code_cell("%matplotlib inline", as_list),
            code_cell(loop + end, as_list, execution_count=2),
            code_cell("print('fin — terminé')", as_list),
        ])

    before = dump(document(LOOP), **writer)
    assert findings(before) == [(3, 3, "GA201")]
    assert fixed_notebook(before) == dump(document(LOOP_FIXED), **writer)


def test_crlf_inside_cell_sources_is_kept_for_inserted_lines() -> None:
    crlf = LOOP.replace("\n", "\r\n")
    before = dump(notebook([code_cell("import torch\r\n"), code_cell(crlf)]))
    after = dump(notebook([code_cell("import torch\r\n"), code_cell(LOOP_FIXED.replace("\n", "\r\n"))]))
    assert fixed_notebook(before) == after


def test_lf_cell_keeps_lf_when_the_first_cell_uses_crlf() -> None:
    before = dump(notebook([code_cell("import torch\r\nk = 4\r\n"), code_cell(LOOP)]))
    assert fixed_notebook(before) == dump(notebook([code_cell("import torch\r\nk = 4\r\n"), code_cell(LOOP_FIXED)]))


def test_byte_order_mark_is_kept() -> None:
    plain = dump(notebook([code_cell(LOOP)]))
    assert fixed_notebook(b"\xef\xbb\xbf" + plain) == b"\xef\xbb\xbf" + dump(notebook([code_cell(LOOP_FIXED)]))


def test_unchanged_lines_keep_their_json_spelling() -> None:
    # Another writer escaped `/` and spelled é as \u00e9 in one line only: that line keeps its spelling.
    before = dump(notebook([code_cell(LOOP)])).replace(b"# temp\xc3\xa9rature", b"# temp\\u00E9rature \\/ C")
    after = fixed_notebook(before)
    assert b"# temp\\u00E9rature \\/ C" in after
    assert "".join(json.loads(after)["cells"][0]["source"]) == LOOP_FIXED.replace("température", "température / C")


@pytest.mark.parametrize("writer", WRITERS.values(), ids=WRITERS.keys())
@pytest.mark.parametrize("others", ["single-lines", "multi-lines"])
@pytest.mark.parametrize("grown", ["x = 1", ""], ids=["one-line-cell", "empty-cell"])
def test_list_layout_of_a_grown_cell_follows_the_notebook(writer: dict, others: str, grown: str) -> None:
    # A one-line or empty cell has no layout of its own for a second line: it
    # takes another cell's, or the notebook's indentation when no cell shows one.
    other = "a = 1\nb = 2" if others == "multi-lines" else "a = 1"
    before = dump(notebook([code_cell(other), code_cell(grown)]), **writer)
    notebook_ = read_notebook(before)
    grown_lines = [grown + "\n"] if grown else []
    program = notebook_.program.decode()
    separator = next(line for line in program.splitlines(keepends=True) if line.startswith("pass  # "))
    edited = program.replace(separator + "".join(grown_lines), separator + "".join(grown_lines) + "y = 2\n")
    after = notebook_.with_program(edited.encode())
    grown_text = (grown + "\n" if grown else "") + "y = 2"
    assert after == dump(notebook([code_cell(other), code_cell(grown_text)]), **writer)


# --- fixes that cross cells ----------------------------------------------------------------------------------

def _module_and_cells(cells: list[str]):
    notebook_ = read_notebook(dump(notebook([code_cell(c) for c in cells])))
    module = cst.parse_module(notebook_.program)
    separators = [s for s in module.body if isinstance(s, cst.SimpleStatementLine) and isinstance(s.body[0], cst.Pass)]
    return notebook_, module, [s for s in module.body if s not in separators]


def test_insertions_at_a_cell_boundary_stay_in_the_anchors_cell() -> None:
    notebook_, module, (first, second, third) = _module_and_cells(["a = 1", "# setup\nb = 2", "c = 3\n"])
    edits = [InsertAfter(first, "after_a()"), InsertBefore(second, "before_b()"), InsertAfter(third, "after_c()")]
    after = notebook_.with_program(apply_edits(module, edits).bytes)
    assert [c["source"] for c in json.loads(after)["cells"]] == [
        ["a = 1\n", "after_a()"], ["before_b()\n", "# setup\n", "b = 2"], ["c = 3\n", "after_c()\n"]]


def test_fix_adding_an_import_extends_the_imports_cell() -> None:
    cells = ["import torch\nfrom torch.nn.parallel import DistributedDataParallel",
             "model = DistributedDataParallel(net)\nk = 4",
             "for i, (x, y) in enumerate(loader):\n    loss = loss_fn(model(x), y) / k\n    loss.backward()\n"
             "    if (i + 1) % k == 0 or (i + 1) == len(loader):\n        optimizer.step()\n"
             "        optimizer.zero_grad()"]
    before = dump(notebook([code_cell(c) for c in cells]))
    after = json.loads(fixed_notebook(before))["cells"]
    assert after[0]["source"] == ["import contextlib\n", "\n", "import torch\n",
                                  "from torch.nn.parallel import DistributedDataParallel"]  # isort's place
    assert after[1]["source"] == code_cell(cells[1])["source"]
    assert "    with (model.no_sync() if not should_step else contextlib.nullcontext()):\n" in after[2]["source"]


def test_fix_wrapping_a_magic_line_is_refused() -> None:
    cells = ["from torch.nn.parallel import DistributedDataParallel\nmodel = DistributedDataParallel(net)",
             "for i, (x, y) in enumerate(loader):\n    loss = loss_fn(model(x), y) / k\n    !echo micro-batch\n"
             "    loss.backward()\n    if (i + 1) % k == 0 or (i + 1) == len(loader):\n        optimizer.step()\n"
             "        optimizer.zero_grad()"]
    notebook_ = read_notebook(dump(notebook([code_cell(c) for c in cells])))
    outcome = fix_source(notebook_.program, Selection(), unsafe=True)
    assert "GA501" in [f.code for f in outcome.applied]
    with pytest.raises(NotebookError, match="IPython line 3 of cell 2"):
        notebook_.with_program(outcome.fixed)


def test_code_put_before_a_cell_magic_is_refused() -> None:
    notebook_ = read_notebook(dump(notebook([code_cell("%%time\nx = 1")])))
    with pytest.raises(NotebookError, match="cell magic on line 1 of cell 1"):
        notebook_.with_program(b"import contextlib\n" + notebook_.program)


def test_changed_magic_line_is_refused() -> None:
    notebook_ = read_notebook(dump(notebook([code_cell("x = 1\n%matplotlib inline")])))
    with pytest.raises(NotebookError, match="IPython"):
        notebook_.with_program(notebook_.program.replace(b"pass  #", b"pass  # changed"))
    with pytest.raises(NotebookError, match="IPython line 2 of cell 1"):
        notebook_.with_program(b"x = 1\n")


def test_moving_a_statement_to_another_cell_is_refused() -> None:
    notebook_, module, (first, second, third) = _module_and_cells(["a = 1", "b = 2", "c = 3"])
    with pytest.raises(NotebookError, match="moves `a = 1` from cell 1 to cell 3"):
        notebook_.with_program(apply_edits(module, [MoveAfter(first, third)]).bytes)


def test_removing_a_cell_boundary_is_refused() -> None:
    notebook_ = read_notebook(dump(notebook([code_cell("a = 1"), code_cell("b = 2")])))
    with pytest.raises(NotebookError, match="cell boundary"):
        notebook_.with_program(b"a = 1\nb = 2\n")


def test_changing_a_skipped_cell_is_refused() -> None:
    notebook_ = read_notebook(dump(notebook([code_cell("%%bash\necho hi")])))
    with pytest.raises(NotebookError, match="non-Python cell magic"):
        notebook_.with_program(b"x = 1\n\n")


def test_unchanged_program_gives_the_original_bytes() -> None:
    data = dump(notebook([code_cell("a = 1")]), indent=3)
    notebook_ = read_notebook(data)
    assert notebook_.with_program(notebook_.program) is data


# --- what is not a notebook ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "message"), [
    (b'{"cells": [}', r"^not valid JSON: Expecting value at line 1 column 12$"),
    (b"\xff\xfe{}", r"^not UTF-8 JSON"),
    (b"[1, 2]", r"^not a Jupyter notebook: the JSON has no 'nbformat' version$"),
    (b'{"cells": []}', r"^not a Jupyter notebook"),
    (json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [], "metadata": {}}).encode(),
     r"^nbformat 3 notebook: only nbformat 4 is read; upgrade it with `jupyter nbconvert"),
    (json.dumps({"nbformat": 5, "nbformat_minor": 0, "cells": [], "metadata": {}}).encode(), r"^nbformat 5 notebook"),
    (json.dumps(notebook([{"cell_type": "code", "metadata": {}, "outputs": []}])).encode(),
     r"^not a valid nbformat 4 notebook: cells\[0\]: 'source' is a required property$"),
    (json.dumps(notebook([code_cell("x") | {"source": 5}])).encode(),
     r"^not a valid nbformat 4 notebook: cells\[0\]\.source: 5 is not valid under any of the given schemas$"),
    (b"  \n", r"^empty file: not a notebook$"),
    (json.dumps(notebook([code_cell("x")]) | {"nbformat_minor": "5"}).encode(), r"must be integers"),
])
def test_unreadable_notebooks_get_one_line_errors(data: bytes, message: str) -> None:
    with pytest.raises(NotebookError, match=message) as raised:
        read_notebook(data)
    assert "\n" not in str(raised.value)


def test_schema_errors_in_what_is_never_read_are_tolerated() -> None:
    # Jupyter opens these (nbformat adds missing ids itself); gacclint reads only cell types and sources.
    odd_output = {"name": "stdout", "output_type": "stream", "text": "hi", "metadata": {}}
    cells = [code_cell("x = 1", outputs=[odd_output]), {"cell_type": "code", "source": "y = 2"}]
    notebook_ = read_notebook(dump(notebook(cells, minor=5)))
    assert notebook_.program.decode().splitlines()[-1] == "y = 2"


def test_syntax_error_says_where_in_the_cell() -> None:
    read = read_notebook(dump(notebook([code_cell("%matplotlib inline"), code_cell("x = 1\nfor x in y:\n    print(x")])))
    [error] = read.syntax_errors
    assert (error.cell, error.row, error.column) == (2, 3, 10)
    assert error.message == "'(' was never closed"
    assert str(error) == "syntax error at cell 2:3:10: '(' was never closed"


@pytest.mark.parametrize(("cells", "broken"), [
    (["x = 1", "for x in y:\n    print(x"], 2), (["x = (1", "y = 2"], 1)])
def test_a_cell_that_does_not_parse_is_left_out_of_the_program(cells: list[str], broken: int) -> None:
    read = read_notebook(dump(notebook([code_cell(c) for c in cells])))
    assert [error.cell for error in read.syntax_errors] == [broken]
    ast.parse(read.program)  # the other cells are still the program
    kept = cells[1 - (broken - 1)]
    assert kept in read.program.decode()
    assert cells[broken - 1] not in read.program.decode()


@pytest.mark.parametrize("cells", [["for x in y:", "    g(x)"], ['s = """text', 'more"""'],
                                   ["total = (1 +", "2)"], ["total = 1 + \\", "2"]])
def test_a_cell_cannot_finish_what_the_previous_one_began(cells: list[str]) -> None:
    # Jupyter runs each cell alone: a block, string or bracket does not go on in the next cell.
    assert read_notebook(dump(notebook([code_cell(c) for c in cells]))).syntax_errors


# --- cells IPython runs without their leading indentation --------------------------------------------------

def test_a_cell_with_an_indented_first_line_is_checked_as_ipython_runs_it() -> None:
    indented = "\n".join("  " + line if line else line for line in LOOP.splitlines())
    before = dump(notebook([code_cell("k = 4"), code_cell(indented)]))
    notebook_ = read_notebook(before)
    assert not notebook_.syntax_errors
    _, findings = lint_source(notebook_.program, Selection())
    assert [f.code for f in findings] == ["GA201"]
    after = json.loads(fixed_notebook(before))["cells"]
    assert "".join(after[1]["source"]) == "\n".join("  " + line if line else line for line in LOOP_FIXED.splitlines())


def test_an_indented_cell_whose_other_lines_lack_the_indentation_is_checked_never_written() -> None:
    cell = " def compute(a, b):\n    return a - b\n\nprint(compute(1, 2))\n" + LOOP
    notebook_ = read_notebook(dump(notebook([code_cell("k = 4"), code_cell(cell)])))
    assert not notebook_.syntax_errors
    outcome = fix_source(notebook_.program, Selection(), unsafe=True)
    assert outcome.changed
    with pytest.raises(NotebookError, match="first line is indented"):
        notebook_.with_program(outcome.fixed)


def test_a_cell_libcst_cannot_read_leaves_the_findings_reported_and_names_that_cell(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gacclint.cli import main

    # Valid Python (a tab, then spaces) that libcst's tokenizer rejects, in a cell of its own.
    seeding = "def same_seeds(seed):\n\t  torch.manual_seed(seed)\n\t  if seed:\n\t\t    print(seed)\n"
    data = dump(notebook([code_cell(seeding), code_cell(LOOP)]))
    path = tmp_path / "train.ipynb"
    path.write_bytes(data)
    result = CliRunner().invoke(main, ["fix", "--no-cache", str(path)])
    assert result.exit_code == 1, result.output
    assert f"{path}:cell 2:3:5: GA201" in result.stdout
    assert result.stderr.splitlines() == [
        f"gacclint: {path}:cell 2:3: fix for GA201 not made: valid Python that libcst's parser cannot read "
        "(tokenizer error: no matching outer block for dedent at 1:1): it cannot be fixed or explained; "
        "libcst cannot read code cell 1"]
    assert path.read_bytes() == data


def test_a_cell_in_a_newer_pythons_grammar_is_read_as_a_py_file_is() -> None:
    # PEP 701 (Python 3.12): the same quotes inside an f-string's braces. CPython 3.11's parser
    # refuses the cell; libcst's parser, which reads `.py` files written for newer Pythons, accepts
    # it, so the cell is analysed, not reported as a syntax error.
    cells = [code_cell('k = 4\nname = {"run": "a"}\nprint(f"run {name["run"]}")'),
             code_cell(LOOP.replace(" or (i + 1) == len(loader)", ""))]
    read = read_notebook(dump(notebook(cells)))
    assert not read.syntax_errors
    assert findings(dump(notebook(cells))) == [(2, 3, "GA201"), (2, 4, "GA202")]
