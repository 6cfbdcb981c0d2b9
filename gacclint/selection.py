"""Which rule codes are on: `--select` / `--ignore` with codes or prefixes (`GA2`, `GA101`)."""

from __future__ import annotations

from dataclasses import dataclass


class UnknownCode(ValueError):
    pass


@dataclass(frozen=True)
class Selection:
    select: tuple[str, ...] = ("GA",)
    ignore: tuple[str, ...] = ()

    def selects(self, code: str) -> bool:
        chosen = _longest(code, self.select)
        ignored = _longest(code, self.ignore)
        # The more specific prefix wins; on a tie the ignore does.
        return chosen > ignored

    @classmethod
    def parse(cls, select: str | None, ignore: str | None, known: list[str]) -> "Selection":
        return cls(_codes(select, known) if select else ("GA",), _codes(ignore, known) if ignore else ())


def _longest(code: str, prefixes: tuple[str, ...]) -> int:
    return max((len(p) for p in prefixes if code.startswith(p)), default=0)


def _codes(text: str, known: list[str]) -> tuple[str, ...]:
    codes = tuple(part.strip().upper() for part in text.split(",") if part.strip())
    for code in codes:
        if code != "ALL" and not any(k.startswith(code) for k in known):
            raise UnknownCode(f"unknown rule code or prefix: {code}")
    return tuple("GA" if code == "ALL" else code for code in codes)
