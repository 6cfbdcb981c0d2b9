"""`gacclint server`: a language server over standard input and output (LSP, with pygls).

It publishes the diagnostics `gacclint check` reports, for a Python file as
it is in the editor (saved or not), when the file is opened, changed and
saved; it offers each finding's fix as a quick fix, a `# noqa: CODE` for the
line as another, and every fix at once as the source action
`source.fixAll.gacclint` (what `gacclint fix` would write, to its fixpoint).

Nothing is linted here: a buffer goes through the same path as a file of
`gacclint check` (gacclint/runner.py's `run_source`: the gates, the analysis,
`# noqa`), with the settings of the file's nearest `[tool.gacclint]`
(gacclint/config.py), looked up again for every run so an edited
pyproject.toml counts at once. Files the settings exclude get no diagnostics.

Initialization options (all optional) add to the settings as the command
line's flags do: `select`, `ignore`, `extend-select` (lists of codes),
`unsafe-fixes` (bool), `config` (a pyproject.toml to use for every file).
"""

from __future__ import annotations

import io
import tokenize
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from gacclint import __version__, runner
from gacclint.config import CliOverrides, ConfigError, SettingsResolver
from gacclint.diagnostics import Diagnostic, FileResult
from gacclint.runner import RunOptions
from gacclint.selection import UnknownCode
from gacclint.source import split_lines

SOURCE = "gacclint"
FIX_ALL = f"{types.CodeActionKind.SourceFixAll.value}.{SOURCE}"  # source.fixAll.gacclint


class GacclintServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__(SOURCE, __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.overrides = CliOverrides()
        self.config: Path | None = None
        # uri -> (document version, result) of the last check, for code actions
        self.results: dict[str, tuple[int | None, FileResult]] = {}

    # -- settings and analysis ------------------------------------------------------

    def configure(self, options: Any) -> None:
        if not isinstance(options, dict):
            return

        def codes(key: str) -> tuple[str, ...]:
            value = options.get(key) or ()
            return tuple(value.split(",")) if isinstance(value, str) else tuple(value)

        select = codes("select")
        unsafe = options.get("unsafe-fixes", options.get("unsafeFixes"))
        self.overrides = CliOverrides(select=select or None, ignore=codes("ignore"),
                                      extend_select=codes("extend-select") or codes("extendSelect"),
                                      unsafe_fixes=unsafe if isinstance(unsafe, bool) else None)
        config = options.get("config")
        self.config = Path(config) if isinstance(config, str) and config else None

    def resolver(self) -> SettingsResolver | None:
        try:
            return SettingsResolver(self.overrides, self.config)
        except (ConfigError, UnknownCode) as error:
            self.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"gacclint: {error}"))
            return None

    def analyse(self, uri: str, mode: str = "check") -> tuple[FileResult | None, str]:
        """The document's result as `check` (or `fix`, unwritten) would give it, and its text."""
        document = self.workspace.get_text_document(uri)
        text = document.source
        path = _path(uri)
        resolver = self.resolver()
        if resolver is None:
            return None, text
        try:
            settings = resolver.for_path(path)
            # A notebook's findings are in cell rows, and its fixes rewrite its JSON: `gacclint check` reads it.
            if settings.is_excluded(path, False) or path.suffix == ".ipynb":
                return FileResult(path), text
            result = runner.run_source(path, _encoded(text), resolver,
                                       RunOptions(mode=mode, write=False, use_cache=False))
        except ConfigError as error:
            self.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"gacclint: {error}"))
            return None, text
        if result.error:
            self.window_log_message(types.LogMessageParams(types.MessageType.Warning,
                                                           f"gacclint: {path}: {result.error}"))
        return result, text

    def publish(self, uri: str) -> None:
        document = self.workspace.get_text_document(uri)
        result, text = self.analyse(uri)
        if result is None:
            return
        self.results[uri] = (document.version, result)
        lines = split_lines(text)
        codec = document.position_codec
        diagnostics = [_lsp_diagnostic(d, lines, codec) for d in result.diagnostics]
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics, version=document.version))


server = GacclintServer()


def _path(uri: str) -> Path:
    fs_path = to_fs_path(uri) if uri.startswith("file:") else None
    return Path(fs_path) if fs_path else Path(uri.rsplit("/", 1)[-1] or "untitled.py")


def _encoded(text: str) -> bytes:
    """The editor's text as the file's bytes: in the encoding its coding declaration names (PEP 263)."""
    data = text.encode("utf-8", "surrogatepass")
    try:
        encoding = tokenize.detect_encoding(io.BytesIO(data).readline)[0]
        return data if encoding in ("utf-8", "utf-8-sig") else text.encode(encoding)
    except (SyntaxError, LookupError, UnicodeError):
        return data


def _position(lines: list[str], row: int, column: int, codec) -> types.Position:
    """gacclint's 1-based row and code-point column -> the client's 0-based position (UTF-16 units by default)."""
    line = lines[row - 1] if 0 < row <= len(lines) else ""
    return types.Position(line=max(row - 1, 0), character=codec.client_num_units(line[:max(column - 1, 0)]))


def _range(lines: list[str], row: int, column: int, end_row: int, end_column: int, codec) -> types.Range:
    return types.Range(_position(lines, row, column, codec), _position(lines, end_row, end_column, codec))


def _lsp_diagnostic(diagnostic: Diagnostic, lines: list[str], codec) -> types.Diagnostic:
    end_row, end_column = diagnostic.end_row, diagnostic.end_column
    if (end_row, end_column) <= (diagnostic.row, diagnostic.column):  # GA001 is a point: mark one character
        end_row, end_column = diagnostic.row, diagnostic.column + 1
    return types.Diagnostic(
        range=_range(lines, diagnostic.row, diagnostic.column, end_row, end_column, codec),
        message=diagnostic.message,
        severity=types.DiagnosticSeverity.Warning if diagnostic.code == "GA002" else types.DiagnosticSeverity.Error,
        code=diagnostic.code,
        code_description=types.CodeDescription(href=diagnostic.url),
        source=SOURCE,
        tags=[types.DiagnosticTag.Unnecessary] if diagnostic.code == "GA002" else None,
    )


# -- document events -----------------------------------------------------------------


@server.feature(types.INITIALIZE)
def _initialize(ls: GacclintServer, params: types.InitializeParams) -> None:
    ls.configure(params.initialization_options)


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def _did_open(ls: GacclintServer, params: types.DidOpenTextDocumentParams) -> None:
    ls.publish(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def _did_change(ls: GacclintServer, params: types.DidChangeTextDocumentParams) -> None:
    ls.publish(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def _did_save(ls: GacclintServer, params: types.DidSaveTextDocumentParams) -> None:
    ls.publish(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def _did_close(ls: GacclintServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.results.pop(params.text_document.uri, None)
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def _did_change_configuration(ls: GacclintServer, params: types.DidChangeConfigurationParams) -> None:
    settings = params.settings
    if isinstance(settings, dict):
        ls.configure(settings.get(SOURCE, settings))
    for uri in list(ls.workspace.text_documents):
        ls.publish(uri)


# -- code actions ------------------------------------------------------------------------


@server.feature(
    types.TEXT_DOCUMENT_CODE_ACTION,
    types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix, FIX_ALL], resolve_provider=False),
)
def _code_action(ls: GacclintServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    uri = params.text_document.uri
    document = ls.workspace.get_text_document(uri)
    wanted = params.context.only
    actions: list[types.CodeAction] = []
    known = ls.results.get(uri)
    if known is None or known[0] != document.version:
        ls.publish(uri)
        known = ls.results.get(uri)
    if known is None:
        return actions
    result = known[1]
    lines = split_lines(document.source)
    codec = document.position_codec
    if _wants(wanted, types.CodeActionKind.QuickFix):
        for diagnostic in result.diagnostics:
            lsp = _lsp_diagnostic(diagnostic, lines, codec)
            if not _overlaps(lsp.range, params.range):
                continue
            fix = diagnostic.fix
            if fix is not None and fix.edits and (fix.applicability == "safe" or result.unsafe_fixes):
                edits = [types.TextEdit(_range(lines, e.row, e.column, e.end_row, e.end_column, codec), e.content)
                         for e in fix.edits]
                actions.append(types.CodeAction(
                    title=f"{diagnostic.code}: {fix.message}" + (" (unsafe)" if fix.applicability == "unsafe" else ""),
                    kind=types.CodeActionKind.QuickFix, diagnostics=[lsp], is_preferred=fix.applicability == "safe",
                    edit=types.WorkspaceEdit(changes={uri: edits})))
            noqa = _noqa_edit(diagnostic, document.source, lines, codec)
            if noqa is not None:
                actions.append(types.CodeAction(
                    title=f"{diagnostic.code}: disable for this line (`# noqa: {diagnostic.code}`)",
                    kind=types.CodeActionKind.QuickFix, diagnostics=[lsp],
                    edit=types.WorkspaceEdit(changes={uri: [noqa]})))
    if _wants(wanted, FIX_ALL) and any(d.fix is not None for d in result.diagnostics):
        fixed = _fix_all(ls, uri)
        if fixed is not None and fixed != document.source:
            whole = types.Range(types.Position(0, 0), types.Position(len(lines), 0))
            actions.append(types.CodeAction(
                title="gacclint: fix all auto-fixable problems", kind=FIX_ALL,
                edit=types.WorkspaceEdit(changes={uri: [types.TextEdit(whole, fixed)]})))
    return actions


def _wants(only: list[str] | None, kind: str) -> bool:
    """Whether the client's `only` filter admits `kind` (a kind admits its sub-kinds: `source` admits ours)."""
    return not only or any(kind == wanted or kind.startswith(f"{wanted}.") for wanted in only)


def _overlaps(a: types.Range, b: types.Range) -> bool:
    start_a, end_a = (a.start.line, a.start.character), (a.end.line, a.end.character)
    start_b, end_b = (b.start.line, b.start.character), (b.end.line, b.end.character)
    return start_a <= end_b and start_b <= end_a


def _fix_all(ls: GacclintServer, uri: str) -> str | None:
    """What `gacclint fix` would write for the buffer: every applicable fix, to the fixpoint."""
    result, text = ls.analyse(uri, mode="fix")
    if result is None or result.error or not result.fixed or result.fixed_source is None:
        return None
    data = _encoded(text)
    encoding = tokenize.detect_encoding(io.BytesIO(data).readline)[0] if data else "utf-8"
    try:
        return result.fixed_source.decode(encoding)
    except (LookupError, UnicodeDecodeError):
        return None


def _noqa_edit(diagnostic: Diagnostic, text: str, lines: list[str], codec) -> types.TextEdit | None:
    """`# noqa: CODE` on the line where it takes effect, as `check --add-noqa` writes it."""
    if diagnostic.code in ("GA001", "GA002"):
        return None
    from gacclint.noqa import add_noqa

    new_text, added = add_noqa(text, [diagnostic])
    if not added:
        return None
    new_lines = split_lines(new_text)
    if len(new_lines) != len(lines):
        return None
    changed = [index for index, (old, new) in enumerate(zip(lines, new_lines)) if old != new]
    if len(changed) != 1:
        return None
    index = changed[0]
    old, new = lines[index].rstrip("\r\n"), new_lines[index].rstrip("\r\n")
    return types.TextEdit(_range(lines, index + 1, 1, index + 1, len(old) + 1, codec), new)


def serve() -> None:
    """Serve on standard input and output until the client says exit."""
    server.start_io()
