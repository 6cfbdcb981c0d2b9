"""The `gacclint` command: check, fix, rule, verify.

Exit codes: 0 clean, 1 findings (or a diff with `fix --diff`), 2 usage or
internal error. `verify`: 0 verified, 1 gradient mismatch, 2 could not run.

`check` and `fix` never import or run the code they read; only `verify` and
`fix --verify` run it, and they load PyTorch only then.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click

from gacclint import __version__, runner
from gacclint.report import concise_line, json_findings, summary, unified_diff
from gacclint.rules import all_rules, rule_by_code
from gacclint.runner import FileReport, check_paths, fix_file
from gacclint.discover import discover
from gacclint.selection import Selection, UnknownCode

if TYPE_CHECKING:
    from gacclint.runtime.report import VerifyReport

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
    """Internal errors become one line and exit 2; `--debug` shows the traceback
    (and makes a file's internal error stop the run instead of skipping the file)."""
    runner.DEBUG = debug
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

    check, fix and rule read code; they never import or run it. Only verify
    (and fix --verify) runs the code, to prove its gradients.
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
@click.option("--verify", "verify_fixed", is_flag=True,
              help="Then RUN each fixed file (this executes it, with PyTorch) and check that its gradients equal "
                   "the large-batch ones, as `gacclint verify` does; with --diff, the fixed text is run unwritten.")
@click.option("--verify-steps", type=click.IntRange(min=1), metavar="N",
              help="With --verify: stop each run after N optimizer steps.")
@_debug
def fix(paths: tuple[Path, ...], select: str | None, ignore: str | None, unsafe_fixes: bool, diff: bool,
        verify_fixed: bool, verify_steps: int | None, debug: bool) -> None:
    """Apply fixes in place under PATHS (default: .), then report what remains."""
    selection = _selection(select, ignore)
    if verify_steps is not None and not verify_fixed:
        raise click.BadParameter("needs --verify", param_hint="'--verify-steps'")

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
            if verify_fixed:
                _verify_fixed(changed, verify_steps)
            return EXIT_FINDINGS if changed else EXIT_CLEAN
        for report in reports:
            for finding in report.findings:
                click.echo(concise_line(report.path, finding))
        fixed = sum(len(r.applied) for r in reports)
        if fixed:
            files = sum(1 for r in reports if r.fixed is not None)
            click.echo(f"Fixed {fixed} problem{'s' if fixed != 1 else ''} in {files} file{'s' if files != 1 else ''}.")
        click.echo(summary(reports, unsafe_fixes))
        mismatch = verify_fixed and _verify_fixed([r for r in reports if r.fixed is not None], verify_steps)
        failed = any(r.findings or r.error for r in reports) or bool(_missing(tuple(targets))) or mismatch
        return EXIT_FINDINGS if failed else EXIT_CLEAN

    sys.exit(_guarded(debug, run))


def _verify_fixed(reports: list[FileReport], steps: int | None) -> bool:
    """Run each fixed text and print its verdict; True when some gradients differ."""
    from gacclint.runtime.run import verify_script

    if not reports:
        click.echo("gacclint: no fixed file to verify.", err=True)
        return False
    mismatch = False
    for report in reports:
        assert report.fixed is not None
        with contextlib.redirect_stdout(sys.stderr):  # the script's prints are not gacclint's output
            result = verify_script(report.path, source=report.fixed, steps=steps)
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
