"""The `gacclint` command: check, fix, rule.

Exit codes: 0 clean, 1 findings (or a diff with `fix --diff`), 2 usage or
internal error.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Callable

import click

from gacclint import __version__
from gacclint.report import concise_line, json_findings, summary, unified_diff
from gacclint.rules import all_rules, rule_by_code
from gacclint.runner import FileReport, check_paths, fix_file
from gacclint.discover import discover
from gacclint.selection import Selection, UnknownCode

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2

_paths = click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
_select = click.option("--select", metavar="CODES", help="Comma-separated codes or prefixes to enable (default: all).")
_ignore = click.option("--ignore", metavar="CODES", help="Comma-separated codes or prefixes to disable.")
_debug = click.option("--debug", is_flag=True, help="Show a traceback on internal errors.")


def _selection(select: str | None, ignore: str | None) -> Selection:
    try:
        return Selection.parse(select, ignore, [rule.code for rule in all_rules()])
    except UnknownCode as error:
        raise click.BadParameter(str(error), param_hint="'--select' / '--ignore'") from None


def _guarded(debug: bool, action: Callable[[], int]) -> int:
    """Internal errors become one line and exit 2; `--debug` shows the traceback."""
    try:
        return action()
    except click.ClickException:
        raise
    except Exception as error:  # noqa: BLE001 - the last line of defence for the user
        if debug:
            traceback.print_exc()
        click.echo(f"gacclint: internal error: {type(error).__name__}: {error}", err=True)
        return EXIT_ERROR


def _missing(paths: tuple[Path, ...]) -> list[Path]:
    return [path for path in paths if not path.exists()]


def _report_errors(reports: list[FileReport]) -> None:
    for report in reports:
        if report.error:
            click.echo(f"gacclint: {report.path}: {report.error}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gacclint")
def main() -> None:
    """Find and fix gradient-accumulation bugs in PyTorch training loops.

    gacclint reads code; it never imports or runs it.
    """


@main.command()
@_paths
@_select
@_ignore
@click.option("--output-format", type=click.Choice(["concise", "json"]), default="concise", show_default=True)
@_debug
def check(paths: tuple[Path, ...], select: str | None, ignore: str | None, output_format: str, debug: bool) -> None:
    """Report problems in the training loops under PATHS (default: .)."""
    selection = _selection(select, ignore)

    def run() -> int:
        targets = list(paths) or [Path(".")]
        for path in _missing(tuple(targets)):
            click.echo(f"gacclint: {path}: no such file or directory", err=True)
        reports = check_paths([p for p in targets if p.exists()], selection)
        _report_errors(reports)
        if output_format == "json":
            click.echo(json_findings(reports))
        else:
            for report in reports:
                for finding in report.findings:
                    click.echo(concise_line(report.path, finding))
            click.echo(summary(reports))
        failed = any(r.findings or r.error for r in reports) or bool(_missing(tuple(targets)))
        return EXIT_FINDINGS if failed else EXIT_CLEAN

    sys.exit(_guarded(debug, run))


@main.command()
@_paths
@_select
@_ignore
@click.option("--unsafe-fixes", is_flag=True, help="Also apply fixes marked unsafe.")
@click.option("--diff", is_flag=True, help="Print a unified diff of the fixes and write nothing.")
@_debug
def fix(paths: tuple[Path, ...], select: str | None, ignore: str | None, unsafe_fixes: bool, diff: bool, debug: bool) -> None:
    """Apply fixes in place under PATHS (default: .), then report what remains."""
    selection = _selection(select, ignore)

    def run() -> int:
        targets = list(paths) or [Path(".")]
        for path in _missing(tuple(targets)):
            click.echo(f"gacclint: {path}: no such file or directory", err=True)
        reports = [fix_file(path, selection, unsafe_fixes, write=not diff)
                   for path in discover([p for p in targets if p.exists()])]
        _report_errors(reports)
        for report in reports:
            for dropped in report.dropped:
                click.echo(f"gacclint: {report.path}:{dropped.finding.row}: fix for {dropped.finding.code} "
                           f"dropped: {dropped.reason}", err=True)
        if diff:
            changed = [r for r in reports if r.fixed is not None]
            for report in changed:
                click.echo(unified_diff(report), nl=False)
            fixes = sum(len(r.applied) for r in changed)
            click.echo(f"Would fix {fixes} problem{'s' if fixes != 1 else ''} in {len(changed)} file"
                       f"{'s' if len(changed) != 1 else ''}.", err=True)
            return EXIT_FINDINGS if changed else EXIT_CLEAN
        for report in reports:
            for finding in report.findings:
                click.echo(concise_line(report.path, finding))
        fixed = sum(len(r.applied) for r in reports)
        if fixed:
            files = sum(1 for r in reports if r.fixed is not None)
            click.echo(f"Fixed {fixed} problem{'s' if fixed != 1 else ''} in {files} file{'s' if files != 1 else ''}.")
        click.echo(summary(reports, unsafe_fixes))
        failed = any(r.findings or r.error for r in reports) or bool(_missing(tuple(targets)))
        return EXIT_FINDINGS if failed else EXIT_CLEAN

    sys.exit(_guarded(debug, run))


@main.command()
@click.argument("code", required=False)
@click.option("--all", "show_all", is_flag=True, help="List every rule with its summary.")
def rule(code: str | None, show_all: bool) -> None:
    """Print the documentation of rule CODE (e.g. GA202)."""
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
