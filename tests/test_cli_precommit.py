"""The README's local pre-commit hook, exactly as written there, run by the real
pre-commit on a fresh git repository with the installed `gacclint` on PATH.
Nothing is cloned or downloaded (tests/test_precommit.py covers the
repository's own hooks, installed from PyPI)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PRE_COMMIT = shutil.which("pre-commit", path=str(BIN)) or shutil.which("pre-commit")

BUGGY = """\
for i, (x, y) in enumerate(loader):
    loss = loss_fn(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0:
        optimizer.step()
        optimizer.zero_grad()
"""
FIXED = """\
for i, (x, y) in enumerate(loader):
    window = min(k, len(loader) - (i // k) * k)
    loss = loss_fn(model(x), y) / window
    loss.backward()
    if (i + 1) % k == 0 or (i + 1) == len(loader):
        optimizer.step()
        optimizer.zero_grad()
"""


def readme_local_hook() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- precommit:local -->\n```yaml\n(.*?)```\n<!-- /precommit:local -->", readme, re.S)
    assert block, "the README's local pre-commit snippet is missing"
    return block.group(1)


@pytest.mark.skipif(PRE_COMMIT is None or shutil.which("git") is None, reason="needs pre-commit and git")
def test_the_readme_local_hook_works_as_written(tmp_path: Path) -> None:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("GIT_")}
    environment.update(PATH=f"{BIN}{os.pathsep}{environment.get('PATH', '')}", PRE_COMMIT_HOME=str(tmp_path / "home"),
                       GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid", GIT_COMMITTER_NAME="t",
                       GIT_COMMITTER_EMAIL="t@t.invalid", GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    repository = tmp_path / "repository"
    repository.mkdir()

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, cwd=repository, env=environment, capture_output=True, text=True,
                              timeout=120, check=False)

    assert run("git", "init", "-q").returncode == 0
    (repository / ".pre-commit-config.yaml").write_text(readme_local_hook())
    (repository / "train.py").write_text(BUGGY)
    run("git", "add", ".")
    failed = run(PRE_COMMIT, "run", "--all-files")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "gacclint" in failed.stdout and "Failed" in failed.stdout
    assert "train.py:4:8: GA202" in failed.stdout
    (repository / "train.py").write_text(FIXED)
    run("git", "add", ".")
    passed = run(PRE_COMMIT, "run", "--all-files")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Passed" in passed.stdout
