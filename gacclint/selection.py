"""Which codes are on: `select`, `ignore` and `extend-select`, from a config
file and the command line, with Ruff's precedence rules.

A selector is a code (`GA202`), a prefix of codes (`GA2`, `GA`) or `ALL`.
Within one layer (a config file, or the command line) every code takes the
verdict of the most specific selector that reaches it: `ALL`, then longer
prefixes, then the exact code; on a tie `ignore` wins. So `select = ["GA2"],
ignore = ["GA203"]` is GA2 without GA203, and `select = ["GA202"], ignore =
["GA2"]` keeps GA202.

Layers stack like Ruff's: a layer that sets `select` starts afresh (the
command line's `--select` discards the config's select, ignore and
extend-select alike); a layer without one only changes the codes its
`ignore` and `extend-select` reach and leaves the rest to the layer below.
With no layer setting `select`, everything is selected (`ALL`).

Exceptions: GA001 (the file does not parse) is always on; the opt-in codes
(GA002, unused `noqa`) are only turned on by their exact code in `select` or
`extend-select`, never by a prefix or `ALL` (any `ignore` selector still turns
them off). Per-file ignores (`without`) switch codes off whatever selected
them, as Ruff's `per-file-ignores` do.

This module only reads `gacclint.diagnostics.CODES`: it never imports the
rules (or libcst), so a warm, cached run can validate and apply a selection.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

from gacclint.diagnostics import CODES, OPT_IN_CODES, SYNTAX_ERROR

ALL = "ALL"
_UNMATCHED = -1  # below ALL's specificity (0) and every prefix's (its length)


class UnknownCode(ValueError):
    """Selectors that are neither `ALL` nor a prefix of a known code; `codes` names them."""

    def __init__(self, codes: Iterable[str]) -> None:
        self.codes = tuple(codes)
        shown = ", ".join(code or "''" for code in self.codes)
        noun = "rule code or prefix" if len(self.codes) == 1 else "rule codes or prefixes"
        super().__init__(f"unknown {noun}: {shown}")


def parse_codes(text: str) -> tuple[str, ...]:
    """The selectors of comma-separated command-line text (`"GA2, ga101"` ->
    `("GA2", "GA101")`), upper-cased and validated; raises UnknownCode."""
    codes = tuple(part.strip().upper() for part in text.split(",") if part.strip())
    check_codes(codes)
    return codes


def check_codes(codes: Iterable[str]) -> None:
    """Raise UnknownCode naming every selector that reaches no known code."""
    unknown = [code for code in codes if not _is_known(code)]
    if unknown:
        raise UnknownCode(unknown)


def _is_known(selector: str) -> bool:
    return selector == ALL or (selector != "" and any(code.startswith(selector) for code in CODES))


@dataclass(frozen=True)
class Selection:
    """One layer of selectors, on top of an optional `base` layer.

    `select=None` leaves the choice to `base` (or, with no base, selects
    `ALL`). Selectors are upper-cased and validated on construction (raises
    UnknownCode). Hashable, so it can key caches; `fingerprint()` is its
    stable text.
    """

    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    extend_select: tuple[str, ...] = ()
    base: Selection | None = None
    # Off whatever selected them (Ruff's per-file-ignores); GA001 excepted.
    per_file_ignores: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        every: list[str] = []
        for name in ("select", "ignore", "extend_select", "per_file_ignores"):
            selectors = getattr(self, name)
            if selectors is not None:
                normalized = tuple(selector.strip().upper() for selector in selectors)
                object.__setattr__(self, name, normalized)
                every.extend(normalized)
        check_codes(every)

    @classmethod
    def build(cls, select: Iterable[str] | None = None, ignore: Iterable[str] = (),
              extend_select: Iterable[str] = (), base: Selection | None = None) -> Selection:
        """A layer from already-split selectors (lists welcome); raises UnknownCode."""
        return cls(None if select is None else tuple(select), tuple(ignore), tuple(extend_select), base)

    def without(self, selectors: Iterable[str]) -> Selection:
        """This selection with `selectors` switched off, however specifically
        they were selected (for per-file ignores)."""
        added = tuple(selectors)
        if not added:
            return self
        return replace(self, per_file_ignores=self.per_file_ignores + added)

    def selects(self, code: str) -> bool:
        if code == SYNTAX_ERROR:
            return True
        layer: Selection | None = self
        while layer is not None:
            if _specificity(code, layer.per_file_ignores, exact_only=False) != _UNMATCHED:
                return False
            layer = layer.base
        return self._layer_selects(code)

    def _layer_selects(self, code: str) -> bool:
        own_select = self.select if self.select is not None or self.base is not None else (ALL,)
        chosen = _specificity(code, (own_select or ()) + self.extend_select, exact_only=code in OPT_IN_CODES)
        ignored = _specificity(code, self.ignore, exact_only=False)
        if chosen == ignored == _UNMATCHED and own_select is None:
            assert self.base is not None  # own_select is None only on top of a base
            return self.base._layer_selects(code)
        return chosen > ignored

    def selected_codes(self) -> tuple[str, ...]:
        """Every known code this selection turns on, in code order."""
        return tuple(code for code in sorted(CODES) if self.selects(code))

    def fingerprint(self) -> str:
        """Stable text for cache keys: the codes that are on. Two selections
        spelled differently but choosing the same codes share it."""
        return ",".join(self.selected_codes())


def _specificity(code: str, selectors: tuple[str, ...], exact_only: bool) -> int:
    """How specifically the most specific of `selectors` reaches `code`:
    ALL 0, a prefix its length, _UNMATCHED when none does."""
    best = _UNMATCHED
    for selector in selectors:
        if exact_only:
            reached = selector == code
        else:
            reached = selector == ALL or code.startswith(selector)
        if reached:
            best = max(best, 0 if selector == ALL else len(selector))
    return best
