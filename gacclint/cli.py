"""The `gacclint` command: check, fix, rule, verify.

Exit codes: 0 clean, 1 findings (or a diff with `fix --diff`), 2 usage or
internal error. `verify`: 0 verified, 1 gradient mismatch, 2 could not run.

`check` and `fix` never import or run the code they read; only `verify` and
`fix --verify` run it, and they load PyTorch only then.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click

from gacclint import __version__, runner
from gacclint.config import CliOverrides, ConfigError, SettingsResolver
from gacclint.diagnostics import FileResult
from gacclint.formats import FORMATS, render, statistics
from gacclint.runner import RunOptions
from gacclint.selection import UnknownCode, parse_codes

if TYPE_CHECKING:
    from gacclint.runtime.report import VerifyReport

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2

_debug = click.option("--debug", is_flag=True, help="Show a traceback on internal errors.")


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
        click.option("--show-fixes", is_flag=True, help="Show the fixes applied to each file."),
        click.option("--statistics", is_flag=True, help="Print counts per code instead of the findings."),
        click.option("-q", "--quiet", is_flag=True, help="Print the findings and nothing else."),
        click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
                     help="Colour the full and concise formats (auto: when stdout is a terminal and NO_COLOR is unset)."),
        click.option("--exit-zero", is_flag=True, help="Exit 0 even when findings remain."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the result cache (.gacclint_cache/)."),
        _debug,
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _resolver(select, ignore, extend_select, exclude, extend_exclude, unsafe_fixes, config) -> SettingsResolver:
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
        resolver.for_path(Path.cwd())  # a bad configuration is a usage error before any file is read
        return resolver
    except UnknownCode as error:
        raise click.BadParameter(str(error), param_hint="'--select' / '--ignore' / '--extend-select'") from None
    except ConfigError as error:  # one line, as for a config met later on the way to a file (_guarded)
        click.echo(f"gacclint: error: {error}", err=True)
        sys.exit(EXIT_ERROR)


def _use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _guarded(debug: bool, action: Callable[[], int]) -> int:
    """Internal errors become one line and exit 2; `--debug` shows the traceback
    (and makes a file's internal error stop the run instead of skipping the file)."""
    runner.DEBUG = debug
    try:
        return action()
    except click.ClickException:
        raise
    except ConfigError as error:  # a pyproject.toml met on the way to a file
        click.echo(f"gacclint: error: {error}", err=True)
        return EXIT_ERROR
    except Exception as error:  # noqa: BLE001 - the last line of defence for the user
        if debug:
            traceback.print_exc()
        click.echo(f"gacclint: internal error: {type(error).__name__}: {error}", err=True)
        return EXIT_ERROR


def _report_errors(results: list[FileResult]) -> None:
    for result in results:
        if result.error:
            click.echo(f"gacclint: {result.path}: {result.error}", err=True)
        for dropped in result.dropped:
            click.echo(f"gacclint: {result.path}:{dropped}", err=True)


def _print_results(results: list[FileResult], output_format: str, statistics_only: bool, quiet: bool,
                   color: str, show_fixes: bool, unsafe: bool) -> None:
    use_color = _use_color(color)
    if statistics_only:
        text = statistics(results, unsafe_fixes=unsafe)
    else:
        text = render(results, output_format, color=use_color, show_fixes=show_fixes, unsafe_fixes=unsafe)
        if quiet and output_format in ("full", "concise"):
            # Only the findings: the summary is everything after the last finding's block.
            text = "\n".join(line for line in text.splitlines() if not _is_summary(line)) + "\n"
            text = "" if text == "\n" else text
    if text:
        # click.echo strips ANSI codes when stdout is no terminal unless told: `--color always` means always.
        click.echo(text, nl=False, color=use_color)


def _is_summary(line: str) -> bool:
    return (line.startswith(("Found ", "All checks passed!", "Fixed ")) or "hidden fix" in line) and ": " not in line


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gacclint")
def main() -> None:
    """Find and fix gradient-accumulation bugs in PyTorch training loops.

    check, fix and rule read code; they never import or run it. Only verify
    (and fix --verify) runs the code, to prove its gradients.
    """


@main.command()
@_linting_options
@click.option("--add-noqa", is_flag=True, help="Write a `# noqa: CODE` comment on every line with a finding.")
def check(paths: tuple[Path, ...], select, ignore, extend_select, exclude, extend_exclude, force_exclude, config,
          unsafe_fixes, output_format, show_fixes, statistics, quiet, color, exit_zero, no_cache, debug,
          add_noqa) -> None:
    """Report problems in the training loops under PATHS (default: .).

    Exit codes: 0 nothing found, 1 findings (or unreadable files), 2 usage or internal error.
    """
    resolver = _resolver(select, ignore, extend_select, exclude, extend_exclude, unsafe_fixes, config)

    def run() -> int:
        options = RunOptions(mode="add-noqa" if add_noqa else "check", unsafe=unsafe_fixes,
                             force_exclude=force_exclude, use_cache=not no_cache and not add_noqa,
                             progress=not quiet)
        results = runner.run(list(paths) or [Path(".")], resolver, options)
        _report_errors(results)
        if add_noqa:
            added = sum(r.noqa_added for r in results)
            click.echo(f"Added {added} noqa directive{'s' if added != 1 else ''}.", err=True)
        _print_results(results, output_format, statistics, quiet, color, show_fixes, bool(unsafe_fixes))
        failed = any(r.diagnostics or r.error for r in results)
        return EXIT_FINDINGS if failed and not exit_zero else EXIT_CLEAN

    sys.exit(_guarded(debug, run))


@main.command()
@_linting_options
@click.option("--diff", is_flag=True, help="Print a unified diff of the fixes and write nothing.")
@click.option("--exit-non-zero-on-fix", is_flag=True, help="Exit 1 when something was fixed, even if nothing remains.")
@click.option("--verify", "verify_fixed", is_flag=True,
              help="Then RUN each fixed file (this executes it, with PyTorch) and check that its gradients equal "
                   "the large-batch ones, as `gacclint verify` does; with --diff, the fixed text is run unwritten.")
@click.option("--verify-steps", type=click.IntRange(min=1), metavar="N",
              help="With --verify: stop each run after N optimizer steps.")
def fix(paths: tuple[Path, ...], select, ignore, extend_select, exclude, extend_exclude, force_exclude, config,
        unsafe_fixes, output_format, show_fixes, statistics, quiet, color, exit_zero, no_cache, debug,
        diff: bool, exit_non_zero_on_fix: bool, verify_fixed: bool, verify_steps: int | None) -> None:
    """Apply fixes in place under PATHS (default: .), then report what remains.

    Exit codes: 0 nothing remains, 1 findings remain (or unreadable files, or
    with --diff a diff, or with --exit-non-zero-on-fix a fix), 2 usage or internal error.
    """
    if verify_steps is not None and not verify_fixed:
        raise click.BadParameter("needs --verify", param_hint="'--verify-steps'")
    resolver = _resolver(select, ignore, extend_select, exclude, extend_exclude, unsafe_fixes, config)

    def run() -> int:
        options = RunOptions(mode="fix", unsafe=unsafe_fixes, write=not diff, diff=diff,
                             force_exclude=force_exclude, progress=not quiet)
        results = runner.run(list(paths) or [Path(".")], resolver, options)
        _report_errors(results)
        fixed = sum(r.fixed for r in results)
        changed = [r for r in results if r.fixed]
        errors = any(r.error for r in results)
        if diff:
            for result in changed:
                click.echo(result.diff, nl=False)
            if not quiet:
                click.echo(f"Would fix {fixed} problem{'s' if fixed != 1 else ''} in {len(changed)} file"
                           f"{'s' if len(changed) != 1 else ''}.", err=True)
            mismatch = verify_fixed and _verify_fixed(changed, verify_steps)
            return EXIT_FINDINGS if (changed or errors or mismatch) and not exit_zero else EXIT_CLEAN
        if fixed and not quiet and not statistics and output_format in ("full", "concise"):
            click.echo(f"Fixed {fixed} problem{'s' if fixed != 1 else ''} in {len(changed)} file"
                       f"{'s' if len(changed) != 1 else ''}.")
        _print_results(results, output_format, statistics, quiet, color, show_fixes, bool(unsafe_fixes))
        mismatch = verify_fixed and _verify_fixed(changed, verify_steps)
        failed = any(r.diagnostics for r in results) or errors or mismatch or (exit_non_zero_on_fix and fixed > 0)
        return EXIT_FINDINGS if failed and not exit_zero else EXIT_CLEAN

    sys.exit(_guarded(debug, run))


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
    from gacclint.rules import all_rules, rule_by_code

    if show_all or code is None:
        for rule_class in all_rules():
            fix = "fix" if rule_class.fixable() else "   "
            click.echo(f"{rule_class.code}  {fix}  {rule_class.name:34} {rule_class.summary()}")
        return
    rule_class = rule_by_code(code)
    if rule_class is None:
        raise click.BadParameter(f"unknown rule code: {code}", param_hint="CODE")
    click.echo(f"# {rule_class.name} ({rule_class.code})\n")
    click.echo(rule_class.documentation())
