"""Which codes a selection turns on: prefixes, ALL, specificity, opt-in codes,
the always-on syntax error, command-line layers and per-file ignores."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gacclint.diagnostics import CODES, OPT_IN_CODES
from gacclint.selection import Selection, UnknownCode, parse_codes

RULES = sorted(code for code in CODES if code not in ("GA001", "GA002"))


def on(selection: Selection) -> set[str]:
    return {code for code in CODES if selection.selects(code)}


def test_the_default_is_every_rule_and_the_syntax_error_but_not_opt_in_codes() -> None:
    assert on(Selection()) == {"GA001", *RULES}
    assert "GA002" in OPT_IN_CODES and not Selection().selects("GA002")


def test_a_prefix_selects_its_codes() -> None:
    assert on(Selection.build(["GA2"])) == {"GA001", "GA201", "GA202", "GA203", "GA204"}


def test_an_ignore_takes_away_from_a_wider_select() -> None:
    assert on(Selection.build(["GA2"], ["GA203"])) == {"GA001", "GA201", "GA202", "GA204"}


def test_the_more_specific_selector_wins_either_way() -> None:
    assert on(Selection.build(["GA202"], ["GA2"])) == {"GA001", "GA202"}
    assert on(Selection.build(["GA2", "GA20"], ["GA2"])) == {"GA001", "GA201", "GA202", "GA203", "GA204"}


def test_a_tie_goes_to_ignore() -> None:
    assert not Selection.build(["GA202"], ["GA202"]).selects("GA202")
    assert not Selection.build(["GA2"], ["GA2"]).selects("GA201")


def test_all_is_less_specific_than_any_prefix() -> None:
    assert on(Selection.build(["ALL"], ["GA"])) == {"GA001"}
    assert on(Selection.build(["GA"], ["ALL"])) == {"GA001", *RULES}
    assert on(Selection.build(["ALL"], ["ALL"])) == {"GA001"}


def test_extend_select_adds_to_select() -> None:
    assert on(Selection.build(["GA2"], extend_select=["GA101"])) == {"GA001", "GA101", "GA201", "GA202", "GA203",
                                                                     "GA204"}


@pytest.mark.parametrize("select", [["ALL"], ["GA"], ["GA0"], ["GA00"]])
def test_opt_in_codes_are_not_reached_by_prefixes_or_all(select: list[str]) -> None:
    assert not Selection.build(select).selects("GA002")


def test_opt_in_codes_are_turned_on_by_their_exact_code() -> None:
    assert Selection.build(extend_select=["GA002"]).selects("GA002")
    assert Selection.build(["GA002"]).selects("GA002")
    assert on(Selection.build(["GA002"])) == {"GA001", "GA002"}
    assert on(Selection.build(extend_select=["GA002"])) == {"GA001", "GA002", *RULES}


def test_an_exact_opt_in_select_beats_an_ignored_prefix_but_not_its_own_code() -> None:
    assert Selection.build(["ALL", "GA002"], ["GA0"]).selects("GA002")
    assert not Selection.build(extend_select=["GA002"], ignore=["GA002"]).selects("GA002")


@pytest.mark.parametrize("selection", [
    Selection.build(["GA2"]), Selection.build(["ALL"], ["ALL"]), Selection.build(ignore=["GA001"]),
    Selection.build().without(["GA001"]), Selection.build().without(["ALL"]),
])
def test_the_syntax_error_is_always_selected(selection: Selection) -> None:
    assert selection.selects("GA001")


def test_selectors_are_case_insensitive_and_trimmed() -> None:
    assert Selection.build([" ga2 "], ["Ga203"]) == Selection.build(["GA2"], ["GA203"])
    assert Selection(select=("all",)).select == ("ALL",)


def test_unknown_selectors_raise_naming_them() -> None:
    with pytest.raises(UnknownCode, match=r"^unknown rule code or prefix: GA999$") as caught:
        Selection.build(["GA2", "GA999"])
    assert caught.value.codes == ("GA999",)
    with pytest.raises(UnknownCode, match=r"^unknown rule codes or prefixes: XY1, GA7$"):
        Selection.build(ignore=["XY1"], extend_select=["GA7"])
    with pytest.raises(UnknownCode, match="''"):
        Selection.build([""])
    with pytest.raises(UnknownCode):
        Selection.build().without(["GA 202"])


def test_parse_codes_splits_command_line_text() -> None:
    assert parse_codes("GA2, ga101,,ALL ") == ("GA2", "GA101", "ALL")
    assert parse_codes("") == ()
    assert parse_codes(" , ") == ()
    with pytest.raises(UnknownCode, match="unknown rule code or prefix: GA999"):
        parse_codes("GA2,GA999")


def test_a_layer_with_select_starts_afresh() -> None:
    config = Selection.build(["GA1", "GA2"], ["GA101"])
    command_line = Selection.build(["GA1"], base=config)
    assert on(command_line) == {"GA001", "GA101", "GA102", "GA103", "GA104"}


def test_a_layer_without_select_changes_only_what_it_reaches() -> None:
    config = Selection.build(["GA2"], ["GA203"])
    assert on(Selection.build(ignore=["GA202"], base=config)) == {"GA001", "GA201", "GA204"}
    assert on(Selection.build(extend_select=["GA101"], base=config)) == {"GA001", "GA101", "GA201", "GA202", "GA204"}
    # Ruff's rule: within the command line's layer GA2 is the most specific selector of GA203.
    assert Selection.build(extend_select=["GA2"], base=config).selects("GA203")


def test_an_empty_layer_leaves_the_base_alone() -> None:
    config = Selection.build(["GA2"], ["GA203"], ["GA002"])
    assert on(Selection.build(base=config)) == on(config)


def test_opt_in_codes_pass_through_layers() -> None:
    config = Selection.build(extend_select=["GA002"])
    assert Selection.build(ignore=["GA101"], base=config).selects("GA002")
    assert not Selection.build(ignore=["GA0"], base=config).selects("GA002")
    assert not Selection.build(["ALL"], base=config).selects("GA002")


def test_per_file_ignores_beat_every_select() -> None:
    selection = Selection.build(["GA202"], extend_select=["GA002"])
    assert on(selection.without(["GA2"])) == {"GA001", "GA002"}
    assert on(selection.without(["GA0"])) == {"GA001", "GA202"}
    layered = Selection.build(extend_select=["GA101"], base=Selection.build(["GA1"]).without(["GA10"]))
    assert not layered.selects("GA101")


def test_without_nothing_is_the_same_selection() -> None:
    selection = Selection.build(["GA2"])
    assert selection.without([]) is selection


def test_selections_are_hashable_values() -> None:
    assert hash(Selection.build(["GA2"], ["GA203"])) == hash(Selection(("GA2",), ("GA203",)))
    assert len({Selection(), Selection(), Selection.build(["GA2"])}) == 2


def test_the_fingerprint_is_the_codes_that_are_on() -> None:
    assert Selection.build(["GA2"], ["GA203"]).fingerprint() == "GA001,GA201,GA202,GA204"
    spelled_differently = Selection.build(["GA202", "GA204", "GA201"])
    assert Selection.build(["GA20"], ["GA203"]).fingerprint() == spelled_differently.fingerprint()
    assert Selection().fingerprint() != Selection.build(extend_select=["GA002"]).fingerprint()
    assert Selection.build(["GA2"]).selected_codes() == ("GA001", "GA201", "GA202", "GA203", "GA204")


def test_the_constructor_keeps_its_old_spelling() -> None:
    assert on(Selection(select=("GA202",))) == {"GA001", "GA202"}
    assert on(Selection()) == on(Selection(select=("ALL",)))


def test_importing_configuration_modules_loads_no_analysis() -> None:
    code = ("import sys, gacclint.config, gacclint.noqa, gacclint.selection; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('libcst', 'torch', 'gacclint.rules')"
            " or m.startswith(('gacclint.rules', 'gacclint.engine', 'gacclint.loops'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
