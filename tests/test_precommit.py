"""The pre-commit hooks as a user gets them: real `pre-commit` clones this
repository at a commit, installs it into a fresh environment (pip, from PyPI)
and runs the hooks of `.pre-commit-hooks.yaml` on a throwaway git repository
whose `.pre-commit-config.yaml` names them.

Two things keep `pre-commit try-repo` out of it. It commits only the tracked
files of a working tree with changes (`git add -u`): a new, uncommitted hook
file or module would be missing. And it installs into a temporary store on
every call, ignoring PRE_COMMIT_HOME (about 10 s each). So the hooks come from
a one-commit copy of the working tree (tracked and untracked files, less what
.gitignore ignores: what is tested is what is on disk), and every test shares
one PRE_COMMIT_HOME: the installation happens once per module (and per xdist
worker).

Deselect with `-m "not precommit"` (they need the network to install).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.precommit

ROOT = Path(__file__).resolve().parent.parent

# GA201: the loss is not divided by accumulation_steps; GA202: no end-of-data
# clause, so the last micro-batches of each pass are never stepped.
BUGGY = """\
def train(model, loader, optimizer, loss_fn, accumulation_steps):
    model.train()
    for i, (inputs, targets) in enumerate(loader):
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        if (i + 1) % accumulation_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
"""
CLEAN = """\
def train(model, loader, optimizer, loss_fn, accumulation_steps):
    model.train()
    for i, (inputs, targets) in enumerate(loader):
        window = min(accumulation_steps, len(loader) - (i // accumulation_steps) * accumulation_steps)
        loss = loss_fn(model(inputs), targets) / window
        loss.backward()
        if (i + 1) % accumulation_steps == 0 or (i + 1) == len(loader):
            optimizer.step()
            optimizer.zero_grad()
"""


def _notebook(code: str) -> str:
    cell = {"cell_type": "code", "execution_count": None, "id": "train", "metadata": {}, "outputs": [],
            "source": code.splitlines(keepends=True)}
    return json.dumps({"cells": [cell], "metadata": {"language_info": {"name": "python"}},
                       "nbformat": 4, "nbformat_minor": 5}, indent=1) + "\n"


def _environment(**extra: str) -> dict[str, str]:
    """The caller's environment without GIT_* variables (set when pytest runs
    inside a git hook, they would point git at the caller's repository), with
    an identity for the commits made here."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("GIT_")}
    identity = {"GIT_AUTHOR_NAME": "gacclint tests", "GIT_AUTHOR_EMAIL": "tests@gacclint.invalid"}
    identity.update(GIT_COMMITTER_NAME=identity["GIT_AUTHOR_NAME"], GIT_COMMITTER_EMAIL=identity["GIT_AUTHOR_EMAIL"])
    return {**environment, **identity, **extra}


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=_environment(), check=True, capture_output=True,
                          text=True).stdout


def _commit_all(repository: Path) -> None:
    _git("add", "--all", cwd=repository)
    _git("commit", "--quiet", "--no-verify", "--no-gpg-sign", "--message", "snapshot", cwd=repository)


@dataclass
class PreCommit:
    hook_repository: Path
    revision: str
    home: Path

    def configure(self, project: Path) -> None:
        hooks = "".join(f"      - id: {hook_id}\n" for hook_id in ("gacclint", "gacclint-fix"))
        (project / ".pre-commit-config.yaml").write_text(
            f"repos:\n  - repo: {self.hook_repository}\n    rev: {self.revision}\n    hooks:\n{hooks}")

    def run(self, hook_id: str, *files: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "pre_commit", "run", hook_id, "--color", "never", "--files", *files]
        return subprocess.run(command, cwd=cwd, env=_environment(PRE_COMMIT_HOME=str(self.home)),
                              capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def pre_commit(tmp_path_factory: pytest.TempPathFactory) -> PreCommit:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: there is no repository to take the hooks from")
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).split("\0")
    snapshot = tmp_path_factory.mktemp("hook-repository")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is still listed
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, snapshot / name)
    _git("init", "--quiet", cwd=snapshot)
    _commit_all(snapshot)
    revision = _git("rev-parse", "HEAD", cwd=snapshot).strip()
    return PreCommit(snapshot, revision, tmp_path_factory.mktemp("pre-commit-home"))


@pytest.fixture
def project(tmp_path: Path, pre_commit: PreCommit) -> Path:
    """A user's repository with the hooks configured, a buggy script, a clean
    one and a buggy notebook, committed: pre-commit sees a hook's rewrite as a
    git diff."""
    pre_commit.configure(tmp_path)
    (tmp_path / "train.py").write_text(BUGGY)
    (tmp_path / "clean.py").write_text(CLEAN)
    (tmp_path / "train.ipynb").write_text(_notebook(BUGGY))
    _git("init", "--quiet", cwd=tmp_path)
    _commit_all(tmp_path)
    return tmp_path


def test_check_hook_fails_and_names_the_findings(pre_commit: PreCommit, project: Path) -> None:
    result = pre_commit.run("gacclint", "train.py", cwd=project)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Failed" in output
    assert "train.py:5:9: GA201" in output
    assert "train.py:6:12: GA202" in output
    assert (project / "train.py").read_text() == BUGGY


def test_check_hook_passes_a_clean_file(pre_commit: PreCommit, project: Path) -> None:
    result = pre_commit.run("gacclint", "clean.py", cwd=project)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Passed" in output


def test_check_hook_honours_the_projects_excludes(pre_commit: PreCommit, project: Path) -> None:
    # pre-commit names the staged files one by one; --force-exclude in the
    # hook's entry keeps the project's excludes in force for them.
    (project / "pyproject.toml").write_text('[tool.gacclint]\nextend-exclude = ["train.py"]\n')
    result = pre_commit.run("gacclint", "train.py", cwd=project)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "GA201" not in output


def test_check_hook_reads_notebooks(pre_commit: PreCommit, project: Path) -> None:
    result = pre_commit.run("gacclint", "train.ipynb", cwd=project)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "train.ipynb" in output and "GA201" in output and "GA202" in output


def test_fix_hook_rewrites_the_file_and_fails(pre_commit: PreCommit, project: Path) -> None:
    result = pre_commit.run("gacclint-fix", "train.py", cwd=project)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "files were modified by this hook" in output
    assert (project / "train.py").read_text() != BUGGY
    # The next commit attempt, with the fixed file, passes both hooks.
    for hook_id in ("gacclint-fix", "gacclint"):
        again = pre_commit.run(hook_id, "train.py", cwd=project)
        assert again.returncode == 0, again.stdout + again.stderr


def test_fix_hook_leaves_a_clean_file_alone(pre_commit: PreCommit, project: Path) -> None:
    result = pre_commit.run("gacclint-fix", "clean.py", cwd=project)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Passed" in output
    assert (project / "clean.py").read_text() == CLEAN
