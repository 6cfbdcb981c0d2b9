"""The `gacclint` command: check, fix, rule, verify, server.

Exit codes, as Ruff's: 0 clean, 1 findings (or a diff with `--diff`, or a fix
with `--exit-non-zero-on-fix`), 2 an error (a file that could not be read or
decoded, a missing path, bad settings, bad usage, an internal error), 130
interrupted. `verify`: 0 verified, 1 gradient mismatch, 2 could not run.

`--watch` polls every GACCLINT_WATCH_INTERVAL seconds (0.5); tests stop it
after GACCLINT_WATCH_MAX_RUNS runs.

`check` and `fix` never import or run the code they read; only `verify` and
`fix --verify` run it, and they load PyTorch only then.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable, NoReturn

import click

from gacclint import __version__, runner
from gacclint.config import CliOverrides, ConfigError, SettingsResolver
from gacclint.diagnostics import FileResult
from gacclint.formats import FORMATS, render, statistics
from gacclint.runner import RunOptions
from gacclint.selection import UnknownCode, parse_codes

if TYPE_CHECKING:
    from gacclint.runtime.report import VerifyReport

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

_debug = click.option("--debug", is_flag=True, help="Show a traceback on internal errors.")

# `--watch`: seconds between two looks at the files, and (for tests) how many runs before it stops.
WATCH_INTERVAL_ENV, WATCH_RUNS_ENV = "GACCLINT_WATCH_INTERVAL", "GACCLINT_WATCH_MAX_RUNS"


def _codes(text: str | None) -> tuple[str, ...]:
    return parse_codes(text) if text else ()


def _linting_options(function: Callable) -> Callable:
    """The options `check` and `fix` share, as in Ruff."""
    options = [
        click.argument("paths", nargs=-1, type=click.Path(path_type=Path)),
        click.option("--select", metavar="CODES",
                     help="Comma-separated codes or prefixes to enable, replacing the configured selection."),
        click.option("--ignore", metavar="CODES", help="Comma-separated codes or prefixes to disable."),
        click.option("--extend-select", metavar="CODES", help="Codes or prefixes to enable on top of the selection."),
        click.option("--exclude", metavar="PATTERNS",
                     help="Comma-separated gitignore-style patterns to exclude, replacing the defaults."),
        click.option("--extend-exclude", metavar="PATTERNS", help="Patterns to exclude on top of the defaults."),
        click.option("--force-exclude", is_flag=True,
                     help="Apply the excludes to paths named on the command line too (for pre-commit)."),
        click.option("--config", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
                     help="Use this pyproject.toml instead of the nearest one to each file."),
        click.option("--unsafe-fixes", is_flag=True, default=None, help="Also apply (fix) or count (check) unsafe fixes."),
        click.option("--output-format", type=click.Choice(FORMATS), default="full", show_default=True),
        click.option("-o", "--output-file", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
                     help="Write the report to FILE instead of standard output."),
        click.option("--stdin-filename", metavar="PATH",
                     help="Read the source from standard input (PATH `-`, or no PATH), checked as if it were the "
                          "file PATH (its settings, its notebook format); with fixes, the fixed source goes to "
                          "standard output and the findings left to standard error."),
        click.option("--show-fixes", is_flag=True, help="Show the fixes applied to each file."),
        click.option("--statistics", is_flag=True,
                     help="Print counts per code instead of the findings (JSON with --output-format json).")
        ,
        click.option("--show-files", is_flag=True, help="List the files that would be checked, and stop."),
        click.option("--show-settings", is_flag=True,
                     help="Show the settings that apply to the first file that would be checked, and stop."),
        click.option("-w", "--watch", is_flag=True,
                     help="Run again whenever a checked file (or a pyproject.toml here) changes; Ctrl-C stops."),
        click.option("-q", "--quiet", is_flag=True, help="Print the findings and nothing else."),
        click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
                     help="Colour the full and concise formats (auto: when stdout is a terminal and NO_COLOR is unset)."),
        click.option("--exit-zero", is_flag=True, help="Exit 0 even when findings remain (errors still exit 2)."),
        click.option("--exit-non-zero-on-fix", is_flag=True,
                     help="Exit 1 when something was fixed, even if nothing remains."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the result cache (.gacclint_cache/)."),
        _debug,
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _resolver(select, ignore, extend_select, exclude, extend_exclude, unsafe_fixes, config) -> SettingsResolver:
    """Raises ConfigError (a bad configuration is one line and exit 2, before any file is read)."""
    try:
        overrides = CliOverrides(
            select=_codes(select) or None if select is not None else None,
            ignore=_codes(ignore),
            extend_select=_codes(extend_select),
            exclude=tuple(p.strip() for p in exclude.split(",") if p.strip()) if exclude is not None else None,
            extend_exclude=tuple(p.strip() for p in (extend_exclude or "").split(",") if p.strip()),
            unsafe_fixes=unsafe_fixes,
        )
        resolver = SettingsResolver(overrides, config)
        resolver.for_path(Path.cwd())
        return resolver
    except UnknownCode as error:
        raise click.BadParameter(str(error), param_hint="'--select' / '--ignore' / '--extend-select'") from None


def _use_color(choice: str, output_file: Path | None = None) -> bool:
    if choice != "auto":
        return choice == "always"
    return output_file is None and sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _interrupted() -> NoReturn:
    """Ctrl-C: stop now, worker processes included, and exit 130 as a shell expects."""
    if "multiprocessing" in sys.modules:
        import multiprocessing

        for child in multiprocessing.active_children():
            child.kill()
            child.join(5)  # reaped: no zombie left behind
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    # Not sys.exit: the analysis thread and the worker pool would be waited for.
    os._exit(EXIT_INTERRUPTED)


def _guarded(debug: bool, action: Callable[[], int]) -> int:
    """Internal errors become one line and exit 2; `--debug` shows the traceback
    (and makes a file's internal error stop the run instead of skipping the file)."""
    runner.DEBUG = debug
    try:
        return action()
    except click.ClickException:
        raise
    except KeyboardInterrupt:
        _interrupted()
    except ConfigError as error:  # a pyproject.toml met on the way to a file
        click.echo(f"gacclint: error: {error}", err=True)
        return EXIT_ERROR
    except Exception as error:  # noqa: BLE001 - the last line of defence for the user
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(f"gacclint: internal error: {type(error).__name__}: {error}", err=True)
        return EXIT_ERROR


def _report_errors(results: list[FileResult]) -> None:
    for result in results:
        if result.error:
            click.echo(f"gacclint: {result.path}: {result.error}", err=True)
        for dropped in result.dropped:
            click.echo(f"gacclint: {result.path}:{dropped}", err=True)


class _Output:
    """Where the report goes: standard output, or `--output-file` (written at the end of each run)."""

    def __init__(self, path: Path | None, color: bool) -> None:
        self.path, self.color, self.parts = path, color, []

    def write(self, text: str) -> None:
        if not text:
            return
        if self.path is None:
            # click.echo strips ANSI codes when stdout is no terminal unless told: `--color always` means always.
            click.echo(text, nl=False, color=self.color)
        else:
            self.parts.append(text)

    def close(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("".join(self.parts), encoding="utf-8")
            self.parts = []


def _report_text(results: list[FileResult], o: SimpleNamespace, use_color: bool,
                 sources: dict[Path, bytes] | None = None) -> str:
    unsafe = bool(o.unsafe_fixes)
    if o.statistics:
        return statistics(results, unsafe_fixes=unsafe, output_format=o.output_format)
    text = render(results, o.output_format, color=use_color, show_fixes=o.show_fixes, unsafe_fixes=unsafe,
                  sources=sources)
    if o.quiet and o.output_format in ("full", "concise"):
        # Only the findings: the summary is everything after the last finding's block.
        text = "\n".join(line for line in text.splitlines() if not _is_summary(line)) + "\n"
        text = "" if text == "\n" else text
    return text


def _is_summary(line: str) -> bool:
    return (line.startswith(("Found ", "All checks passed!", "Fixed ", "No problems found"))
            or "hidden fix" in line or line.endswith("(see the errors above).")) and ": " not in line


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


class _Main(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # click would print "Aborted!" and exit 1
            _interrupted()


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gacclint")
def main() -> None:
    """Find and fix gradient-accumulation bugs in PyTorch training loops.

    check, fix, rule and server read code; they never import or run it. Only
    verify (and fix --verify) runs the code, to prove its gradients.

    Exit codes (check, fix): 0 nothing found, 1 findings, 2 an error (a file
    that cannot be read or decoded, a missing path, bad settings, bad usage),
    130 interrupted.
    """


@main.command()
@_linting_options
@click.option("--fix", "apply_fixes", is_flag=True, help="Apply the fixes, as `gacclint fix` does.")
@click.option("--diff", is_flag=True, help="Print a unified diff of the fixes and write nothing (implies --fix).")
@click.option("--add-noqa", is_flag=True, help="Write a `# noqa: CODE` comment on every line with a finding.")
def check(paths: tuple[Path, ...], apply_fixes: bool, diff: bool, add_noqa: bool, **options) -> None:
    """Report problems in the training loops under PATHS (default: .).

    Exit codes: 0 nothing found, 1 findings, 2 an error (unreadable or
    undecodable file, missing path, bad settings), 130 interrupted.
    """
    if add_noqa and (apply_fixes or diff):
        raise click.BadParameter("cannot be combined with --fix or --diff", param_hint="'--add-noqa'")
    mode = "fix" if apply_fixes or diff else "add-noqa" if add_noqa else "check"
    _lint(paths, SimpleNamespace(**options), mode, diff=diff)


@main.command()
@_linting_options
@click.option("--diff", is_flag=True, help="Print a unified diff of the fixes and write nothing.")
@click.option("--verify", "verify_fixed", is_flag=True,
              help="Then RUN each fixed file (this executes it, with PyTorch) and check that its gradients equal "
                   "the large-batch ones, as `gacclint verify` does; with --diff, the fixed text is run unwritten.")
@click.option("--verify-steps", type=click.IntRange(min=1), metavar="N",
              help="With --verify: stop each run after N optimizer steps.")
def fix(paths: tuple[Path, ...], diff: bool, verify_fixed: bool, verify_steps: int | None, **options) -> None:
    """Apply fixes in place under PATHS (default: .), then report what remains.

    Exit codes: 0 nothing remains, 1 findings remain (with --diff: also a diff;
    with --exit-non-zero-on-fix: also a fix), 2 an error, 130 interrupted.
    """
    if verify_steps is not None and not verify_fixed:
        raise click.BadParameter("needs --verify", param_hint="'--verify-steps'")
    _lint(paths, SimpleNamespace(**options), "fix", diff=diff, verify_fixed=verify_fixed, verify_steps=verify_steps)


def _lint(paths: tuple[Path, ...], o: SimpleNamespace, mode: str, *, diff: bool = False,
          verify_fixed: bool = False, verify_steps: int | None = None) -> None:
    """check, check --fix, check --add-noqa and fix: one run (or, with --watch, one per change)."""
    stdin = paths == (Path("-"),) or (not paths and o.stdin_filename is not None)
    if Path("-") in paths and not stdin:
        raise click.BadParameter("`-` (standard input) must be the only path", param_hint="PATHS")
    if stdin and (o.watch or mode == "add-noqa" or verify_fixed):
        raise click.BadParameter("cannot read standard input with --watch, --add-noqa or --verify",
                                 param_hint="'--stdin-filename'")

    def resolver() -> SettingsResolver:
        return _resolver(o.select, o.ignore, o.extend_select, o.exclude, o.extend_exclude, o.unsafe_fixes, o.config)

    try:
        settings_resolver = resolver()
    except ConfigError as error:
        click.echo(f"gacclint: error: {error}", err=True)
        sys.exit(EXIT_ERROR)
    targets = [Path(o.stdin_filename or "-")] if stdin else list(paths) or [Path(".")]
    if o.show_files or o.show_settings:
        sys.exit(_guarded(o.debug, lambda: _show(targets, settings_resolver, o)))
    if stdin:
        sys.exit(_guarded(o.debug, lambda: _lint_stdin(Path(o.stdin_filename or "-"), settings_resolver, o, mode,
                                                       diff)))

    def once(current: SettingsResolver) -> int:
        return _lint_files(targets, current, o, mode, diff, verify_fixed, verify_steps)

    if o.watch:
        sys.exit(_guarded(o.debug, lambda: _watch(targets, resolver, once, o)))
    sys.exit(_guarded(o.debug, lambda: once(settings_resolver)))


def _run_options(o: SimpleNamespace, mode: str, diff: bool) -> RunOptions:
    return RunOptions(mode=mode, unsafe=o.unsafe_fixes, write=not diff, diff=diff, force_exclude=o.force_exclude,
                      use_cache=mode == "check" and not o.no_cache, progress=not o.quiet and not o.watch)


def _lint_files(targets: list[Path], resolver: SettingsResolver, o: SimpleNamespace, mode: str, diff: bool,
                verify_fixed: bool, verify_steps: int | None) -> int:
    use_color = _use_color(o.color, o.output_file)
    output = _Output(o.output_file, use_color)
    results = runner.run(targets, resolver, _run_options(o, mode, diff))
    _report_errors(results)
    errors = any(_unchecked(r) for r in results)
    findings = any(r.diagnostics for r in results)
    if not results:
        click.echo("warning: No Python files found under the given path(s)", err=True)
    fixed = sum(r.fixed for r in results)
    changed = [r for r in results if r.fixed]
    if mode == "add-noqa":
        added = sum(r.noqa_added for r in results)
        click.echo(f"Added {_plural(added, 'noqa directive')}.", err=True)
    if diff:
        for result in changed:
            output.write(result.diff or "")
        if not o.quiet:
            click.echo(f"Would fix {_plural(fixed, 'problem')} in {_plural(len(changed), 'file')}.", err=True)
            remaining = sum(len(r.diagnostics) for r in results)
            if remaining:
                click.echo(f"{_plural(remaining, 'problem')} would remain (no fix that this run applies; "
                           "`gacclint check` shows them).", err=True)
        output.close()
        mismatch = verify_fixed and _verify_fixed(changed, verify_steps)
        if errors:
            return EXIT_ERROR
        # Ruff's `--diff`: 1 while anything would change or findings it cannot fix remain.
        return EXIT_FINDINGS if (changed or findings or mismatch) and not o.exit_zero else EXIT_CLEAN
    if mode == "fix" and fixed and not o.quiet and not o.statistics and o.output_format in ("full", "concise"):
        output.write(f"Fixed {_plural(fixed, 'problem')} in {_plural(len(changed), 'file')}.\n")
    if results or o.output_format not in ("full", "concise") or o.statistics:
        output.write(_report_text(results, o, use_color))
    output.close()
    mismatch = verify_fixed and _verify_fixed(changed, verify_steps)
    if errors:
        return EXIT_ERROR
    if o.exit_non_zero_on_fix and fixed:
        return EXIT_FINDINGS
    return EXIT_FINDINGS if (findings or mismatch) and not o.exit_zero else EXIT_CLEAN


def _lint_stdin(path: Path, resolver: SettingsResolver, o: SimpleNamespace, mode: str, diff: bool) -> int:
    """The source on standard input, as the file `path`. Check: the report on
    standard output. Fix: the fixed source on standard output (the source
    itself when nothing changed), the findings left on standard error."""
    source = sys.stdin.buffer.read()
    fixing = mode == "fix" and not diff
    if o.force_exclude and resolver.for_path(path).is_excluded(path, False):
        if fixing:
            sys.stdout.buffer.write(source)
        return EXIT_CLEAN
    problem = _unreadable(source)
    if problem is not None:
        result = FileResult(path, error=problem)
    else:
        result = runner.run_source(path, source, resolver, _run_options(o, mode, diff))
    _report_errors([result])
    if fixing:
        fixed = source
        if result.fixed and result.fixed_source is not None:
            fixed = result.fixed_source
            if path.suffix == ".ipynb":
                from gacclint.notebook import read_notebook

                fixed = read_notebook(source).with_program(result.fixed_source)
        sys.stdout.buffer.write(fixed)
        sys.stdout.flush()
        report = _report_text([result], o, use_color=False, sources={path: fixed})
        if o.output_file is not None:
            output = _Output(o.output_file, False)
            output.write(report)
            output.close()
        else:
            click.echo(report, nl=False, err=True)
    elif diff:
        output = _Output(o.output_file, False)
        output.write(result.diff or "")
        output.close()
        if _unchecked(result):
            return EXIT_ERROR
        return EXIT_FINDINGS if (result.fixed or result.diagnostics) and not o.exit_zero else EXIT_CLEAN
    else:
        use_color = _use_color(o.color, o.output_file)
        output = _Output(o.output_file, use_color)
        output.write(_report_text([result], o, use_color, sources={path: source}))
        output.close()
    if _unchecked(result):
        return EXIT_ERROR
    if o.exit_non_zero_on_fix and result.fixed:
        return EXIT_FINDINGS
    return EXIT_FINDINGS if result.diagnostics and not o.exit_zero else EXIT_CLEAN


def _unchecked(result: FileResult) -> bool:
    """A file with an error and no findings was not checked (unreadable, undecodable, missing, an internal
    error): exit 2. A fix that was not written (the file changed meanwhile) leaves its findings: exit 1."""
    return result.error is not None and not result.diagnostics


def _unreadable(source: bytes) -> str | None:
    """What reading a file says of text that Python cannot read as source (gacclint/source.py)."""
    if b"\0" not in source:
        return None
    for bom, name in ((b"\xff\xfe\0\0", "UTF-32"), (b"\0\0\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
                      (b"\xfe\xff", "UTF-16")):
        if source.startswith(bom):
            return f"{name} encoded: Python source must be UTF-8 or declare an ASCII-compatible encoding"
    return "binary content (NUL bytes)"


def _show(targets: list[Path], resolver: SettingsResolver, o: SimpleNamespace) -> int:
    """--show-files: the files a run would check, one a line, sorted. --show-settings: the
    settings of the first of them (or of the first path named)."""
    from gacclint.discover import discover

    files = list(discover(targets, lambda path, is_dir: resolver.for_path(path).is_excluded(path, is_dir),
                          o.force_exclude,
                          walk_excluded=runner.walk_exclusion(resolver)))
    output = _Output(o.output_file, False)
    if not files:
        click.echo("warning: No Python files found under the given path(s)", err=True)
    if o.show_files:
        output.write("".join(f"{path}\n" for path in sorted(files, key=str)))
    else:
        output.write(_settings_text(files[0] if files else targets[0], resolver, o))
    output.close()
    return EXIT_CLEAN


def _settings_text(path: Path, resolver: SettingsResolver, o: SimpleNamespace) -> str:
    from gacclint.diagnostics import CODES

    settings = resolver.for_path(path)
    selection = settings.selection_for(path)
    enabled = [code for code in sorted(CODES) if selection.selects(code)]

    def listed(values) -> str:
        return "[" + ", ".join(json.dumps(str(value)) for value in values) + "]"

    lines = [
        f"Resolved settings for: {json.dumps(str(path))}",
        f"Settings path: {json.dumps(str(settings.config_path)) if settings.config_path else 'none (the defaults)'}",
        "",
        f"root = {json.dumps(str(settings.root))}",
        f"enabled = {listed(enabled)}",
        f"select = {listed(_layer(selection, 'select'))}",
        f"ignore = {listed(_layer(selection, 'ignore'))}",
        f"extend-select = {listed(_layer(selection, 'extend_select'))}",
        f"per-file-ignores = {listed(selection_ignores(selection))}",
        f"exclude = {listed(pattern for group in settings.excludes for pattern in group.patterns)}",
        f"unsafe-fixes = {json.dumps(bool(o.unsafe_fixes) if o.unsafe_fixes is not None else settings.unsafe_fixes)}",
        f"force-exclude = {json.dumps(bool(o.force_exclude))}",
        f"cache = {json.dumps(not o.no_cache)}",
        f"output-format = {json.dumps(o.output_format)}",
    ]
    return "\n".join(lines) + "\n"


def _layer(selection, name: str) -> list[str]:
    """Every layer's selectors of one kind, the configuration's first (`select` of the layer that sets it)."""
    layers = []
    while selection is not None:
        layers.append(selection)
        selection = selection.base
    values: list[str] = ["ALL"] if name == "select" else []  # no layer that sets `select`: every code
    for layer in reversed(layers):
        value = getattr(layer, name)
        if name == "select" and value is not None:
            values = list(value)
        elif name != "select":
            values += list(value or ())
    return values


def selection_ignores(selection) -> list[str]:
    return list(selection.per_file_ignores)


def _watch(targets: list[Path], resolver: Callable[[], SettingsResolver], once: Callable[[SettingsResolver], int],
           o: SimpleNamespace) -> int:
    """Ruff's --watch, by polling: a run now, then one after every change of a
    checked file or of ./pyproject.toml (a new file in a checked folder too)."""
    import time

    interval = float(os.environ.get(WATCH_INTERVAL_ENV, "0.5"))
    most_runs = int(os.environ.get(WATCH_RUNS_ENV, "0"))  # 0: until Ctrl-C
    click.echo("Watching for file changes (Ctrl-C to stop).", err=True)
    runs = 0
    while True:
        state = _watched_state(targets, o.force_exclude)
        try:
            current = resolver()
        except ConfigError as error:
            click.echo(f"gacclint: error: {error}", err=True)
        else:
            once(current)
        runs += 1
        if most_runs and runs >= most_runs:
            return EXIT_CLEAN
        while _watched_state(targets, o.force_exclude) == state:
            time.sleep(interval)
        if sys.stdout.isatty() and o.output_file is None:
            click.clear()
        click.echo("File change detected...", err=True)


def _watched_state(targets: list[Path], force_exclude: bool) -> dict[str, tuple[int, int]]:
    """Each candidate file's (modification time, size), and the local pyproject.toml's."""
    from gacclint.discover import discover

    state = {}
    for path in [*discover(targets, force_exclude=False), Path("pyproject.toml")]:
        with contextlib.suppress(OSError):
            info = os.stat(path)
            state[os.fspath(path)] = (info.st_mtime_ns, info.st_size)
    return state


def _verify_fixed(reports: list[FileResult], steps: int | None) -> bool:
    """Run each fixed text and print its verdict; True when some gradients differ."""
    from gacclint.runtime.run import verify_script

    if not reports:
        click.echo("gacclint: no fixed file to verify.", err=True)
        return False
    mismatch = False
    for report in reports:
        if report.path.suffix == ".ipynb":
            click.echo(f"gacclint: {report.path}: not verified: verify runs scripts; export the notebook "
                       "(`jupyter nbconvert --to script`) and verify that", err=True)
            continue
        with contextlib.redirect_stdout(sys.stderr):  # the script's prints are not gacclint's output
            result = verify_script(report.path, source=report.fixed_source, steps=steps)
        if result.verdict == "error":
            click.echo(f"gacclint: {report.path}: not verified: {result.why_not_run}", err=True)
            continue
        mismatch = mismatch or not result.ok
        click.echo(f"{report.path}: {'verified' if result.ok else 'gradients still differ'}: {result.summary()}")
        for diagnosis in result.diagnoses():
            click.echo(f"  {diagnosis.message}" + (f" ({diagnosis.code})" if diagnosis.code else ""))
    return mismatch


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("target", metavar="SCRIPT.py | FILE.py::FUNCTION")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- SCRIPT_ARGS...]")
@click.option("--steps", type=click.IntRange(min=1), metavar="N",
              help="Stop the run cleanly after N optimizer steps (default: run to the end).")
@click.option("--fixture", type=click.Path(path_type=Path), metavar="FILE",
              help="With FILE.py::FUNCTION: a Python file whose globals named like the function's parameters "
                   "(model, loader, optimizer, ...) are its arguments; it sees DEVICE.")
@click.option("--device", type=click.Choice(["cuda", "cpu"]),
              help="Passed to the code as the environment variable GACCLINT_DEVICE (default: cuda when available).")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_debug
def verify(target: str, script_args: tuple[str, ...], steps: int | None, fixture: Path | None, device: str | None,
           output_format: str, debug: bool) -> None:
    """RUN a training script and prove that every optimizer step applies the
    large-batch gradient of its window.

    This EXECUTES the code (and imports PyTorch: `pip install 'gacclint[runtime]'`).
    The file's training loops are rewritten in memory, never on disk; for every
    step, the gradients the optimizer sees are compared with the sample-weighted
    mean gradient of exactly the micro-batches since the previous step, and
    every mismatch is explained in rule terms (GA201, GA202, ...).

    \b
    gacclint verify train.py --steps 20
    gacclint verify train.py -- --epochs 1 --batch-size 8
    gacclint verify train.py::train_one_epoch --fixture fixture.py

    Exit codes: 0 verified, 1 gradients differ, 2 could not run (with why).
    """
    path_text, _, function = target.partition("::")
    path = Path(path_text)
    if function and fixture is None:
        raise click.BadParameter("FILE.py::FUNCTION needs --fixture FILE giving its arguments", param_hint="TARGET")
    if fixture is not None and not function:
        raise click.BadParameter("--fixture goes with a FILE.py::FUNCTION target", param_hint="'--fixture'")
    if function and script_args:
        raise click.BadParameter("script arguments go with a script, not a function", param_hint="SCRIPT_ARGS")

    if path.suffix == ".ipynb":
        click.echo(f"gacclint: {path}: could not verify: verify runs Python scripts, not notebooks; export it "
                   f"(`jupyter nbconvert --to script {path}`) and verify the .py file", err=True)
        sys.exit(EXIT_ERROR)

    def run() -> int:
        from gacclint.runtime.run import failed_report, verify_file_function, verify_script

        missing = [p for p in (path, fixture) if p is not None and not p.is_file()]
        if missing:
            result = failed_report(target, f"{missing[0]}: no such file")
        else:
            with contextlib.redirect_stdout(sys.stderr):  # the script's prints are not gacclint's output
                if function:
                    assert fixture is not None
                    result = verify_file_function(path, function, fixture, steps=steps, device=device)
                else:
                    result = verify_script(path, argv=script_args, steps=steps, device=device)
        _print_verification(result, output_format)
        return result.exit_code

    sys.exit(_guarded(debug, run))


def _print_verification(result: VerifyReport, output_format: str) -> None:
    if output_format == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    if result.steps or result.verdict != "error":  # a run that crashed midway still shows its steps
        click.echo(result.text())
    if result.verdict == "error":
        click.echo(f"gacclint: {result.target}: could not verify: {result.why_not_run}", err=True)


@main.command()
@click.argument("code", required=False)
@click.option("--all", "show_all", is_flag=True, help="List every rule with its summary.")
def rule(code: str | None, show_all: bool) -> None:
    """Print the documentation of rule CODE (e.g. GA202)."""
    from gacclint.diagnostics import BUILTIN_DESCRIPTIONS, CODES
    from gacclint.rules import all_rules, rule_by_code

    if show_all or code is None:
        for builtin in sorted(BUILTIN_DESCRIPTIONS):
            fix = "fix" if builtin in _BUILTIN_EXAMPLES and _BUILTIN_EXAMPLES[builtin][1] else "   "
            click.echo(f"{builtin}  {fix}  {CODES[builtin]:34} {BUILTIN_DESCRIPTIONS[builtin][0]}")
        for rule_class in all_rules():
            fix = "fix" if rule_class.fixable() else "   "
            click.echo(f"{rule_class.code}  {fix}  {rule_class.name:34} {rule_class.summary()}")
        return
    code = code.strip().upper()
    if code in BUILTIN_DESCRIPTIONS:
        click.echo(_builtin_documentation(code, CODES[code], *BUILTIN_DESCRIPTIONS[code]))
        return
    rule_class = rule_by_code(code)
    if rule_class is None:
        raise click.BadParameter(f"unknown rule code: {code}", param_hint="CODE")
    click.echo(f"# {rule_class.name} ({rule_class.code})\n")
    click.echo(rule_class.documentation())


# The codes without a rule class (gacclint/diagnostics.py): an example, and its fix (or why there is none).
_BUILTIN_EXAMPLES = {
    "GA001": ("for x, y in loader:\n    loss = loss_fn(model(x), y\n    loss.backward()\n", ""),
    "GA002": ("for x, y in loader:\n    optimizer.zero_grad()  # noqa: GA101\n    loss_fn(model(x), y).backward()\n"
              "    optimizer.step()\n",
              "for x, y in loader:\n    optimizer.zero_grad()\n    loss_fn(model(x), y).backward()\n"
              "    optimizer.step()\n"),
}
_BUILTIN_FIX_NOTES = {
    "GA001": "None: fix the syntax error; gacclint checks the file's training loops once it parses.",
    "GA002": "Safe: `gacclint fix --extend-select GA002` removes the unused codes from the directive (the whole "
             "comment when none is left; other tools' codes stay). It runs after the other fixes, so a `# noqa` "
             "that a fix made stale goes too.",
}


def _builtin_documentation(code: str, name: str, short: str, full: str) -> str:
    example, fixed = _BUILTIN_EXAMPLES[code]
    parts = [f"# {name} ({code})\n", "## What it does", short, "", "## Why is this bad?", full, "",
             "## Example", "```python", example.rstrip("\n"), "```", ""]
    if fixed:
        parts += ["Use instead:", "```python", fixed.rstrip("\n"), "```", ""]
    parts += ["## Fix", _BUILTIN_FIX_NOTES[code]]
    return "\n".join(parts)


@main.command()
@click.argument("location", metavar="FILE:LINE")
@_debug
def explain(location: str, debug: bool) -> None:
    """Show the loop model of the training loop at FILE:LINE: events, guards as
    evaluated for sample configurations, and why each rule fired or stayed silent.

    LOCATION is written as check prints a finding's: train.py:42, train.py:42:9,
    or in a notebook notes.ipynb:'cell 3:7' (code cell 3, row 7)."""
    from gacclint.explain import ExplainError, explain as render, parse_target

    def action() -> int:
        try:
            click.echo(render(parse_target(location)), nl=False)
        except ExplainError as error:
            click.echo(f"gacclint: {error}", err=True)
            return EXIT_ERROR
        return EXIT_CLEAN

    sys.exit(_guarded(debug, action))


@main.command()
def server() -> None:
    """Run the language server on standard input and output (LSP), for editors.

    It publishes the diagnostics of `gacclint check` for each open Python file
    as it is edited, with each fix as a quick fix and every fix at once as the
    `source.fixAll.gacclint` action, configured by `[tool.gacclint]` as `check` is.
    """
    from gacclint.server import serve

    serve()
