"""What a rule is: a code, a name, its documentation, examples, and `check`."""

from __future__ import annotations

import enum
import inspect
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Iterator

import libcst as cst

from gacclint.diagnostics import DOC_URL
from gacclint.fixes.edits import Edit

if TYPE_CHECKING:
    from gacclint.loops.find import ModuleModel
    from gacclint.loops.model import TrainingLoop

REQUIRED_HEADINGS = ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "## Fix safety")


class Applicability(enum.Enum):
    SAFE = "safe"  # applied by `gacclint fix`
    UNSAFE = "unsafe"  # applied only with --unsafe-fixes


@dataclass(frozen=True)
class Fix:
    applicability: Applicability
    message: str
    edits: tuple[Edit, ...]


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    node: cst.CSTNode  # located by its position in the source
    fix: Fix | None = None


@dataclass(frozen=True)
class Valid:
    """A snippet the rule must stay silent on."""

    code: str
    why: str = ""


@dataclass(frozen=True)
class Invalid:
    """A snippet the rule must report, and what its fix must turn it into."""

    code: str
    fixed: str | None = None  # None: no fix is offered
    why: str = ""
    applicability: Applicability | None = Applicability.SAFE
    # Other codes the snippet is expected to raise too (reported, fixed to a fixpoint).
    also: tuple[str, ...] = field(default_factory=tuple)


class Rule:
    code: ClassVar[str]
    name: ClassVar[str]
    VALID: ClassVar[list[Valid]] = []
    INVALID: ClassVar[list[Invalid]] = []

    def check(self, loop: "TrainingLoop", model: "ModuleModel") -> Iterator[Finding]:
        raise NotImplementedError

    def check_module(self, model: "ModuleModel") -> Iterator[Finding]:
        """Rules that read more than one loop at a time override this."""
        for loop in model.loops:
            yield from self.check(loop, model)

    def finding(self, message: str, node: cst.CSTNode, fix: Fix | None = None) -> Finding:
        return Finding(self.code, message, node, fix)

    # -- documentation ------------------------------------------------------------

    @classmethod
    def documentation(cls) -> str:
        return textwrap.dedent(inspect.getdoc(cls) or "").strip()

    @classmethod
    def summary(cls) -> str:
        """The first sentence under 'What it does'."""
        doc = cls.documentation()
        marker = "## What it does"
        if marker in doc:
            text = doc.split(marker, 1)[1].strip().split("\n\n", 1)[0]
            return " ".join(text.split())
        return doc.split("\n", 1)[0]

    @classmethod
    def fixable(cls) -> bool:
        return any(case.fixed is not None for case in cls.INVALID)

    @classmethod
    def url(cls) -> str:
        return DOC_URL.format(anchor=f"{cls.code.lower()}-{cls.name}")
