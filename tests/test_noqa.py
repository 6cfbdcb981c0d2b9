"""`# noqa` directives: parsing, suppression, unused reporting with its fix, and --add-noqa."""

from __future__ import annotations

import re

import pytest

from gacclint.diagnostics import CODES, Diagnostic, Edit
from gacclint.noqa import add_noqa, find_noqa, noqa_row_map, suppress
from gacclint.selection import Selection


def diagnostic(code: str, row: int, column: int = 1) -> Diagnostic:
    return Diagnostic(code, CODES.get(code, ""), f"{code} found", row, column, row, column + 1)


def codes_and_rows(diagnostics: list[Diagnostic]) -> list[tuple[str, int]]:
    return [(d.code, d.row) for d in diagnostics]


def offset(text: str, row: int, column: int) -> int:
    starts = [0] + [match.end() for match in re.finditer(r"\r\n|\r|\n", text)]
    return (starts[row - 1] if row <= len(starts) else len(text)) + column - 1


def apply(text: str, edit: Edit) -> str:
    start, end = offset(text, edit.row, edit.column), offset(text, edit.end_row, edit.end_column)
    return text[:start] + edit.content + text[end:]


def unused(text: str, *diagnostics: Diagnostic, selection: Selection | None = None) -> list[Diagnostic]:
    return [d for d in suppress(list(diagnostics), text, report_unused=True, selection=selection) if d.code == "GA002"]


# -- parsing -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("comment", "codes"), [
    ("# noqa: GA202", {"GA202"}),
    ("# noqa:GA202", {"GA202"}),
    ("#noqa:GA202,GA201", {"GA202", "GA201"}),
    ("# noqa: GA202, GA201", {"GA202", "GA201"}),
    ("# noqa: GA202 GA201", {"GA202", "GA201"}),
    ("# NOQA: ga202", {"GA202"}),
    ("# NoQa : GA202", {"GA202"}),
    ("# noqa: E501, GA202", {"E501", "GA202"}),
    ("# noqa: GA202 because the window is handled by the caller", {"GA202"}),
    ("# type: ignore  # noqa: GA202", {"GA202"}),
    ("# noqa", None),
    ("# NOQA", None),
    ("#noqa", None),
    ("# noqa:", None),
    ("# noqa GA202", None),
    ("# noqa  # another comment", None),
])
def test_directives_are_parsed(comment: str, codes: set[str] | None) -> None:
    [(row, directive)] = find_noqa(f"x = 1  {comment}\n").items()
    assert row == 1
    assert directive.codes == (None if codes is None else frozenset(codes))


@pytest.mark.parametrize("comment", ["# noqanope", "# noqa123", "# not noqa", "# ruff: noqa", "# gacclint: noqa"])
def test_lookalikes_are_not_line_directives(comment: str) -> None:
    assert find_noqa(f"x = 1  {comment}\n") == {}


def test_noqa_inside_strings_does_not_count() -> None:
    text = 'a = "# noqa: GA202"\nb = """\n# noqa\n"""\nc = f"{x} # noqa"  # real: keep\n'
    assert find_noqa(text) == {}


def test_directive_spans_are_one_based_columns() -> None:
    [directive] = find_noqa("step()  # noqa: E501, GA202 why\n").values()
    line = "step()  # noqa: E501, GA202 why"
    assert line[directive.column - 1:directive.end_column - 1] == "# noqa: E501, GA202"
    assert [(s.code, line[s.column - 1:s.end_column - 1]) for s in directive.code_spans] == [
        ("E501", "E501"), ("GA202", "GA202")]


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_rows_follow_every_line_ending(ending: str) -> None:
    text = ending.join(["a = 1", "b = 2  # noqa: GA101", "c = 3", "d = 4  # noqa", ""])
    assert {row: d.codes for row, d in find_noqa(text).items()} == {2: frozenset({"GA101"}), 4: None}


def test_form_feeds_do_not_split_lines() -> None:
    text = "a = 1\n\x0cb = 2  # noqa: GA101\nc = 3  # noqa: GA202\n"
    assert sorted(find_noqa(text)) == [2, 3]


def test_text_that_does_not_tokenize_falls_back_to_each_line() -> None:
    text = "foo(  # noqa: GA101\nbar = 1  # noqa: GA202\n"  # never closed
    assert {row: d.codes for row, d in find_noqa(text).items()} == {1: frozenset({"GA101"}), 2: frozenset({"GA202"})}


def test_multi_line_strings_and_continuations_move_to_their_last_row() -> None:
    text = 'x = """\nabc\n"""  + \\\n    y\nz = 1 + \\\n    2\nw = 3  # ends in \\\nv = 4\n'
    assert noqa_row_map(text) == {1: 4, 2: 4, 3: 4, 5: 6}


# -- suppression ---------------------------------------------------------------------------------------------------

def test_a_directive_suppresses_its_codes_on_its_row_only() -> None:
    text = "a()  # noqa: GA202\nb()\n"
    kept = suppress([diagnostic("GA202", 1), diagnostic("GA201", 1), diagnostic("GA202", 2)], text, False)
    assert codes_and_rows(kept) == [("GA201", 1), ("GA202", 2)]


def test_a_bare_directive_suppresses_everything_but_the_syntax_error() -> None:
    text = "a()  # noqa\n"
    kept = suppress([diagnostic("GA202", 1), diagnostic("GA101", 1), diagnostic("GA001", 1)], text, False)
    assert codes_and_rows(kept) == [("GA001", 1)]


def test_even_a_named_syntax_error_is_not_suppressed() -> None:
    assert codes_and_rows(suppress([diagnostic("GA001", 1)], "a(  # noqa: GA001\n", False)) == [("GA001", 1)]


def test_codes_match_whatever_their_case() -> None:
    assert suppress([diagnostic("GA202", 1)], "a()  # NOQA: ga202\n", False) == []


def test_codes_match_exactly_not_by_prefix() -> None:
    assert codes_and_rows(suppress([diagnostic("GA202", 1)], "a()  # noqa: GA2\n", False)) == [("GA202", 1)]


def test_a_diagnostic_in_a_multi_line_string_is_suppressed_on_the_strings_last_row() -> None:
    text = 'run("""\nabc\n""")  # noqa: GA202\n'
    assert suppress([diagnostic("GA202", 1)], text, False) == []
    text = "loss = a + \\\n    b  # noqa: GA201\n"
    assert suppress([diagnostic("GA201", 1)], text, False) == []


def test_file_directives_exempt_the_whole_file() -> None:
    diagnostics = [diagnostic("GA202", 3), diagnostic("GA101", 4), diagnostic("GA001", 5)]
    assert codes_and_rows(suppress(diagnostics, "# gacclint: noqa\n", False)) == [("GA001", 5)]
    assert codes_and_rows(suppress(diagnostics, "  # Gacclint: NOQA: GA202\n", False)) == [("GA101", 4), ("GA001", 5)]


def test_a_file_directive_after_code_is_ignored() -> None:
    text = "x = 1  # gacclint: noqa\n"
    assert codes_and_rows(suppress([diagnostic("GA202", 3)], text, False)) == [("GA202", 3)]


def test_suppress_returns_diagnostics_in_row_order() -> None:
    kept = suppress([diagnostic("GA202", 3), diagnostic("GA101", 1, 5), diagnostic("GA102", 1, 2)], "", False)
    assert codes_and_rows(kept) == [("GA102", 1), ("GA101", 1), ("GA202", 3)]


# -- unused directives (GA002) ---------------------------------------------------------------------------------------

def test_unused_directives_are_reported_only_when_asked() -> None:
    text = "a()  # noqa: GA202\n"
    assert suppress([], text, report_unused=False) == []
    [report] = unused(text)
    assert (report.code, report.name, report.row, report.column) == ("GA002", "unused-noqa", 1, 6)
    assert (report.end_row, report.end_column) == (1, 19)
    assert report.message == "Unused `noqa` directive (unused: `GA202`)"
    assert report.source_line == "a()  # noqa: GA202"
    assert report.fix is not None and report.fix.applicability == "safe"
    assert report.fix.message == "Remove unused `noqa` directive"


def test_a_code_written_in_lower_case_is_reported_in_a_file_without_findings() -> None:
    [report] = unused("a()  # NOQA: e501, ga202\n")
    assert report.message == "Unused `noqa` directive (unused: `GA202`)"
    assert unused("a()  # noqa: E501\nb = 'ga2'\n") == []


def test_used_codes_other_tools_codes_and_bare_directives_are_not_reported() -> None:
    text = "a()  # noqa: GA202\nb()  # noqa: E501, F401\nc()  # noqa\n"
    assert unused(text, diagnostic("GA202", 1)) == []


def test_a_directive_naming_ga002_is_not_reported() -> None:
    assert unused("a()  # noqa: GA202, GA002\n") == []


def test_a_file_exemption_of_ga002_silences_the_report() -> None:
    assert unused("# gacclint: noqa: GA002\na()  # noqa: GA202\n") == []


def test_unknown_gacclint_codes_are_reported_as_unknown() -> None:
    [report] = unused("a()  # noqa: GA202, GA999, GA201\n")
    assert report.message == "Unused `noqa` directive (unused: `GA202`, `GA201`; unknown: `GA999`)"


def test_codes_the_selection_turns_off_are_not_reported() -> None:
    text = "a()  # noqa: GA202, GA101, GA999\n"
    [report] = unused(text, selection=Selection.build(["GA1"]))
    assert report.message == "Unused `noqa` directive (unused: `GA101`; unknown: `GA999`)"
    assert unused("a()  # noqa: GA202\n", selection=Selection.build(["GA1"])) == []


@pytest.mark.parametrize(("before", "after"), [
    ("a()  # noqa: GA202\n", "a()\n"),
    ("a()  # noqa: GA202   \r\nb()\r\n", "a()\r\nb()\r\n"),
    ("a()  # noqa: GA202  # type: ignore\n", "a()  # type: ignore\n"),
    ("a()  # noqa: GA202 because reasons\n", "a()  # because reasons\n"),
    ("a()  # explained # noqa: GA202\n", "a()  # explained\n"),
    ("a()\n# noqa: GA202\nb()\n", "a()\nb()\n"),
    ("a()\n    # noqa: GA202", "a()\n"),
    ("a()  # noqa: GA201, GA202\n", "a()\n"),
    ("a()  # noqa: GA202, E501\n", "a()  # noqa: E501\n"),
    ("a()  # noqa:GA202 E501 GA201\n", "a()  # noqa:E501\n"),
])
def test_the_fix_removes_what_is_unused(before: str, after: str) -> None:
    [report] = unused(before)
    assert report.fix is not None
    [edit] = report.fix.edits
    assert apply(before, edit) == after


def test_the_fix_keeps_the_codes_that_were_used() -> None:
    text = "a()  # noqa: GA201, GA202, E501\n"
    [report] = unused(text, diagnostic("GA202", 1))
    assert report.message == "Unused `noqa` directive (unused: `GA201`)"
    assert report.fix is not None
    assert apply(text, report.fix.edits[0]) == "a()  # noqa: GA202, E501\n"


# -- add_noqa ------------------------------------------------------------------------------------------------------

def test_add_noqa_writes_sorted_codes_at_each_rows_end() -> None:
    text = "a()\nb()   \nc()\n"
    new, changed = add_noqa(text, [diagnostic("GA202", 1), diagnostic("GA101", 1, 3), diagnostic("GA201", 2)])
    assert (new, changed) == ("a()  # noqa: GA101, GA202\nb()  # noqa: GA201\nc()\n", 2)


def test_add_noqa_is_idempotent_and_leaves_nothing_to_report() -> None:
    text = "a()\nb()  # explain\n"
    diagnostics = [diagnostic("GA202", 1), diagnostic("GA201", 2), diagnostic("GA201", 2, 4)]
    once, changed = add_noqa(text, diagnostics)
    assert changed == 2 and once == "a()  # noqa: GA202\nb()  # explain  # noqa: GA201\n"
    assert add_noqa(once, diagnostics) == (once, 0)
    assert suppress(diagnostics, once, report_unused=True) == []


def test_add_noqa_merges_into_an_existing_directive() -> None:
    text = "a()  # noqa: E501 why\nb()  # NOQA:GA202\n"
    new, changed = add_noqa(text, [diagnostic("GA202", 1), diagnostic("GA201", 2), diagnostic("GA202", 2)])
    assert (new, changed) == ("a()  # noqa: E501, GA202 why\nb()  # NOQA:GA202, GA201\n", 2)


def test_add_noqa_leaves_a_bare_directive() -> None:
    assert add_noqa("a()  # noqa\n", [diagnostic("GA202", 1)]) == ("a()  # noqa\n", 0)


@pytest.mark.parametrize("ending", ["\r\n", "\r", "\n"])
def test_add_noqa_keeps_every_lines_ending(ending: str) -> None:
    text = f"a(){ending}b()\nc()\r\nd()"
    new, changed = add_noqa(text, [diagnostic("GA101", 1), diagnostic("GA202", 4)])
    assert (new, changed) == (f"a()  # noqa: GA101{ending}b()\nc()\r\nd()  # noqa: GA202", 2)


def test_add_noqa_skips_codes_no_comment_can_silence() -> None:
    text = "a(\nb()  # noqa: GA202\n"
    assert add_noqa(text, [diagnostic("GA001", 1), diagnostic("GA002", 2)]) == (text, 0)


def test_add_noqa_puts_multi_line_strings_and_continuations_on_their_last_row() -> None:
    text = 'run("""\nabc\n""")\nloss = a + \\\n    b\n'
    new, _ = add_noqa(text, [diagnostic("GA202", 1), diagnostic("GA201", 4)])
    assert new == 'run("""\nabc\n""")  # noqa: GA202\nloss = a + \\\n    b  # noqa: GA201\n'
    assert suppress([diagnostic("GA202", 1), diagnostic("GA201", 4)], new, report_unused=True) == []


def test_add_noqa_ignores_rows_past_the_end() -> None:
    assert add_noqa("a()\n", [diagnostic("GA202", 5)]) == ("a()\n", 0)
