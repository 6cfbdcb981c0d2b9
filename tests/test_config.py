"""Settings from `[tool.gacclint]`: discovery, --config, errors, command-line
overrides, per-file ignores and excludes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gacclint.config import DEFAULT_EXCLUDES, CliOverrides, ConfigError, Settings, SettingsResolver
from gacclint.selection import Selection, UnknownCode


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def resolve(path: Path, cwd: Path, config: Path | None = None, **overrides) -> Settings:
    return SettingsResolver(CliOverrides(**overrides), config=config, cwd=cwd).for_path(path)


def on(selection: Selection) -> set[str]:
    return set(selection.selected_codes())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """project/pyproject.toml with a [tool.gacclint] table; project/src/pkg/train.py."""
    write(tmp_path / "project" / "pyproject.toml", """\
        [project]
        name = "demo"

        [tool.gacclint]
        select = ["GA2"]
        ignore = ["GA203"]
    """)
    write(tmp_path / "project" / "src" / "pkg" / "train.py")
    return tmp_path / "project"


# -- discovery -----------------------------------------------------------------------------------------------------

def test_without_a_config_the_defaults_apply_at_the_current_directory(tmp_path: Path) -> None:
    settings = resolve(write(tmp_path / "a" / "train.py"), tmp_path)
    assert (settings.root, settings.config_path, settings.unsafe_fixes) == (tmp_path, None, False)
    assert on(settings.selection) == on(Selection())


def test_a_file_deep_in_a_project_finds_the_projects_config(project: Path) -> None:
    settings = resolve(project / "src" / "pkg" / "train.py", project.parent)
    assert settings.root == project and settings.config_path == project / "pyproject.toml"
    assert on(settings.selection) == {"GA001", "GA201", "GA202", "GA204"}


def test_relative_paths_are_relative_to_the_given_cwd(project: Path) -> None:
    assert resolve(Path("src/pkg/train.py"), project).config_path == project / "pyproject.toml"
    assert resolve(Path("."), project / "src").root == project


def test_the_nearest_config_wins(project: Path) -> None:
    write(project / "src" / "pyproject.toml", "[tool.gacclint]\nselect = ['GA1']\n")
    settings = resolve(project / "src" / "pkg" / "train.py", project)
    assert settings.root == project / "src"
    assert on(settings.selection) == {"GA001", "GA101", "GA102", "GA103", "GA104"}


def test_a_pyproject_without_a_gacclint_table_is_passed_over(project: Path) -> None:
    write(project / "src" / "pyproject.toml", "[tool.ruff]\nline-length = 100\n")
    assert resolve(project / "src" / "pkg" / "train.py", project).root == project


def test_files_under_one_config_share_one_settings_object(project: Path) -> None:
    resolver = SettingsResolver(CliOverrides(), cwd=project)
    first = resolver.for_path(project / "src" / "pkg" / "train.py")
    assert resolver.for_path(project / "src" / "other.py") is first
    assert resolver.for_path(project) is first


def test_config_replaces_discovery(project: Path, tmp_path: Path) -> None:
    other = write(tmp_path / "elsewhere" / "gacclint.toml", "select = ['GA101']\nunsafe-fixes = true\n")
    resolver = SettingsResolver(CliOverrides(), config=other, cwd=project)
    settings = resolver.for_path(project / "src" / "pkg" / "train.py")
    assert settings.config_path == other and settings.root == other.parent and settings.unsafe_fixes
    assert on(settings.selection) == {"GA001", "GA101"}
    assert resolver.for_path(tmp_path) is settings


def test_config_may_name_a_pyproject(project: Path, tmp_path: Path) -> None:
    settings = resolve(tmp_path / "x.py", tmp_path, config=Path("project/pyproject.toml"))
    assert settings.config_path == project / "pyproject.toml"
    assert on(settings.selection) == {"GA001", "GA201", "GA202", "GA204"}


def test_config_naming_a_pyproject_without_a_table_means_the_defaults(tmp_path: Path) -> None:
    plain = write(tmp_path / "sub" / "pyproject.toml", "[project]\nname = 'x'\n")
    settings = resolve(tmp_path / "x.py", tmp_path, config=plain)
    assert settings.root == tmp_path / "sub" and on(settings.selection) == on(Selection())


# -- errors --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("table", "message"), [
    ("selct = ['GA2']", "unknown key 'selct' in [tool.gacclint] of pyproject.toml (did you mean 'select'?)"),
    ("colour = 'blue'", "unknown key 'colour' in [tool.gacclint] of pyproject.toml"),
    ("select = 'GA2'", "'select' in [tool.gacclint] of pyproject.toml must be a list of strings, not a string"),
    ("ignore = ['GA2', 3]",
     "'ignore' in [tool.gacclint] of pyproject.toml must be a list of strings, "
     "not a list with a string and an integer"),
    ("exclude = 'build'", "'exclude' in [tool.gacclint] of pyproject.toml must be a list of strings, not a string"),
    ("unsafe-fixes = 'yes'", "'unsafe-fixes' in [tool.gacclint] of pyproject.toml must be true or false, not a string"),
    ("per-file-ignores = ['tests/*']",
     "'per-file-ignores' in [tool.gacclint] of pyproject.toml must be a table of pattern = [codes], "
     "not a list with a string"),
    ("per-file-ignores = { 'tests/*' = 'GA2' }",
     "'per-file-ignores' entry 'tests/*' in [tool.gacclint] of pyproject.toml must be a list of strings, not a string"),
    ("select = ['GA2', 'GA999']",
     "unknown rule code or prefix 'GA999' in 'select' in [tool.gacclint] of pyproject.toml"),
    ("extend-select = ['XY1', 'GA7']",
     "unknown rule codes or prefixes 'XY1', 'GA7' in 'extend-select' in [tool.gacclint] of pyproject.toml"),
    ("per-file-ignores = { 'tests/*' = ['GA999'] }",
     "unknown rule code or prefix 'GA999' in 'per-file-ignores' entry 'tests/*' in [tool.gacclint] of pyproject.toml"),
    ("exclude = ['!']", "'exclude' in [tool.gacclint] of pyproject.toml: Invalid git pattern: '!'"),
])
def test_a_bad_table_is_one_line_naming_the_file_and_the_problem(tmp_path: Path, table: str, message: str) -> None:
    write(tmp_path / "pyproject.toml", f"[tool.gacclint]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        resolve(tmp_path / "train.py", tmp_path)
    assert str(caught.value) == message


def test_a_bad_key_in_a_nested_config_names_its_path(project: Path) -> None:
    write(project / "src" / "pyproject.toml", "[tool.gacclint]\nselct = []\n")
    with pytest.raises(ConfigError, match=r"^unknown key 'selct' in \[tool.gacclint\] of src[/\\]pyproject.toml"):
        resolve(project / "src" / "pkg" / "train.py", project)


def test_gacclint_must_be_a_table(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool]\ngacclint = 1\n")
    with pytest.raises(ConfigError, match=r"^\[tool.gacclint\] of pyproject.toml must be a table, not an integer$"):
        resolve(tmp_path / "train.py", tmp_path)


def test_invalid_toml_is_reported_in_one_line_with_tomllibs_reason(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.gacclint]\nselect = = ['GA2']\n")
    with pytest.raises(ConfigError) as caught:
        resolve(tmp_path / "train.py", tmp_path)
    message = str(caught.value)
    assert message.startswith("pyproject.toml: invalid TOML: ") and "line" in message and "\n" not in message


def test_a_bad_config_option_file_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^missing.toml: cannot read: No such file or directory$"):
        SettingsResolver(CliOverrides(), config=Path("missing.toml"), cwd=tmp_path)
    bad = write(tmp_path / "gacclint.toml", "selct = ['GA2']\n")
    with pytest.raises(ConfigError, match=r"^unknown key 'selct' in gacclint.toml \(did you mean 'select'\?\)$"):
        SettingsResolver(CliOverrides(), config=bad, cwd=tmp_path)


def test_paths_outside_the_current_directory_are_shown_whole(tmp_path: Path) -> None:
    bad = write(tmp_path / "conf" / "gacclint.toml", "select = 3\n")
    with pytest.raises(ConfigError, match=f"^'select' in {tmp_path / 'conf' / 'gacclint.toml'} must"):
        SettingsResolver(CliOverrides(), config=bad, cwd=tmp_path / "elsewhere")


def test_unknown_command_line_codes_raise_unknown_code(tmp_path: Path) -> None:
    with pytest.raises(UnknownCode, match="GA999"):
        SettingsResolver(CliOverrides(extend_select=("GA999",)), cwd=tmp_path)
    with pytest.raises(UnknownCode, match="GA999"):
        SettingsResolver(CliOverrides(per_file_ignores=(("tests/*", ("GA999",)),)), cwd=tmp_path)


def test_a_bad_command_line_pattern_names_its_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--extend-exclude: Invalid git pattern"):
        SettingsResolver(CliOverrides(extend_exclude=("!",)), cwd=tmp_path)


# -- command line over config -------------------------------------------------------------------------------------

def test_command_line_select_starts_afresh(project: Path) -> None:
    # The config's ignore of GA203 goes with its select, as in Ruff.
    settings = resolve(project / "src" / "pkg" / "train.py", project, select=("GA20",))
    assert on(settings.selection) == {"GA001", "GA201", "GA202", "GA203", "GA204"}


def test_command_line_ignore_and_extend_select_add_to_the_config(project: Path) -> None:
    settings = resolve(project / "src" / "pkg" / "train.py", project,
                       ignore=("GA201",), extend_select=("GA101", "GA002"))
    assert on(settings.selection) == {"GA001", "GA002", "GA101", "GA202", "GA204"}


def test_config_extend_select_turns_on_opt_in_codes(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.gacclint]\nextend-select = ['GA002']\n")
    assert resolve(tmp_path / "x.py", tmp_path).selection.selects("GA002")


@pytest.mark.parametrize(("configured", "given", "result"), [
    (None, None, False), ("true", None, True), ("true", False, False), ("false", True, True), (None, True, True),
])
def test_unsafe_fixes(tmp_path: Path, configured: str | None, given: bool | None, result: bool) -> None:
    write(tmp_path / "pyproject.toml", "[tool.gacclint]\n" + (f"unsafe-fixes = {configured}\n" if configured else ""))
    assert resolve(tmp_path / "x.py", tmp_path, unsafe_fixes=given).unsafe_fixes is result


# -- per-file ignores ---------------------------------------------------------------------------------------------

@pytest.fixture
def ignoring(tmp_path: Path) -> Settings:
    write(tmp_path / "pyproject.toml", """\
        [tool.gacclint]
        select = ["GA202", "GA101"]
        [tool.gacclint.per-file-ignores]
        "tests/**" = ["GA2"]
        "test_*.py" = ["GA101"]
        "scripts/*.py" = ["GA202"]
        "!src/**" = ["GA101"]
    """)
    return resolve(tmp_path, tmp_path)


@pytest.mark.parametrize(("path", "selected"), [
    ("src/train.py", {"GA001", "GA101", "GA202"}),
    ("src/deep/test_train.py", {"GA001", "GA202"}),          # a pattern without a slash matches the name anywhere
    ("tests/unit/loop.py", {"GA001"}),                       # GA2 beats the exact GA202; !src/** takes GA101
    ("scripts/run.py", {"GA001"}),
    ("scripts/sub/run.py", {"GA001", "GA202"}),              # `*` does not cross a `/`
    ("train.py", {"GA001", "GA202"}),                        # not under src/
])
def test_per_file_ignores(ignoring: Settings, path: str, selected: set[str]) -> None:
    assert on(ignoring.selection_for(ignoring.root / path)) == selected


def test_per_file_patterns_are_relative_to_the_config_not_the_current_directory(tmp_path: Path) -> None:
    write(tmp_path / "proj" / "pyproject.toml", "[tool.gacclint]\nper-file-ignores = { 'tests/*' = ['GA2'] }\n")
    settings = resolve(tmp_path / "proj" / "tests" / "t.py", tmp_path / "proj" / "tests")
    assert not settings.selection_for(Path("t.py")).selects("GA202")
    assert settings.selection_for(Path("../src/t.py")).selects("GA202")


def test_command_line_per_file_ignores_add_and_are_relative_to_the_current_directory(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.gacclint]\nper-file-ignores = { 'a.py' = ['GA101'] }\n")
    settings = resolve(tmp_path, tmp_path / "sub", per_file_ignores=(("gen/*.py", ("ga2",)),))
    gen = settings.selection_for(tmp_path / "sub" / "gen" / "a.py")
    assert not gen.selects("GA101") and not gen.selects("GA202")
    assert settings.selection_for(tmp_path / "gen" / "b.py").selects("GA202")


def test_selection_for_is_memoised(ignoring: Settings) -> None:
    first = ignoring.selection_for(ignoring.root / "tests" / "a.py")
    assert ignoring.selection_for(Path("tests/a.py")) is first
    assert ignoring.selection_for(Path("src/../tests/a.py")) is first


# -- excludes ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    ".git", "venv", ".venv/lib/x.py", "pkg/__pycache__", "build", "src/build/lib/x.py", "demo.egg-info",
    "notebooks/.ipynb_checkpoints/a.py", "web/node_modules", ".gacclint_cache", "lib/site-packages/torch/x.py",
])
def test_default_excludes_match_at_any_depth(tmp_path: Path, path: str) -> None:
    assert resolve(tmp_path, tmp_path).is_excluded(tmp_path / path, is_dir=not path.endswith(".py"))


@pytest.mark.parametrize("path", ["src/train.py", "builder/x.py", "src/environment.py", "envs"])
def test_other_paths_are_not_excluded(tmp_path: Path, path: str) -> None:
    assert not resolve(tmp_path, tmp_path).is_excluded(tmp_path / path, is_dir=not path.endswith(".py"))


def test_the_root_itself_is_never_excluded(tmp_path: Path) -> None:
    write(tmp_path / "build" / "pyproject.toml", "[tool.gacclint]\n")
    settings = resolve(tmp_path / "build" / "x.py", tmp_path / "build")
    assert not settings.is_excluded(tmp_path / "build") and not settings.is_excluded(tmp_path / "build" / "x.py")


def test_is_excluded_stats_when_not_told(tmp_path: Path) -> None:
    settings = resolve(tmp_path, tmp_path, extend_exclude=("gen/",))
    (tmp_path / "gen").mkdir()
    write(tmp_path / "other" / "gen")
    assert settings.is_excluded(Path("gen"))
    assert not settings.is_excluded(Path("other/gen"))  # a file: folder-only patterns pass it


def test_exclude_replaces_the_defaults(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.gacclint]\nexclude = ['generated/', '/setup.py']\n")
    settings = resolve(tmp_path, tmp_path)
    assert not settings.is_excluded(tmp_path / "build", is_dir=True)
    assert settings.is_excluded(tmp_path / "src" / "generated" / "a.py", is_dir=False)
    assert settings.is_excluded(tmp_path / "setup.py", is_dir=False)
    assert not settings.is_excluded(tmp_path / "src" / "setup.py", is_dir=False)  # anchored by its leading slash


def test_extend_exclude_adds_and_can_re_include_with_a_negation(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.gacclint]\nextend-exclude = ['legacy_*.py', '!build']\n")
    settings = resolve(tmp_path, tmp_path)
    assert settings.is_excluded(tmp_path / "pkg" / "legacy_loop.py", is_dir=False)
    assert not settings.is_excluded(tmp_path / "build", is_dir=True)
    assert settings.is_excluded(tmp_path / "dist", is_dir=True)


def test_a_path_in_an_excluded_folder_cannot_be_re_included(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.gacclint]\nextend-exclude = ['!build/keep.py']\n")
    assert resolve(tmp_path, tmp_path).is_excluded(tmp_path / "build" / "keep.py", is_dir=False)


def test_command_line_exclude_replaces_and_is_relative_to_the_current_directory(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.gacclint]\nexclude = ['a.py']\nextend-exclude = ['b.py']\n")
    settings = resolve(tmp_path, tmp_path / "src", exclude=("gen/x.py",), extend_exclude=("c.py",))
    assert [settings.is_excluded(tmp_path / name, is_dir=False) for name in ("a.py", "b.py", "c.py")] == [
        False, True, True]
    assert settings.is_excluded(tmp_path / "src" / "gen" / "x.py", is_dir=False)
    assert not settings.is_excluded(tmp_path / "gen" / "x.py", is_dir=False)
    assert not settings.is_excluded(tmp_path / "build", is_dir=True)


def test_command_line_extend_exclude_keeps_the_defaults(tmp_path: Path) -> None:
    settings = resolve(tmp_path, tmp_path, extend_exclude=("*_pb2.py",))
    assert settings.is_excluded(tmp_path / "proto" / "a_pb2.py", is_dir=False)
    assert settings.is_excluded(tmp_path / "venv", is_dir=True)


def test_a_path_outside_the_root_is_matched_by_its_name(tmp_path: Path) -> None:
    write(tmp_path / "proj" / "pyproject.toml", "[tool.gacclint]\nextend-exclude = ['gen/x.py', 'y.py']\n")
    settings = resolve(tmp_path / "proj", tmp_path, config=tmp_path / "proj" / "pyproject.toml")
    assert settings.is_excluded(tmp_path / "other" / "y.py", is_dir=False)
    assert not settings.is_excluded(tmp_path / "gen" / "x.py", is_dir=False)
    assert not settings.is_excluded(tmp_path / "build" / "z.py", is_dir=False)


def test_the_default_excludes_are_the_documented_ones() -> None:
    documented = {".git", "venv", "build", "dist", "*.egg-info", ".gacclint_cache", ".ipynb_checkpoints"}
    assert documented <= set(DEFAULT_EXCLUDES)


# -- fingerprint ---------------------------------------------------------------------------------------------------

def test_the_fingerprint_is_stable_and_follows_what_changes_results(project: Path) -> None:
    train = project / "src" / "pkg" / "train.py"
    base = resolve(train, project)
    assert base.fingerprint() == resolve(train, project / "src").fingerprint()
    assert base == resolve(train, project)
    variants = [
        resolve(train, project, extend_select=("GA101",)),
        resolve(train, project, unsafe_fixes=True),
        resolve(train, project, per_file_ignores=(("*.py", ("GA2",)),)),
        resolve(train, project, extend_exclude=("gen",)),
    ]
    assert len({base.fingerprint(), *(variant.fingerprint() for variant in variants)}) == 5
