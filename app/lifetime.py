"""Child processes that die with the process that started them (Linux).

No process outlives the one that started it: `hookgate up`'s children (the store, the API, the
workers) and a worker's or a web process's render processes (render_guard.py) are started with
``die_with_parent`` run in the child before it executes its program: the kernel sends it SIGTERM
when its parent dies, SIGKILL included (``PR_SET_PDEATHSIG``).

The kernel means the parent *thread*: the signal comes when the thread that forked the child ends,
not the process. `hookgate up` starts its children from its main thread, which lives as long as it
does; a process with threads that come and go (a lane's, a request's in the Flask development
server) starts its children through ``spawn``, which forks from one long-lived thread of its own.

A parent that died before the child set its death signal cannot send it: the child checks that its
parent is still the process that started it, and ends itself if not.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import os
import queue
import signal
import subprocess
import threading
from typing import Any

__all__ = ["die_with_parent", "own_session_dying_with_parent", "spawn"]

PR_SET_PDEATHSIG = 1

try:  # loaded here, in the parent: a child between fork and exec must not load a library
    _libc: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc Linux: children end when their pipes close, as before
    _libc = None


def die_with_parent(parent_pid: int | None = None) -> None:
    """In a child, before its program starts (``preexec_fn``): SIGTERM when its parent dies. With
    ``parent_pid``, a child whose parent is already gone ends at once."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def own_session_dying_with_parent() -> None:
    """``die_with_parent`` in a session of the child's own (`hookgate up`'s children: a Ctrl-C meant
    for `up` reaches them only through `up`, which stops them in order)."""
    parent = os.getppid()
    os.setsid()
    die_with_parent(parent)


class _Spawner:
    """One thread per process that forks every child ``spawn`` is asked for (started when first
    needed, and again in a forked process, where the parent's thread does not exist)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._requests: queue.SimpleQueue[tuple[list[str], dict[str, Any], concurrent.futures.Future]] = \
            queue.SimpleQueue()

    def popen(self, command: list[str], kwargs: dict[str, Any]) -> subprocess.Popen:
        done: concurrent.futures.Future[subprocess.Popen] = concurrent.futures.Future()
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._requests = queue.SimpleQueue()
                threading.Thread(target=self._run, args=(self._requests,), name="hookgate-spawner",
                                 daemon=True).start()
            self._requests.put((command, kwargs, done))
        return done.result()

    @staticmethod
    def _run(requests: queue.SimpleQueue) -> None:
        while True:
            command, kwargs, done = requests.get()
            try:
                process = subprocess.Popen(command, preexec_fn=functools.partial(die_with_parent, os.getpid()),
                                           **kwargs)
            except BaseException as exc:  # handed to the caller, whose error it is
                done.set_exception(exc)
            else:
                done.set_result(process)


_spawner = _Spawner()


def spawn(command: list[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(command, **kwargs)`` whose child gets SIGTERM when this process dies."""
    return _spawner.popen(command, kwargs)
