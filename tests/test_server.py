"""`gacclint server` end to end: a real LSP client (pytest-lsp) starts the
installed `gacclint server` as a subprocess, opens files, receives the
diagnostics `gacclint check` reports and applies the code actions it offers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

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

_SCRIPT = Path(sys.executable).with_name("gacclint")
SERVER = [str(_SCRIPT), "server"] if _SCRIPT.exists() else [sys.executable, "-m", "gacclint", "server"]


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options={"extend-select": ["GA002"]}))
    yield
    await lsp_client.shutdown_session()


async def open_file(client: LanguageClient, path: Path, text: str, version: int = 1) -> list[types.Diagnostic]:
    path.write_text(text)
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=version, text=text)))
    await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return list(client.diagnostics[uri])


async def change(client: LanguageClient, path: Path, text: str, version: int) -> list[types.Diagnostic]:
    uri = path.as_uri()
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
    await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return list(client.diagnostics[uri])


def apply(text: str, edits: list[types.TextEdit]) -> str:
    """A client applying a WorkspaceEdit's text edits (ASCII text: UTF-16 units are characters)."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(position: types.Position) -> int:
        return starts[min(position.line, len(lines))] + position.character

    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[:offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end):]
    return text


def check_json(path: Path) -> list[dict]:
    """What the command line reports for the same file."""
    completed = subprocess.run([*SERVER[:-1], "check", "--no-cache", "--output-format", "json",
                                "--extend-select", "GA002", str(path)],
                               capture_output=True, text=True, check=False)
    return json.loads(completed.stdout)


@pytest.mark.asyncio
async def test_a_session_reports_the_findings_and_applies_quick_fix_and_fix_all(client: LanguageClient,
                                                                                tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    diagnostics = await open_file(client, path, BUGGY)
    # The same findings as `gacclint check`, at the same places (LSP positions are 0-based).
    reported = check_json(path)
    assert [(d.code, d.message, d.range.start.line + 1, d.range.start.character + 1, d.range.end.line + 1,
             d.range.end.character + 1) for d in diagnostics] == [
        (f["code"], f["message"], f["location"]["row"], f["location"]["column"], f["end_location"]["row"],
         f["end_location"]["column"]) for f in reported]
    [ga202] = diagnostics
    assert (ga202.code, ga202.source, ga202.severity) == ("GA202", "gacclint", types.DiagnosticSeverity.Error)
    assert ga202.range == types.Range(types.Position(3, 7), types.Position(3, 23))
    assert ga202.code_description.href.endswith("#ga202-dropped-final-window")

    uri = path.as_uri()
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=ga202.range,
        context=types.CodeActionContext(diagnostics=[ga202])))
    assert [action.title for action in actions] == [
        f"GA202: {reported[0]['fix']['message']}",
        "GA202: disable for this line (`# noqa: GA202`)",
        "gacclint: fix all auto-fixable problems"]
    quick = actions[0]
    assert quick.kind == types.CodeActionKind.QuickFix and quick.diagnostics[0].code == "GA202"
    quick_fixed = apply(BUGGY, quick.edit.changes[uri])
    assert quick_fixed != BUGGY
    # The editor applies it and sends the change: the diagnostics follow the buffer, unsaved.
    left = await change(client, path, quick_fixed, version=2)
    assert "GA202" not in [d.code for d in left]

    # Fix all: what `gacclint fix` writes, as one edit of the whole buffer.
    await change(client, path, BUGGY, version=3)
    [fix_all] = (await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=types.Range(types.Position(0, 0),
                                                                                types.Position(0, 0)),
        context=types.CodeActionContext(diagnostics=[], only=["source.fixAll.gacclint"]))))
    assert fix_all.kind == "source.fixAll.gacclint"
    assert apply(BUGGY, fix_all.edit.changes[uri]) == FIXED
    assert await change(client, path, FIXED, version=4) == []


@pytest.mark.asyncio
async def test_noqa_settings_and_the_noqa_action(client: LanguageClient, tmp_path: Path) -> None:
    # `# noqa` is honoured, and a stale one is GA002 (selected by the initialization options).
    suppressed = BUGGY.replace("if (i + 1) % k == 0:", "if (i + 1) % k == 0:  # noqa: GA202")
    assert await open_file(client, tmp_path / "suppressed.py", suppressed) == []
    stale = FIXED.replace("optimizer.step()", "optimizer.step()  # noqa: GA101")
    [unused] = await open_file(client, tmp_path / "stale.py", stale)
    assert (unused.code, unused.severity) == ("GA002", types.DiagnosticSeverity.Warning)
    assert list(unused.tags) == [types.DiagnosticTag.Unnecessary]

    # The nearest [tool.gacclint] decides, as for `gacclint check`.
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.gacclint]\nignore = ["GA202"]\n')
    assert await open_file(client, project / "train.py", BUGGY) == []

    # The noqa quick fix writes what `check --add-noqa` writes.
    path = tmp_path / "train.py"
    [ga202] = await open_file(client, path, BUGGY)
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=path.as_uri()), range=ga202.range,
        context=types.CodeActionContext(diagnostics=[ga202], only=[types.CodeActionKind.QuickFix])))
    [noqa] = [action for action in actions if "noqa" in action.title]
    assert apply(BUGGY, noqa.edit.changes[path.as_uri()]) == suppressed
    assert all(action.kind == types.CodeActionKind.QuickFix for action in actions)


@pytest.mark.asyncio
async def test_a_syntax_error_is_ga001(client: LanguageClient, tmp_path: Path) -> None:
    broken = BUGGY.replace("loss_fn(model(x), y)", "loss_fn(model(x), y")
    [syntax] = await open_file(client, tmp_path / "broken.py", broken)
    assert syntax.code == "GA001" and syntax.message.startswith("SyntaxError")
    # The user fixes the typo and saves: diagnostics on the change, and again on the save.
    path = tmp_path / "broken.py"
    assert [d.code for d in await change(client, path, BUGGY, version=2)] == ["GA202"]
    path.write_text(BUGGY)
    client.text_document_did_save(types.DidSaveTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=path.as_uri())))
    await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert [d.code for d in client.diagnostics[path.as_uri()]] == ["GA202"]
