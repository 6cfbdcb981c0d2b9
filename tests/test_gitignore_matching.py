"""A .gitignore without negations is answered by one regex of all its patterns
(gacclint/discover.py); its verdicts must be pathspec's, path by path."""

from __future__ import annotations

import pathspec
from hypothesis import given, settings
from hypothesis import strategies as st

from gacclint.discover import _GitIgnore

# The kinds of line a repository's .gitignore holds: names, globs, anchored paths,
# folder-only patterns, `**`, character classes, escapes, comments and blank lines.
LINES = ["__pycache__/", "*.py[cod]", "*$py.class", "*.so", ".Python", "build/", "/dist/", "*.egg-info/",
         ".eggs", "wandb/", "outputs/**/ckpt", "**/logs", "data/*.npy", "!keep.npy", "\\#notes", "# comment",
         "", "docs/_build", "*.ipynb_checkpoints", "runs/*/events*", "[Bb]in/", "a/**/b", "*~", ".env"]
SEGMENTS = ["src", "build", "dist", "logs", "data", "a", "b", "x", "runs", "ckpt", "wandb", "outputs",
            "__pycache__", "m.pyc", "t.py", "keep.npy", "w.npy", "events.1", "Bin", "bin", "#notes", "f~", ".env"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(LINES), min_size=1, max_size=12),
       st.lists(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4), min_size=1, max_size=10),
       st.booleans())
def test_verdicts_are_pathspecs(lines: list[str], paths: list[list[str]], folders: bool) -> None:
    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    ignore = _GitIgnore(spec)
    for parts in paths:
        relative = "/".join(parts) + ("/" if folders else "")
        assert ignore.verdict(relative) == spec.check_file(relative).include, (lines, relative)


def test_negations_are_left_to_pathspec() -> None:
    ignore = _GitIgnore(pathspec.GitIgnoreSpec.from_lines(["*.npy", "!keep.npy"]))
    assert ignore.any_matches is None
    assert ignore.verdict("w.npy") is True
    assert ignore.verdict("keep.npy") is False
