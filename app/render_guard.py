"""A hard limit for code that may not stop by itself: a pool of child processes, each under the
kernel's RLIMIT_AS and RLIMIT_CPU, one request at a time, killed and replaced when it overruns.

Why processes: one C-level operation cannot be stopped from inside Python (a comparison of two
lists of long strings runs for seconds in one bytecode, no deadline check in between), and memory a
render took is not given back to the system reliably. A child can be killed, and the kernel holds
its limits whatever runs in it.

Why ``subprocess`` rather than ``multiprocessing``: a child is a fresh interpreter (fork + exec, as
``subprocess.Popen`` does it), which is safe from a process with threads (gunicorn's threaded
workers, RQ's, the sender's event loop): nothing of the caller's state is forked, no lock another
thread held is copied. multiprocessing's ``fork`` copies that state, and its ``forkserver`` keeps a
server per process whose state a fork (gunicorn's workers) inherits and cannot use.

The protocol, over the child's stdin and stdout (the child moves its own stdout to stderr, so a
stray print cannot corrupt it): frames of a 4-byte big-endian length and a payload. The parent
sends a setup frame, the child answers ``READY``; then each request is a frame of the timeout (a
double) and the payload, and the answer a frame whose first byte says what it is: ``OK`` (the
handler's reply), ``FAILED`` (the handler raised), ``OUT_OF_MEMORY`` or ``OUT_OF_MEMORY_EXITING``
(the child exits after it).

Limits: the child sets RLIMIT_AS to its size after setup plus ``max_memory``. A MemoryError is
answered; the child goes on if its resident size came back to within a quarter of ``max_memory``
of where it started (large blocks go back to the system when freed), and otherwise exits, to be
replaced by a fresh one (a start costs ~0.6 s of CPU time, so it is not done for nothing). Before each request
RLIMIT_CPU to its CPU time so far plus the timeout, rounded up, plus a second: if the parent is gone
or stuck, the kernel still stops it. The parent waits ``timeout + GRACE_S`` for each answer (the
handler's own deadline comes first) and then kills the child; a killed child is replaced at once,
so the next request finds one starting or ready. A child whose parent exits reads end-of-file and
exits; one whose parent is killed gets SIGTERM from the kernel (``lifetime.spawn``), even in the
middle of a render.

Fork safety: a pool in a forked child (gunicorn forks workers, RQ's forking worker forks a horse)
forgets the children it inherited: it closes its copies of their pipes (so they still see
end-of-file when their real parent exits) and never signals or waits for them; its next request
starts children of its own.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import resource
import select
import signal
import struct
import subprocess
import threading
import time
import weakref
from collections.abc import Callable

from .lifetime import spawn

__all__ = ["GuardError", "Overrun", "Pool", "serve"]

log = logging.getLogger(__name__)

GRACE_S = 0.5  # past the request's timeout before the parent kills: the handler's own deadline fires first
SPAWN_TIMEOUT_S = 60.0  # a child's start-up (a fresh interpreter and its imports) is not the request's time
READY, OK, FAILED, OUT_OF_MEMORY, OUT_OF_MEMORY_EXITING = b"r", b"o", b"f", b"m", b"M"
_HEADER = struct.Struct(">I")
_TIMEOUT = struct.Struct(">d")


class GuardError(Exception):
    """A request did not get an answer from its child: the message says why (it reads after
    "the request": "took longer than 1 s")."""


class Overrun(GuardError):
    """The request hit a hard limit (memory, time, CPU); its child was replaced."""


# -- frames ----------------------------------------------------------------------------------------------

def _write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(_HEADER.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data):]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    """``size`` bytes from ``fd``; ``TimeoutError`` past ``deadline``, ``EOFError`` if it closes first."""
    chunks: list[bytes] = []
    poller = select.poll() if deadline is not None else None
    if poller is not None:
        poller.register(fd, select.POLLIN)
    while size:
        if poller is not None and deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if not poller.poll(math.ceil(remaining * 1000)):
                continue
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float | None = None) -> bytes:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    return _read_exact(fd, size, deadline)


# -- the parent's side -----------------------------------------------------------------------------------

class _Child:
    """One child process, used by one thread at a time."""

    def __init__(self, command: list[str], setup: bytes, generation: int):
        self.generation = generation
        self.ready = False
        # In a session of its own (Ctrl-C is the parent's to handle), and it dies with the parent.
        self.proc = spawn(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True,
                          start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.to_child, self.from_child = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        with contextlib.suppress(BrokenPipeError):  # it died at once: its first exchange says how
            _write_frame(self.to_child, setup)  # small (functions by name): it fits the pipe while the child starts

    def exchange(self, payload: bytes, timeout_s: float) -> bytes:
        """Send one request and return the answer. Raises ``GuardError``; the child is then dead."""
        try:
            if not self.ready:
                if _read_frame(self.from_child, time.monotonic() + SPAWN_TIMEOUT_S) != READY:
                    raise EOFError
                self.ready = True
            _write_frame(self.to_child, _TIMEOUT.pack(timeout_s) + payload)
            return _read_frame(self.from_child, time.monotonic() + timeout_s + GRACE_S)
        except TimeoutError:
            self.kill()
            if not self.ready:
                raise GuardError("found no process: one did not start in time") from None
            raise Overrun(f"took longer than {timeout_s:g} s (its process was stopped)") from None
        except (EOFError, BrokenPipeError):
            raise self._died() from None

    def _died(self) -> GuardError:
        self.kill()
        status = self.proc.returncode
        if status == -signal.SIGXCPU:
            return Overrun("used more CPU time than its limit (its process was stopped)")
        if status == -signal.SIGKILL:
            return Overrun("was killed with its process (by the system: out of memory?)")
        if not self.ready:
            return GuardError(f"found no process: one did not start (exit status {status})")
        return GuardError(f"ended with its process (exit status {status})")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.close_pipes()

    def close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class Pool:
    """Up to ``size`` children started by ``command``, each handed ``setup`` first; started when
    first needed, kept between requests, replaced when one dies or overruns, and started anew
    with the new setup after ``configure``. Safe to call from any number of threads."""

    def __init__(self, command: list[str], *, size: int = 4):
        self.command = list(command)
        self.size = size
        self._setup = b""
        self._generation = 0
        self._children: set[_Child] = set()  # every child started, idle or in use
        self._idle: list[_Child] = []
        self._count = 0  # children started and not yet stopped (and those being started)
        self._forked()
        _pools.add(self)

    def configure(self, setup: bytes) -> None:
        """What each child is handed before its first request; children started before are replaced."""
        with self._lock:
            self._setup, self._generation = setup, self._generation + 1
            stale, self._idle = self._idle, []
            self._count -= len(stale)
        for child in stale:
            self._stop(child)

    def call(self, payload: bytes, timeout_s: float) -> bytes:
        """The reply of a child's handler to ``payload``. Raises ``Overrun`` when the child hits a
        limit or takes longer than ``timeout_s`` (plus ``GRACE_S``), ``GuardError`` when it fails."""
        if self._pid != os.getpid():  # forked without the at-fork hook (it runs for os.fork only)
            self._forked()
        try:
            child = self._acquire()
        except OSError as exc:  # no process could be started (EAGAIN, ENOMEM)
            raise GuardError(f"found no process: {exc}") from None
        try:
            answer = child.exchange(payload, timeout_s)
        except GuardError:
            self._discard(child)
            raise
        except BaseException:  # raised in this thread meanwhile (RQ's job timeout): the child's state is unknown
            self._discard(child, replace=False)
            raise
        kind, body = answer[:1], answer[1:]
        if kind == OUT_OF_MEMORY_EXITING:
            self._discard(child)  # it exits by itself after answering
        else:
            self._release(child)
        if kind in (OUT_OF_MEMORY, OUT_OF_MEMORY_EXITING):
            raise Overrun(body.decode("utf-8", "replace"))
        if kind == FAILED:
            raise GuardError("failed in its process: " + body.decode("utf-8", "replace"))
        return body

    def close(self) -> None:
        """Stop the idle children (the busy ones stop when they are handed back)."""
        self.configure(self._setup)

    def _acquire(self) -> _Child:
        with self._lock:
            while not self._idle and self._count >= self.size:
                self._returned.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
            setup, generation = self._setup, self._generation
        try:
            return self._start(setup, generation)
        except BaseException:
            with self._lock:
                self._count -= 1
                self._returned.notify()
            raise

    def _start(self, setup: bytes, generation: int) -> _Child:
        child = _Child(self.command, setup, generation)
        self._children.add(child)
        return child

    def _release(self, child: _Child) -> None:
        with self._lock:
            if child.generation == self._generation:
                self._idle.append(child)
                self._returned.notify()
                return
            self._count -= 1
            self._returned.notify()
        self._stop(child)

    def _stop(self, child: _Child) -> None:
        child.kill()
        self._children.discard(child)

    def _discard(self, child: _Child, *, replace: bool = True) -> None:
        """A child that died or was killed: reap it, and start its replacement now, so that it is
        ready (or nearly) when the next request comes."""
        self._stop(child)
        with self._lock:
            self._count -= 1
            setup, generation = self._setup, self._generation
            if not replace or self._count >= self.size:
                self._returned.notify()
                return
            self._count += 1
        try:
            replacement = self._start(setup, generation)
        except OSError:
            log.exception("could not start a render process")
            with self._lock:
                self._count -= 1
                self._returned.notify()
            return
        self._release(replacement)

    def _forked(self) -> None:
        """At creation, and in a forked child: the inherited children are the parent's, not ours."""
        inherited = list(self._children)  # idle ones, and those other threads were using
        for child in inherited:
            child.close_pipes()  # our copies only: the parent's pipes stay open
        _abandoned.extend(inherited)  # never waited for or signalled: they are not our children
        self._children, self._idle, self._count = set(), [], 0
        self._lock = threading.Lock()  # a lock another thread held at the fork stays held in the child
        self._returned = threading.Condition(self._lock)
        self._pid = os.getpid()


_pools: weakref.WeakSet[Pool] = weakref.WeakSet()
_abandoned: list[_Child] = []


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the child's side ------------------------------------------------------------------------------------

def serve(setup: Callable[[bytes], None], handle: Callable[[bytes], bytes], *, max_memory: int) -> None:
    """A child's main loop: ``setup`` with the first frame, then ``handle`` each request, under the
    limits, until the parent closes the pipe."""
    requests, answers = os.dup(0), os.dup(1)
    os.dup2(2, 1)  # a print in a handler goes to stderr, not into the protocol
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would dump core
    message = f"used more than {max_memory >> 20} MiB of memory".encode()  # made now: none may be left then
    try:
        setup(_read_frame(requests))
        size, resident = _sizes()
        _limit(resource.RLIMIT_AS, size + max_memory)
        _write_frame(answers, READY)
        while True:
            frame = _read_frame(requests)
            (timeout_s,) = _TIMEOUT.unpack_from(frame)
            usage = resource.getrusage(resource.RUSAGE_SELF)  # the kernel counts CPU time in whole seconds
            _limit(resource.RLIMIT_CPU, math.ceil(usage.ru_utime + usage.ru_stime + timeout_s + GRACE_S) + 1)
            answer = _answer(handle, frame[_TIMEOUT.size:])
            if answer == OUT_OF_MEMORY:
                gc.collect()  # a render's values may be held in cycles (a generator and its context)
                bloated = _sizes()[1] > resident + max_memory // 4
                answer = (OUT_OF_MEMORY_EXITING if bloated else OUT_OF_MEMORY) + message
            _write_frame(answers, answer)
            if answer[:1] == OUT_OF_MEMORY_EXITING:
                return
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return


def _answer(handle: Callable[[bytes], bytes], payload: bytes) -> bytes:
    try:
        return OK + handle(payload)
    except MemoryError:
        return OUT_OF_MEMORY
    except Exception as exc:  # the handler's own failure: the parent reports it
        return FAILED + f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")


def _sizes() -> tuple[int, int]:
    """This process's address space and resident size, in bytes."""
    with open("/proc/self/statm") as statm:
        pages = statm.read().split()
    page = os.sysconf("SC_PAGE_SIZE")
    return int(pages[0]) * page, int(pages[1]) * page


def _limit(kind: int, soft: int) -> None:
    _, hard = resource.getrlimit(kind)
    resource.setrlimit(kind, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))

