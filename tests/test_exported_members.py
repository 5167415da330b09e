"""The public API is what ``hookgate.__all__`` says, no more and no less (httpx's test_exported_members)."""

from __future__ import annotations

import hookgate

PUBLIC = {
    "Param",
    "PluginError",
    "Preset",
    "Response",
    "Settings",
    "Verdict",
    "__version__",
    "create_app",
    "hookimpl",
    "load_preset",
}


def test_all_is_the_declared_public_api():
    assert set(hookgate.__all__) == PUBLIC
    assert len(hookgate.__all__) == len(PUBLIC)


def test_every_exported_name_exists_and_comes_from_hookgate():
    for name in hookgate.__all__:
        member = getattr(hookgate, name)
        if name not in ("__version__", "hookimpl"):
            assert member.__module__.startswith("hookgate."), name


def test_the_plugin_marker_belongs_to_hookgates_pluggy_project():
    assert hookgate.hookimpl.project_name == "hookgate"


def test_builtin_plugins_import_nothing_but_the_public_api():
    """The built-in plugins are written the way a third-party package must be: ``from hookgate import``."""
    import ast
    from pathlib import Path

    folder = Path(hookgate.__file__).resolve().parent.parent / "plugins"
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hookgate"):
                assert node.module == "hookgate", f"{path.name} imports {node.module}"
                assert {alias.name for alias in node.names} <= PUBLIC, path.name
