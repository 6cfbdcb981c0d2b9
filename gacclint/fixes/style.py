"""The style of inserted code: the file's indentation, the line length.

An inserted statement longer than the line length is wrapped as Black wraps
it: at its last bracket pair, the content on one indented line, or one item a
line with a trailing comma when that is still too long.
"""

from __future__ import annotations

import io
import tokenize

LINE_LENGTH = 88
_OPEN = {"(": ")", "[": "]", "{": "}"}


def _last_bracket_pair(code: str) -> tuple[int, int] | None:
    """Offsets of the opening and closing bracket of the last top-level pair
    whose closing bracket ends the code (but for `:` or a comment)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code + "\n").readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return None
    offsets = [0]
    for line in (code + "\n").splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))

    def offset(position: tuple[int, int]) -> int:
        return offsets[position[0] - 1] + position[1]

    stack: list[int] = []
    pair = None
    for token in tokens:
        if token.type != tokenize.OP:
            if token.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER) and not stack:
                pair = None  # something after the last pair
            continue
        if token.string in _OPEN:
            stack.append(offset(token.start))
        elif token.string in (")", "]", "}"):
            if not stack:
                return None
            start = stack.pop()
            if not stack:
                pair = (start, offset(token.start))
        elif not stack and token.string != ":":
            pair = None
    return pair


def _top_level_items(body: str) -> list[str]:
    """`body` split at its commas outside brackets and strings."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(body + "\n").readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return [body]
    depth, cuts = 0, []
    line_start = [0]
    for line in (body + "\n").splitlines(keepends=True):
        line_start.append(line_start[-1] + len(line))
    for token in tokens:
        if token.type != tokenize.OP:
            continue
        if token.string in _OPEN:
            depth += 1
        elif token.string in (")", "]", "}"):
            depth -= 1
        elif token.string == "," and depth == 0:
            cuts.append(line_start[token.start[0] - 1] + token.start[1])
    items, previous = [], 0
    for cut in cuts:
        items.append(body[previous:cut].strip())
        previous = cut + 1
    last = body[previous:].strip()
    if last:
        items.append(last)
    return items


def _top_level(code: str, wanted: set[str]) -> list[tuple[int, str]]:
    """(offset, token) of the `wanted` tokens of `code` outside brackets."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code + "\n").readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return []
    starts = [0]
    for line in (code + "\n").splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    depth, found = 0, []
    for token in tokens:
        if token.type == tokenize.OP and token.string in _OPEN:
            depth += 1
        elif token.type == tokenize.OP and token.string in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and token.string in wanted and token.type in (tokenize.OP, tokenize.NAME):
            found.append((starts[token.start[0] - 1] + token.start[1], token.string))
    return found


_PRIORITIES = ({"if", "else"}, {"or"}, {"and"}, {"+", "-"}, {"*", "/", "//", "%"})


def _body_lines(body: str, width: int, unit: str, levels: int = 0) -> str:
    """The inside of a bracket pair, one line if it fits, else split as Black
    does at its lowest-priority operator (before a ternary's `if`/`else`, each
    `or`, `and`, `+`/`-`, `*`/`/`), a part still too long split further."""
    if len(unit) + len(body) <= width:
        return f"{unit}{body}\n"
    for level in range(levels, len(_PRIORITIES)):
        cuts = [offset for offset, _ in _top_level(body, _PRIORITIES[level]) if offset > 0]
        if cuts:
            break
    else:
        return f"{unit}{body}\n"
    parts, previous = [], 0
    for cut in cuts:
        parts.append(body[previous:cut].strip())
        previous = cut
    parts.append(body[previous:].strip())
    return "".join(_body_lines(part, width, unit, level + 1) for part in parts if part)


def _wrap_value(target: str, value: str, width: int, unit: str) -> str:
    """`target = value` as Black writes a long right-hand side: in parentheses,
    split before its operators when one line is still too long."""
    return f"{target} = (\n" + _body_lines(value, width, unit) + ")"


_HEADERS = ("if ", "elif ", "while ", "with ")


def _wrap_header(code: str, width: int, unit: str) -> str | None:
    """`if <test>:` (`while`, `with`) with its expression in parentheses over
    several lines, or None when `code` is no such header."""
    keyword = next((k for k in _HEADERS if code.startswith(k)), None)
    if keyword is None or not code.endswith(":"):
        return None
    expression = code[len(keyword):-1].strip()
    pair = _last_bracket_pair(expression)
    if pair is not None and pair[0] == 0 and pair[1] == len(expression) - 1 and expression[0] == "(":
        expression = expression[1:-1].strip()  # already in parentheses: split inside them
    return f"{keyword}(\n" + _body_lines(expression, width, unit) + "):"


def wrap(code: str, width: int, unit: str = "    ") -> str:
    """`code` (one logical line) to fit `width` columns; continuation lines are
    indented by `unit` relative to the first line (which is not indented)."""
    if len(code) <= width or "\n" in code:
        return code
    header = _wrap_header(code, width, unit)
    if header is not None:
        return header
    assignment = _top_level(code, {"="})
    if len(assignment) == 1:
        at = assignment[0][0]
        target, value = code[:at].rstrip(), code[at + 1:].strip()
        pair = _last_bracket_pair(value)
        callee = value[:pair[0]] if pair is not None else ""
        if pair is None or pair[1] != len(value) - 1 or not callee.replace(".", "").replace("_", "").isalnum():
            return _wrap_value(target, value, width, unit)
    pair = _last_bracket_pair(code)
    if pair is None:
        return code
    start, stop = pair
    head, body, tail = code[:start + 1], code[start + 1:stop].strip(), code[stop:]
    if not body:
        return code
    if len(unit) + len(body) <= width:
        return f"{head}\n{unit}{body}\n{tail}"
    items = _top_level_items(body)
    if len(items) < 2:
        return f"{head}\n{unit}{body}\n{tail}"
    return head + "\n" + "".join(_body_lines(item + ",", width, unit) for item in items) + tail

