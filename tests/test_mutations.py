"""Mutation tests: break the project's own correct fixtures and fix them again.

The clear, step, backward and division statements of every fixed fixture
(fixtures/runnable, fixtures/graphs, fixtures/step_hygiene) are deleted, moved
to another place in the loop, or duplicated, one to three at a time. Every
mutant must be checked and fixed without a crash, and every fix must parse,
be stable and stay inside its edits (the oracle of tests/test_properties.py).

The mutants are drawn by a seeded random generator, so CI is deterministic;
GACCLINT_MUTANTS=N draws N per fixture (default 16; odd ones fixed with unsafe fixes), and GACCLINT_MUTANTS=all
also runs every single deletion, move and duplication (a few minutes).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import libcst as cst
import pytest

from test_properties import assert_sound

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted(p for folder in ("runnable", "graphs", "step_hygiene")
                  for p in (ROOT / "fixtures" / folder).glob("*.fixed.py"))
SETTING = os.environ.get("GACCLINT_MUTANTS", "16")
EXHAUSTIVE = SETTING == "all"
PER_FIXTURE = 16 if EXHAUSTIVE else int(SETTING)


def kind(statement: cst.SimpleStatementLine) -> str | None:
    """clear, step, backward or division: the statements the rules are about."""
    code = cst.Module([]).code_for_node(statement)
    if "zero_grad(" in code:
        return "clear"
    if "backward(" in code:
        return "backward"
    if ".step(" in code:
        return "step"
    if "/" in code and any(isinstance(s, (cst.Assign, cst.AugAssign)) for s in statement.body):
        return "division"
    return None


class _Statements(cst.CSTVisitor):
    """The statements inside training loops (the body of any `for`/`while`), in order."""

    def __init__(self) -> None:
        self.depth = 0
        self.targets: list[cst.SimpleStatementLine] = []  # the statements to mutate
        self.places: list[cst.BaseStatement] = []  # every statement in a loop: where one may go

    def visit_For(self, node: cst.For) -> None:
        self.depth += 1

    def leave_For(self, node: cst.For) -> None:
        self.depth -= 1

    def visit_While(self, node: cst.While) -> None:
        self.depth += 1

    def leave_While(self, node: cst.While) -> None:
        self.depth -= 1

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        if self.depth:
            self.places.append(node)
            if kind(node):
                self.targets.append(node)

    def visit_If(self, node: cst.If) -> None:
        if self.depth:
            self.places.append(node)

    def visit_With(self, node: cst.With) -> None:
        if self.depth:
            self.places.append(node)


@dataclass(frozen=True)
class Mutation:
    op: str  # delete, move or duplicate
    target: int  # index into the targets
    place: int = 0  # index into the places (move, duplicate)
    after: bool = False  # put it after the place rather than before

    def describe(self, targets: list[cst.SimpleStatementLine], places: list[cst.BaseStatement]) -> str:
        text = cst.Module([]).code_for_node(targets[self.target]).strip()
        if self.op == "delete":
            return f"delete `{text}`"
        place = cst.Module([]).code_for_node(places[self.place]).strip().splitlines()[0]
        return f"{self.op} `{text}` {'after' if self.after else 'before'} `{place}`"


class _Mutator(cst.CSTTransformer):
    def __init__(self, mutation: Mutation, targets: list, places: list) -> None:
        super().__init__()
        self.target = targets[mutation.target]
        self.removed = {id(self.target)} if mutation.op in ("delete", "move") else set()
        self.before: dict[int, cst.BaseStatement] = {}
        self.after: dict[int, cst.BaseStatement] = {}
        if mutation.op != "delete":
            (self.after if mutation.after else self.before)[id(places[mutation.place])] = self.target

    def on_leave(self, original_node, updated_node):  # type: ignore[override]
        updated = super().on_leave(original_node, updated_node)
        if not isinstance(updated, (cst.IndentedBlock, cst.Module)):
            return updated
        body: list[cst.BaseStatement] = []
        for old, new in zip(original_node.body, updated.body):
            if id(old) in self.before:
                body.append(self.before[id(old)])
            if id(old) not in self.removed:
                body.append(new)
            if id(old) in self.after:
                body.append(self.after[id(old)])
        if not body:
            body = [cst.SimpleStatementLine([cst.Pass()])]
        return updated.with_changes(body=body)


def analyse(source: str) -> tuple[cst.Module, list[cst.SimpleStatementLine], list[cst.BaseStatement]]:
    module = cst.parse_module(source)
    finder = _Statements()
    module.visit(finder)
    return module, finder.targets, finder.places


def mutate(source: str, mutation: Mutation) -> tuple[str, str]:
    """The mutant's source and a description of the mutation."""
    module, targets, places = analyse(source)
    described = mutation.describe(targets, places)
    if mutation.op == "move" and places[mutation.place] is targets[mutation.target]:
        return source, described  # moving a statement next to itself
    return module.visit(_Mutator(mutation, targets, places)).code, described


def random_mutation(rng: random.Random, source: str) -> Mutation | None:
    _, targets, places = analyse(source)
    if not targets:
        return None
    return Mutation(rng.choice(["delete", "move", "move", "duplicate"]), rng.randrange(len(targets)),
                    rng.randrange(len(places)), rng.random() < 0.5)


def single_mutations(source: str) -> list[Mutation]:
    _, targets, places = analyse(source)
    every = []
    for target in range(len(targets)):
        every.append(Mutation("delete", target))
        for place in range(len(places)):
            for after in (False, True):
                every += [Mutation("move", target, place, after), Mutation("duplicate", target, place, after)]
    return every


def mutants(path: Path) -> list[tuple[str, str]]:
    """(description, source) of the mutants of one fixture."""
    original = path.read_text()
    rng = random.Random(path.name)
    out = []
    for _ in range(PER_FIXTURE):
        source, steps = original, []
        for _ in range(rng.choice([1, 1, 2, 3])):
            mutation = random_mutation(rng, source)
            if mutation is None:
                break
            source, described = mutate(source, mutation)
            steps.append(described)
        out.append(("; ".join(steps), source))
    if EXHAUSTIVE:
        for mutation in single_mutations(original):
            source, described = mutate(original, mutation)
            out.append((described, source))
    return out


def test_the_fixtures_have_statements_of_every_kind() -> None:
    kinds = {kind(s) for path in FIXTURES for s in analyse(path.read_text())[1]}
    assert kinds == {"clear", "step", "backward", "division"}
    assert len(FIXTURES) >= 19


def test_mutations_do_what_they_say() -> None:
    source = "for x in loader:\n    loss = f(x) / k\n    loss.backward()\n    optimizer.step()\n    optimizer.zero_grad()\n"
    _, targets, places = analyse(source)
    assert [kind(t) for t in targets] == ["division", "backward", "step", "clear"]
    assert mutate(source, Mutation("delete", 1))[0] == source.replace("    loss.backward()\n", "")
    moved, described = mutate(source, Mutation("move", 3, 0))
    assert moved == "for x in loader:\n    optimizer.zero_grad()\n    loss = f(x) / k\n    loss.backward()\n    optimizer.step()\n"
    assert described == "move `optimizer.zero_grad()` before `loss = f(x) / k`"
    assert mutate(source, Mutation("duplicate", 2, 2, True))[0] == source.replace(
        "    optimizer.step()\n", "    optimizer.step()\n    optimizer.step()\n")


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_mutant_is_checked_and_fixed_soundly(path: Path) -> None:
    failures = []
    for number, (described, source) in enumerate(mutants(path)):
        unsafe = number % 2 == 1
        try:
            assert_sound(source.encode(), unsafe)
        except Exception as error:  # noqa: BLE001 - collect them all, with the mutation that made them
            failures.append(f"{described} (unsafe={unsafe}): {type(error).__name__}: {str(error)[:400]}")
    assert not failures, "\n".join(failures)
