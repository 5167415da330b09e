"""The README stays true: every setting is documented, and CI runs the README's test command."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def settings_in_code() -> set[str]:
    found: set[str] = set()
    for path in [*ROOT.glob("app/**/*.py"), ROOT / "gunicorn.conf.py", ROOT / "wsgi.py"]:
        found |= set(re.findall(r"HOOKGATE_[A-Z_]+[A-Z]", path.read_text()))
    return found


def test_every_setting_in_the_code_is_in_the_configuration_table():
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(HOOKGATE_[A-Z_]+)`", table))
    assert settings_in_code() - documented == set()
    assert documented - settings_in_code() == set()


def test_the_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    commands = re.findall(r"```sh\n(.+?)\n```", README.split("---", 1)[0])
    assert len(commands) == 2
    run, test = commands
    assert run.endswith("hookgate up") and "pytest" in test
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == test


def section(title: str) -> str:
    return README.split(f"\n{title}\n", 1)[1].split("\n#", 1)[0]


def test_every_hook_is_documented_with_its_exact_signature():
    from hookgate import hookspecs

    table = section("### Writing a plugin")
    specs = [name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "hookgate_spec")]
    assert sorted(specs) == ["classify_response", "register_presets", "register_template_filters",
                             "register_template_globals"]
    for name in specs:
        signature = f"`{name}({', '.join(inspect.signature(getattr(hookspecs, name)).parameters)})`"
        assert signature in table, signature
    documented = set(re.findall(r"^\| `(\w+)\(", table, re.M))
    assert documented == set(specs)


def test_the_readme_documents_the_public_api_and_the_example_uses_only_it():
    import hookgate

    table = section("### The public API")
    assert set(re.findall(r"^\| `(\w+)`", table, re.M)) == set(hookgate.__all__)
    example = (ROOT / "tests/data/example_plugin/hookgate_example.py").read_text()
    assert re.findall(r"^(?:from|import) hookgate\S*", example, re.M) == ["from hookgate"]
    assert "from hookgate import Param, Preset, Verdict, hookimpl" in README


def test_the_module_map_names_every_module_and_only_modules_that_exist():
    block = section("## Development").split("```\napp/", 1)[1].split("```", 1)[0]
    words = set(re.findall(r"[a-z_]+(?:\.py)?", block))
    for path in (ROOT / "app").rglob("*.py"):
        if path.name != "__init__.py" or path.parent == ROOT / "app":
            assert path.name in words or path.stem in words, f"{path.relative_to(ROOT)} is not in the module map"
    for folder in [p for p in (ROOT / "app").iterdir() if (p / "__init__.py").is_file()]:
        assert f"{folder.name}/" in block, folder.name
    for named in re.findall(r"\b([a-z_]+\.py)\b", block):
        assert list((ROOT / "app").rglob(named)) or (ROOT / named).is_file(), f"{named} does not exist"
