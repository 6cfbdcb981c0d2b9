"""Running the user's code under the probe: a script, or one function.

A script runs in this process as `__main__` (like `python train.py`: its
folder first on `sys.path`, `sys.argv` set), compiled from the rewritten
source under the file's own name, so tracebacks point at the user's lines.
A function is rewritten from its module's source and called with the
arguments given; its module's globals are copied, so nothing in the user's
module is replaced. `--steps N` stops the run after N optimizer steps.

The device (`--device`) reaches the code through the environment variable
`GACCLINT_DEVICE` (`cuda` or `cpu`); fixture files also get it as `DEVICE`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import runpy
import sys
import traceback
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from gacclint.runtime.errors import TORCH_MISSING, CannotVerify, GradientMismatch, missing_package
from gacclint.runtime.instrument import PROBE, instrument
from gacclint.runtime.report import Precision, VerifyReport, build_report
from gacclint.source import ReadError, read_source

DEVICE_ENV = "GACCLINT_DEVICE"
DEVICES = ("cuda", "cpu")

__all__ = ["assert_gradients_match", "failed_report", "resolve_device", "verify_file_function", "verify_function",
           "verify_script"]


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise CannotVerify(TORCH_MISSING) from None
    return torch


def resolve_device(device: str | None) -> str:
    """`cuda` when available unless told otherwise; `cuda` without CUDA cannot run."""
    torch = _torch()
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in DEVICES:
        raise CannotVerify(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise CannotVerify(f"--device cuda: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    return device


def failed_report(target: str, why: str, device: str | None = None) -> VerifyReport:
    """A report for a run that could not happen (exit 2)."""
    return build_report(target=target, device=device, measures=(), micro_batches=(), passes=(),
                        precision=Precision(), step_lines={}, error=why)


@contextmanager
def _environment(device: str | None, argv: Sequence[str] | None, folders: Sequence[Path]) -> Iterator[None]:
    saved_env = os.environ.get(DEVICE_ENV)
    saved_argv = sys.argv
    saved_path = list(sys.path)
    try:
        if device is not None:
            os.environ[DEVICE_ENV] = device
        if argv is not None:
            sys.argv = list(argv)
        for folder in reversed(folders):
            sys.path.insert(0, str(folder))
        yield
    finally:
        if saved_env is None:
            os.environ.pop(DEVICE_ENV, None)
        else:
            os.environ[DEVICE_ENV] = saved_env
        sys.argv = saved_argv
        sys.path[:] = saved_path


def _describe(error: BaseException, path: Path | str | None) -> str:
    """`ValueError: bad shape (train.py:31)`: the error and the deepest frame in the user's file."""
    missing = missing_package(error)
    if missing is not None:
        return missing
    frames = traceback.extract_tb(error.__traceback__)
    mine = [frame for frame in frames if path is not None and Path(frame.filename) == Path(path)]
    frame = (mine or frames or [None])[-1]
    where = f" ({Path(frame.filename).name}:{frame.lineno})" if frame is not None else ""
    return f"the code raised {type(error).__name__}: {error}{where}"


# --------------------------------------------------------------------------
# Scripts
# --------------------------------------------------------------------------


def verify_script(path: str | Path, *, source: bytes | None = None, argv: Sequence[str] = (),
                  steps: int | None = None, device: str | None = None) -> VerifyReport:
    """Run the script at `path` with its training loops instrumented, and report.

    `source` replaces the file's content (e.g. the output of `gacclint fix`
    before it is written); `argv` are the script's arguments; `steps` stops
    the run after that many optimizer steps; `device` (`cuda`/`cpu`, default:
    CUDA when available) is passed as `GACCLINT_DEVICE`. This runs the
    script's code. A script that cannot run gives a report with `error` set
    (exit code 2), never an exception.
    """
    path = Path(path)
    target = str(path)
    try:
        device = resolve_device(device)
        if source is None:
            source = read_source(path)
        program = instrument(source)
    except CannotVerify as error:
        return failed_report(target, str(error), device if isinstance(device, str) else None)
    except ReadError as error:
        return failed_report(target, f"cannot read: {error}")
    from gacclint.runtime.probe import Probe, ProbeFailure, StopVerification

    code = compile(program.code, str(path), "exec", dont_inherit=True)
    probe = Probe(program.sites, steps)
    module = types.ModuleType("__main__")
    module.__dict__.update({"__file__": str(path), "__builtins__": __builtins__, PROBE: probe})
    error: str | None = None
    stopped = False
    saved_main = sys.modules.get("__main__")
    with _environment(device, [str(path), *argv], [path.resolve().parent]), probe.installed():
        sys.modules["__main__"] = module
        try:
            exec(code, module.__dict__)
        except StopVerification:
            stopped = True
        except ProbeFailure as failure:
            error = str(failure)
        except SystemExit as exit_:
            if exit_.code not in (None, 0):
                error = f"the script exited with status {exit_.code}"
        except KeyboardInterrupt:
            raise
        except Exception as raised:  # noqa: BLE001 - the user's code: reported, exit 2
            error = _describe(raised, path)
        finally:
            if saved_main is not None:
                sys.modules["__main__"] = saved_main
            else:
                sys.modules.pop("__main__", None)
    return probe.report(target=target, device=device, error=error, stopped=stopped,
                        notes=[f"not instrumented: {why}" for why in program.skipped])


# --------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------


def _rewritten(function: Callable[..., Any], probe_factory: Callable[[Sequence[Any]], Any]
               ) -> tuple[Callable[..., Any], Any, list[str], str]:
    """The function recompiled from its rewritten source, bound to a fresh probe."""
    bound_to = None
    target = inspect.unwrap(function)
    if inspect.ismethod(target):
        bound_to, target = target.__self__, target.__func__
    if not inspect.isfunction(target):
        raise CannotVerify(f"{function!r} is not a Python function")
    qualified = target.__qualname__
    if "<locals>" in qualified or target.__closure__:
        raise CannotVerify(f"`{qualified}` is a nested function: verify rewrites module-level functions and methods")
    filename = inspect.getsourcefile(target)
    if filename is None:
        raise CannotVerify(f"no source file for `{qualified}`")
    try:
        source = read_source(Path(filename))
    except ReadError as error:
        raise CannotVerify(f"cannot read {filename}: {error}") from None
    program = instrument(source, function=qualified)
    assert program.function_name is not None
    probe = probe_factory(program.sites)
    namespace = dict(target.__globals__)
    namespace[PROBE] = probe
    exec(compile(program.code, filename, "exec", dont_inherit=True), namespace)
    rewritten = namespace[program.function_name]
    if bound_to is not None:
        rewritten = types.MethodType(rewritten, bound_to)
    return rewritten, probe, [f"not instrumented: {why}" for why in program.skipped], f"{filename}::{qualified}"


def verify_function(function: Callable[..., Any], /, *args: Any, steps: int | None = None,
                    device: str | None = None, **kwargs: Any) -> VerifyReport:
    """Call `function(*args, **kwargs)` with its training loop instrumented, and report.

    `function` is a module-level function or a method (bound or not) whose
    source file gacclint can read; its arguments are yours (model, loader,
    optimizer, ...), already on the device you want. `steps` stops it after
    that many optimizer steps; `device` only labels the report. Exceptions
    raised by the function propagate; a function gacclint cannot instrument
    raises :class:`CannotVerify`.
    """
    _torch()
    from gacclint.runtime.probe import Probe, ProbeFailure, StopVerification

    rewritten, probe, notes, target = _rewritten(function, lambda sites: Probe(sites, steps))
    error = None
    stopped = False
    with probe.installed():
        try:
            rewritten(*args, **kwargs)
        except StopVerification:
            stopped = True
        except ProbeFailure as failure:
            error = str(failure)
    return probe.report(target=target, device=device, error=error, stopped=stopped, notes=notes)


def assert_gradients_match(function: Callable[..., Any], /, *args: Any, steps: int | None = None,
                           **kwargs: Any) -> VerifyReport:
    """Assert that every optimizer step of `function(*args, **kwargs)` applies the large-batch gradient.

    For a project's own tests::

        assert_gradients_match(train_one_epoch, model, loader, optimizer, steps=4)

    Each step's gradients must equal the large-batch gradient of the
    micro-batches since the previous step, and (without `steps`) every
    micro-batch must be stepped. Raises :class:`GradientMismatch` (an
    `AssertionError`: pytest shows a failure) carrying the step, the parameter,
    the expected and actual norms, the rule code and the report;
    :class:`CannotVerify` when the function cannot be instrumented or no step
    ran. Returns the report.
    """
    report = verify_function(function, *args, steps=steps, **kwargs)
    if report.verdict == "error":
        raise CannotVerify(report.why_not_run or "could not verify")
    if not report.ok:
        raise GradientMismatch(report)
    return report


# --------------------------------------------------------------------------
# `gacclint verify file.py::function --fixture fixture.py`
# --------------------------------------------------------------------------


def verify_file_function(path: str | Path, function: str, fixture: str | Path, *, steps: int | None = None,
                         device: str | None = None) -> VerifyReport:
    """Import `path`, run `fixture` for the arguments, and verify `path::function`.

    The fixture is a small Python file run with `DEVICE` (a `torch.device`) in
    its globals and `GACCLINT_DEVICE` set; every global whose name is a
    parameter of the function is passed to it by that name (parameters with
    defaults may be left out). Nothing raises: failures are reports with `error`.
    """
    path, fixture = Path(path), Path(fixture)
    target = f"{path}::{function}"
    try:
        device = resolve_device(device)
    except CannotVerify as error:
        return failed_report(target, str(error))
    import torch

    with _environment(device, None, [path.resolve().parent, fixture.resolve().parent]):
        try:
            arguments = runpy.run_path(str(fixture), init_globals={"DEVICE": torch.device(device)},
                                       run_name="__gacclint_fixture__")
        except KeyboardInterrupt:
            raise
        except BaseException as raised:  # noqa: BLE001 - the user's code: reported, exit 2
            return failed_report(target, f"{_describe(raised, fixture)} while running the fixture {fixture}", device)
        try:
            with _imported(path) as module:
                function_object = _attribute(module, function)
                kwargs = _arguments(function_object, arguments, function, fixture)
                report = verify_function(function_object, steps=steps, device=device, **kwargs)
        except CannotVerify as error:
            return failed_report(target, str(error), device)
        except KeyboardInterrupt:
            raise
        except BaseException as raised:  # noqa: BLE001 - the user's code: reported, exit 2
            return failed_report(target, _describe(raised, path), device)
    return dataclasses.replace(report, target=target)


@contextmanager
def _imported(path: Path) -> Iterator[types.ModuleType]:
    """Import a file as a module (reusing it when the fixture already imported it)."""
    resolved = path.resolve()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == resolved:
            yield module
            return
    name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else "__gacclint_target__"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise CannotVerify(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


def _attribute(module: types.ModuleType, qualified: str) -> Callable[..., Any]:
    value: Any = module
    for part in qualified.split("."):
        if not hasattr(value, part):
            raise CannotVerify(f"{module.__file__} has no `{qualified}`")
        value = getattr(value, part)
    if not callable(value):
        raise CannotVerify(f"`{qualified}` is not callable")
    return value


def _arguments(function: Callable[..., Any], names: Mapping[str, Any], label: str, fixture: Path) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    missing = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.name in names:
            kwargs[parameter.name] = names[parameter.name]
        elif parameter.default is parameter.empty:
            missing.append(parameter.name)
    if missing:
        raise CannotVerify(f"{fixture} defines no {', '.join(f'`{name}`' for name in missing)} for `{label}`: "
                           "the fixture must bind every parameter without a default by its name")
    if any(p.kind is p.POSITIONAL_ONLY for p in inspect.signature(function).parameters.values()):
        raise CannotVerify(f"`{label}` has positional-only parameters: the fixture passes arguments by name")
    return kwargs
