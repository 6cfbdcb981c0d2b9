"""What a fix may move: whole statements, never a line out of its block.

A clear written as a loop over the parameters (`for p in model.parameters():
p.grad = None`) is one statement for a fix: moving only `p.grad = None`
would leave `pass` behind and clear just the last parameter after the step.
"""

from __future__ import annotations

import libcst as cst

from gacclint.loops.tree import Tree

_LOOPS = (cst.For, cst.While)


def _path(tree: Tree, root: cst.CSTNode, target: cst.CSTNode) -> list[cst.CSTNode] | None:
    """The nodes from `root` down to `target` (both included), or None."""
    stack: list[tuple[cst.CSTNode, int]] = [(root, 0)]
    path: list[cst.CSTNode] = []
    while stack:
        node, depth = stack.pop()
        del path[depth:]
        path.append(node)
        if node is target:
            return path
        stack.extend((child, depth + 1) for child in reversed(tree.children(node)))
    return None


def whole_statement(tree: Tree, loop: cst.CSTNode, statement: cst.BaseStatement,
                    window: cst.CSTNode | None = None, *, mentions: str = "grad") -> cst.BaseStatement | None:
    """The statement a fix moves or removes for `statement` of the training loop
    `loop` (its micro-step `window` loop, if any): `statement` itself, or the
    outermost loop nested in the training loop that holds it, when everything
    in that loop is part of the same job (each simple statement mentions
    `mentions`: `for p in params: if p.grad is not None: p.grad = None`).
    None when `statement` sits in a nested loop that does other work too."""
    path = _path(tree, loop, statement)
    if path is None:
        return statement
    outer = next((node for node in path[1:-1] if isinstance(node, _LOOPS) and node is not window), None)
    if outer is None:
        return statement
    for node in tree.walk(outer):
        if isinstance(node, cst.SimpleStatementLine) and mentions not in cst.Module([]).code_for_node(node):
            return None
    if isinstance(outer, (cst.For, cst.While)) and outer.orelse is not None:
        return None
    return outer  # type: ignore[return-value]


def guarding_if(tree: Tree, loop: cst.CSTNode, statement: cst.BaseStatement) -> cst.If | None:
    """The `if` of the training loop `loop` whose body is `statement` alone, with no `else`:
    what a fix removes to move that statement elsewhere."""
    for node in tree.find(loop, cst.If):
        body = node.body.body  # type: ignore[attr-defined]
        if len(body) == 1 and body[0] is statement and node.orelse is None:  # type: ignore[attr-defined]
            return node  # type: ignore[return-value]
    return None


def guarded_body_reads(tree: Tree, loop: cst.CSTNode, test: cst.CSTNode, name: str) -> bool:
    """Some `if` of the training loop `loop` tested by (or on) `test` reads `name` in its body:
    code under the boundary that sees the counter (`if i > 3: grads[-2]`)."""
    for node in tree.find(loop, cst.If):
        if tree.contains(node.test, test) and name in tree.names_read(node.body):  # type: ignore[attr-defined]
            return True
    return False


def _normal(text: str) -> str:
    return "".join(text.split())


def bound_before(loop, statement: cst.CSTNode, value: str) -> str | None:
    """A name the training loop binds to `value` (compared without spaces) in a
    statement that runs before `statement` on every micro-batch: earlier in
    the same block, or earlier in the loop body's own block."""
    body = getattr(loop, "body", ())
    target = next((item for item in body if item.statement is statement), None)
    if target is None:
        return None
    top = loop.node.body.body if isinstance(loop.node.body, cst.IndentedBlock) else None
    wanted = _normal(value)
    for item in body:
        if item.position >= target.position:
            break
        if item.block is not target.block and item.block is not top:
            continue
        line = item.statement
        if not (isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1):
            continue
        small = line.body[0]
        if (isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name)
                and _normal(cst.Module([]).code_for_node(small.value)) == wanted):
            return small.targets[0].target.value
    return None
