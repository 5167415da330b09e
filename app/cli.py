"""The ``hookgate`` command: ``up`` (everything, zero setup), ``web``, ``worker``; presets, export and
import here, deliveries and replay in ``cli_ops``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TextIO

import click
import requests

from . import runtime
from .api.presets import summary
from .cli_ops import deliveries, replay, store_settings
from .config import Settings
from .delivery.worker import run_burst, run_worker
from .embedded import STORE_NAME, EmbeddedServer, EmbeddedStoreError, exit_status
from .errors import HookgateError
from .exchange import export_document, import_document
from .lifetime import own_session_dying_with_parent
from .logs import configure_logging, say
from .plugins import PluginError, load
from .presets import PresetCatalog, public_preset
from .secrets import generate_key
from .store import describe, open_store
from .web import WebServer, gunicorn_options

__all__ = ["main"]

LOOPBACK = "127.0.0.0/8,::1/128"


@click.group()
@click.version_option(package_name="hookgate", prog_name="hookgate")
def main() -> None:
    """hookgate: a webhook gateway."""


main.add_command(deliveries)
main.add_command(replay)


@main.command()
@click.option("--bind", default=None, help="host:port for the API (default: HOOKGATE_BIND or 127.0.0.1:8000)")
@click.option("--workers", type=int, default=None, help="web worker processes (default: HOOKGATE_WEB_WORKERS)")
def web(bind: str | None, workers: int | None) -> None:
    """Serve the API with gunicorn (the same as `gunicorn wsgi:app`)."""
    options = gunicorn_options()
    if bind:
        options["bind"] = bind
    if workers:
        options["workers"] = workers
    WebServer(options).run()


@main.command()
@click.option("--burst", is_flag=True, help="deliver what is due, then exit")
@click.option("--name", default=None, help="worker name shown by `rq info`")
def worker(burst: bool, name: str | None) -> None:
    """Deliver: an RQ worker, hookgate's ticker (retries, expired leases) and the delivery engine."""
    settings = store_settings()
    configure_logging(settings)
    rt = runtime.Runtime(settings)
    say(f"hookgate worker: store {describe(settings)}", err=True)
    rt.load_plugins()  # a misspelt hook or a clashing preset stops the worker before it takes work
    runtime.install(rt)
    if burst:
        run_burst(rt, name)
    else:
        run_worker(rt, name)


def _secret_file(path: Path, make: Callable[[], str]) -> str:
    if path.exists():
        return path.read_text().strip()
    path.write_text(make())
    path.chmod(0o600)
    return path.read_text().strip()


STORE_GRACE_S = 10.0  # a child that exits this soon after the store came back exited because it was gone


def _start_store(server: EmbeddedServer) -> None:
    try:
        server.start(preexec_fn=own_session_dying_with_parent)
    except EmbeddedStoreError as exc:
        raise click.ClickException(str(exc)) from None


class _Supervisor:
    """Starts the children, restarts one that dies, and stops every one of them (process groups).

    With ``store`` (the embedded Valkey) it restarts the store too, first (on its port and data
    directory; ``up`` stops if it cannot start). A child that exits while the store is down, or
    within ``STORE_GRACE_S`` of its return, is restarted without counting towards "keeps exiting".
    """

    def __init__(self, commands: dict[str, list[str]], env: dict[str, str], store: EmbeddedServer | None = None):
        self.commands = commands
        self.env = env
        self.store = store
        self.children: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, list[float]] = {}
        self.store_outage_until = 0.0

    def start(self, name: str) -> None:
        self.children[name] = subprocess.Popen(self.commands[name], env=self.env,
                                               preexec_fn=own_session_dying_with_parent)

    def check(self) -> None:
        self._check_store()
        for name, child in list(self.children.items()):
            if child.poll() is None:
                continue
            if time.monotonic() < self.store_outage_until:
                say(f"hookgate: {name} {exit_status(child.returncode)} while {STORE_NAME} was away; "
                    "restarting it", err=True)
                self.start(name)
                continue
            recent = [t for t in self.restarts.get(name, []) if time.monotonic() - t < 60]
            if len(recent) >= 5:
                raise click.ClickException(f"{name} keeps exiting (it {exit_status(child.returncode)}); stopping")
            say(f"hookgate: {name} {exit_status(child.returncode)}; restarting it", err=True, level=logging.WARNING)
            self.restarts[name] = recent + [time.monotonic()]
            self.start(name)

    def _check_store(self) -> None:
        store = self.store
        if store is None or store.process is None or store.process.poll() is None:
            return
        status = exit_status(store.process.returncode)
        recent = [t for t in self.restarts.get(STORE_NAME, []) if time.monotonic() - t < 60]
        if len(recent) >= 5:
            raise click.ClickException(f"{STORE_NAME} keeps exiting (it {status}); stopping")
        self.restarts[STORE_NAME] = recent + [time.monotonic()]
        say(f"hookgate: {STORE_NAME} (pid {store.process.pid}) {status}; restarting it on "
            f"{store.host}:{store.port} with its data in {store.directory}", err=True, level=logging.WARNING)
        began = time.monotonic()
        self.store_outage_until = float("inf")
        _start_store(store)
        self.store_outage_until = time.monotonic() + STORE_GRACE_S
        say(f"hookgate: {STORE_NAME} is back (pid {store.process.pid}, answering "
            f"{time.monotonic() - began:.1f} s after its restart, its append-only file replayed)", err=True)

    def stop(self, timeout: float = 15.0) -> None:
        for child in self.children.values():
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(max(0.1, deadline - time.monotonic()))
        for child in self.children.values():
            _signal_group(child, signal.SIGKILL)  # whatever is left, grandchildren included
            child.wait()


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


def _wait_healthy(url: str, supervisor: _Supervisor, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervisor.check()
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise click.ClickException(f"the API did not answer at {url} within {timeout:.0f}s")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address the API listens on")
@click.option("--port", default=8000, show_default=True, type=int, help="port the API listens on")
@click.option("--workers", "worker_count", default=1, show_default=True, type=int, help="delivery workers")
@click.option("--web-workers", default=2, show_default=True, type=int, help="gunicorn worker processes")
@click.option("--data-dir", default=None, help="where data lives (default: HOOKGATE_DATA_DIR or ./var)")
@click.option("--store-port", default=None, type=int, help="port of the embedded Valkey (default: a free one)")
def up(host: str, port: int, worker_count: int, web_workers: int, data_dir: str | None,
       store_port: int | None) -> None:
    """Run everything: the embedded store (unless HOOKGATE_REDIS_URL is set), the API and workers."""
    settings = Settings.from_env()
    configure_logging(settings)
    data = Path(data_dir or settings.data_dir).resolve()
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = dict(os.environ, HOOKGATE_DATA_DIR=str(data))

    server = None
    if settings.external_store:
        say(f"store: {describe(settings)}")
    else:
        server = EmbeddedServer(data, port=store_port)
        _start_store(server)
        env["HOOKGATE_REDIS_URL"] = server.url
        say(f"store: embedded Valkey at {server.shown_url} (data in {server.directory})")

    token = settings.admin_token or _secret_file(data / "admin_token", lambda: "hga_" + secrets.token_urlsafe(32))
    env["HOOKGATE_ADMIN_TOKEN"] = token
    if not settings.secret_key:
        env["HOOKGATE_SECRET_KEY"] = _secret_file(data / "secret_key", generate_key)
    if not os.environ.get("HOOKGATE_ALLOWED_NETWORKS"):
        env["HOOKGATE_ALLOWED_NETWORKS"] = LOOPBACK
        say(f"note: deliveries to loopback ({LOOPBACK}) are allowed for local testing; "
            "set HOOKGATE_ALLOWED_NETWORKS to change that")

    me = [sys.executable, "-m", "hookgate.cli"]
    commands = {"web": me + ["web", "--bind", f"{host}:{port}", "--workers", str(web_workers)]}
    for n in range(worker_count):
        commands[f"worker-{n + 1}"] = me + ["worker"]
    supervisor = _Supervisor(commands, env, server)

    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        for name in commands:
            supervisor.start(name)
        api = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        _wait_healthy(f"{api}/healthz", supervisor)
        say(f"hookgate is up: API {api}  ({worker_count} worker(s))")
        say(f"admin token: {token}", logged="admin token: " + (  # a log keeps no secret
            "HOOKGATE_ADMIN_TOKEN" if settings.admin_token else f"in {data / 'admin_token'}"))
        say("Ctrl-C stops everything.")
        while not stopping:
            supervisor.check()
            time.sleep(0.2)
    finally:
        say("hookgate: stopping", err=True)
        supervisor.stop()
        if server is not None:
            server.stop()
        say("hookgate: stopped", err=True)


def _catalog() -> PresetCatalog:
    """The presets this installation has: plugins' and users' (from the store; see ``store_settings``)."""
    settings = store_settings()
    try:
        plugins = load(settings.blocked_plugins)
    except PluginError as exc:
        raise click.ClickException(str(exc)) from None
    return PresetCatalog(open_store(settings), plugins.presets)


@main.group()
def presets() -> None:
    """The presets plugins and users provide."""


@presets.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON, as GET /v1/presets does")
def presets_list(as_json: bool) -> None:
    """One line per preset: name, origin, method and format, title."""
    items = _catalog().all()
    if as_json:
        click.echo(json.dumps({"items": [summary(p) for p in items]}, indent=2))
        return
    width = max((len(p.name) for p in items), default=10)
    for preset in items:
        shape = f"{preset.method} {preset.format}{' batch' if preset.batch else ''}"
        click.echo(f"{preset.name:<{width}}  {preset.origin:<8}  {shape:<16}  {preset.title}")


@presets.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON, as GET /v1/presets/<name> does")
def presets_show(name: str, as_json: bool) -> None:
    """A preset's parameters (their meaning, required, secret), request shape, auth and example."""
    preset = _catalog().find(name)
    if preset is None:
        raise click.ClickException(f"no preset {name!r}; `hookgate presets list` shows them")
    shown = public_preset(preset)
    if as_json:
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    for line in preset_text(shown):
        click.echo(line)


def _param_line(param: dict) -> list[str]:
    flags = ", ".join(f for f in ("required" if param["required"] else "optional",
                                  "secret" if param["secret"] else "") if f)
    head = f"  {param['name']} ({param['type']}; {flags})"
    lines = [head + (f"  {param['description']}" if param.get("description") else "")]
    details = []
    if param.get("default") is not None:
        details.append(f"default {json.dumps(param['default'], ensure_ascii=False)}")
    if param.get("choices"):
        details.append("one of " + ", ".join(json.dumps(c, ensure_ascii=False) for c in param["choices"]))
    details += [f"{bound} {param[bound]}" for bound in ("minimum", "maximum", "max_length") if bound in param]
    if details:
        lines.append("      " + "; ".join(details))
    return lines


def preset_text(shown: dict) -> list[str]:
    """A preset as ``public_preset`` shows it, for a person to read."""
    lines = [f"{shown['name']}: {shown.get('title', '')}  ({shown['origin']})"]
    if shown.get("description"):
        lines.append(shown["description"])
    lines.append(f"request: {shown.get('method', 'POST')} {shown['url_pattern']}  ({shown.get('format', 'json')}"
                 f"{', batch' if shown.get('batch') else ''})")
    lines.append(f"auth: {(shown.get('auth') or {}).get('type', 'none')}")
    if shown.get("docs_url"):
        lines.append(f"docs: {shown['docs_url']}")
    lines.append("parameters:" if shown["params"] else "parameters: none")
    for param in shown["params"]:
        lines += _param_line(param)
    example = shown.get("example") or {}
    if example.get("url"):
        lines.append(f"example: {example.get('method', '')} {example['url']}")
    return lines


def _store_catalog() -> PresetCatalog:
    """The preset catalog with the store behind it (``store_settings`` says which)."""
    return _catalog()


@main.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="write the document to this file (default: print it)")
def export_command(output: str | None) -> None:
    """Policies, auth profiles, user presets and destinations as JSON, without secrets (GET /v1/export)."""
    catalog = _store_catalog()
    text = json.dumps(export_document(catalog.db, catalog), indent=2, ensure_ascii=False)
    if output:
        Path(output).write_text(text + "\n")
        click.echo(f"exported to {output}", err=True)
    else:
        click.echo(text)


@main.command("import")
@click.argument("file", type=click.File("r"))
@click.option("--mode", type=click.Choice(["overwrite", "skip"]), default="overwrite", show_default=True,
              help="what to do with ids this instance already has")
def import_command(file: TextIO, mode: str) -> None:
    """Import an export (all or nothing) and print the report: what was imported, what needs secrets."""
    catalog = _store_catalog()
    try:
        document = json.load(file)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{file.name} is not JSON: {exc}") from None
    settings = Settings.from_env()
    try:
        report = import_document(catalog.db, catalog, document, mode=mode, https_only=settings.https_only)
    except HookgateError as exc:
        click.echo(json.dumps(exc.to_dict(), indent=2, ensure_ascii=False))
        raise click.ClickException(exc.message) from None
    click.echo(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
