"""What the package installs: one import package, ``hookgate``, servable from anywhere.

A regular (not editable) install goes into a directory of its own, so these tests see exactly what a
wheel puts into site-packages, not the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .processes import ROOT, free_port, stop_group, wait_http

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True)
    return target


def test_the_package_list_names_every_folder_of_the_source_tree():
    mapped = PYPROJECT["tool"]["setuptools"]["package-dir"]
    found = {"hookgate"}
    for name, folder in mapped.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                relative = init.parent.relative_to(ROOT / folder).parts
                found.add(".".join((name, *relative)))
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == found


def test_a_regular_install_puts_only_hookgate_at_the_top_level(installed):
    top = {entry.name for entry in installed.iterdir() if entry.name not in ("bin", "__pycache__")}
    assert {name for name in top if not name.endswith(".dist-info")} == {"hookgate"}
    package = installed / "hookgate"
    assert (package / "builtin_plugins" / "slack.py").is_file()
    assert (package / "builtin_presets" / "slack.message" / "preset.json").is_file()
    assert (package / "py.typed").is_file()
    for generic in ("app", "plugins", "presets", "wsgi.py"):
        assert not (installed / generic).exists()


def test_gunicorn_serves_hookgate_wsgi_from_anywhere(installed, tmp_path, redis_url):
    """From a directory with no project files, with only the installed copy on the path."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(installed), "HOOKGATE_REDIS_URL": redis_url,
           "HOOKGATE_SECRET_KEY": "", "HOOKGATE_ADMIN_TOKEN": "hga_packaging_test_token"}
    log = tmp_path / "gunicorn.log"
    with open(log, "ab") as out:
        web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1",
                                "hookgate.wsgi:app"], cwd=tmp_path, env=env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process=web, log=log)
        where = subprocess.run([sys.executable, "-c", "import hookgate; print(hookgate.__file__)"], cwd=tmp_path,
                               env=env, capture_output=True, text=True, check=True).stdout.strip()
        assert Path(where).is_relative_to(installed)
    finally:
        stop_group(web)


def test_the_hookgate_command_is_the_package_cli():
    assert PYPROJECT["project"]["scripts"] == {"hookgate": "hookgate.cli:main"}
    answer = subprocess.run([sys.executable, "-m", "hookgate.cli", "--help"], capture_output=True, text=True,
                            cwd="/", check=True)
    assert "worker" in answer.stdout
