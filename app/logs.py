"""Logging for every hookgate process: ``configure_logging(settings)``, one format for all of them.

``HOOKGATE_LOG_FORMAT=text`` (the default) keeps the plain lines a terminal reads
(``2026-12-03 14:00:00,123 INFO hookgate.attempts: …``); ``json`` makes every line one JSON object:
``time`` (RFC 3339 UTC, milliseconds), ``level``, ``logger``, ``message``, the ids the line concerns
(``event_id``, ``delivery_id``, ``destination_id``, ``source_id``) and any other field a line was given
(``extra=``), and ``exc_info`` as text inside the object, never a multi-line traceback. The API's
gunicorn logs (error and access) use it through ``GunicornLogger``, the worker's RQ loggers through
the root handler, and ``hookgate up``'s own lines through ``say``.

RQ's per-job lines ("Job OK", "result is kept …") sit below INFO: its loggers log WARNING and up
unless ``HOOKGATE_LOG_LEVEL=DEBUG``. What a delivery did is hookgate's own INFO line, one per attempt
(``log_attempt``), with ids and numbers only: no URL (it may carry a password), no body.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

import click
from gunicorn.glogging import Logger as _GunicornBase  # type: ignore[import-untyped]  # gunicorn ships no types

from .config import Settings, parse_log_format

__all__ = ["IDS", "JsonFormatter", "TEXT_FORMAT", "GunicornLogger", "configure_logging", "log_attempt",
           "rq_log_level", "say"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
IDS = ("event_id", "delivery_id", "destination_id", "source_id")
RQ_LOGGERS = ("rq.worker", "rq.job", "rq.queue", "rq.scheduler")
# What every LogRecord has: anything else on a record came from ``extra=`` and becomes a key.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

attempts = logging.getLogger("hookgate.attempts")
_format = "text"  # this process's, as configure_logging set it (for ``say``)
_cli = logging.getLogger("hookgate.cli")


_second: list[Any] = [None, ""]  # the last second formatted, and its text: one strftime a second


def _rfc3339(created: float) -> str:
    second = int(created)
    if _second[0] != second:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int(created * 1000) % 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": _rfc3339(record.created), "level": record.levelname,
                                "logger": record.name, "message": record.getMessage()}
        fields = vars(record)
        if fields.keys() - _RECORD_FIELDS:  # given with extra= (most lines have none)
            line.update((key, value) for key, value in fields.items()
                        if key not in _RECORD_FIELDS and key[0] != "_" and key not in line)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class StrayLines(io.TextIOBase):
    """stderr in json format: a line that something printed past logging (gunicorn prints why a worker
    did not boot; a plugin may print) becomes a JSON line of logger ``stderr``; JSON lines pass."""

    def __init__(self, stream: TextIO):
        super().__init__()
        self.stream = stream
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        if line.startswith("{"):
            self.stream.write(line + "\n")
        elif line.strip():
            record = logging.LogRecord("stderr", logging.ERROR, "", 0, line.rstrip("\r"), None, None)
            self.stream.write(JsonFormatter().format(record) + "\n")

    def flush(self) -> None:
        with self._lock:
            if self._partial:
                self._line(self._partial)
                self._partial = ""
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


def _catch_stray_lines() -> TextIO:
    """In json format: sys.stderr becomes a ``StrayLines`` (once); the real stream, for handlers."""
    if not isinstance(sys.stderr, StrayLines):
        sys.stderr = StrayLines(sys.stderr)
    return sys.stderr.stream


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def rq_log_level(settings: Settings) -> str:
    """The level of RQ's loggers: WARNING (its four lines a job are chatter), DEBUG when hookgate's is
    DEBUG, and hookgate's own when that is above WARNING."""
    level = settings.log_level.upper()
    if level == "DEBUG":
        return level
    return level if logging.getLevelName(level) in (logging.ERROR, logging.CRITICAL) else "WARNING"


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("hookgate").critical("uncaught %s: %s", kind.__name__, value, exc_info=(kind, value, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("hookgate").critical("uncaught %s in thread %s: %s", args.exc_type.__name__, name,
                                           args.exc_value, exc_info=(args.exc_type, args.exc_value,
                                                                     args.exc_traceback))


def _log_click_error(self: click.ClickException, file: Any = None) -> None:
    logging.getLogger("hookgate").error("%s", self.format_message())


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """This process's logging: a handler on the root logger (stderr) in ``settings.log_format``, at
    ``settings.log_level``; RQ's loggers at ``rq_log_level``. Like ``logging.basicConfig`` it leaves a
    root logger that someone else configured alone (an embedding application, pytest); called again,
    it replaces the handler it added."""
    global _format
    _format = settings.log_format
    root = logging.getLogger()
    if any(not getattr(handler, "_hookgate", False) for handler in root.handlers):
        return
    for handler in list(root.handlers):
        root.removeHandler(handler)
    real = _catch_stray_lines() if settings.log_format == "json" else sys.stderr
    handler = logging.StreamHandler(stream or real)
    handler.setFormatter(formatter(settings.log_format))
    handler._hookgate = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in RQ_LOGGERS:
        logging.getLogger(name).setLevel(rq_log_level(settings))
    if settings.log_format == "json":  # nothing may print a multi-line dump past the formatter
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_thread_uncaught
        click.ClickException.show = _log_click_error  # type: ignore[method-assign]  # `hookgate up`'s "Error: …"


def say(message: str, *, err: bool = False, level: int = logging.INFO, logged: str | None = None) -> None:
    """A line of ``hookgate up`` or ``hookgate worker`` itself (``click.echo``'s arguments): printed as it is in text
    format, a log line (logger ``hookgate.cli``; ``logged`` instead of ``message`` if given: what a
    terminal may show and a log may not) once ``configure_logging`` set json."""
    if _format == "json":
        _cli.log(level, message if logged is None else logged)
    else:
        click.echo(message, err=err)


def log_attempt(destination_id: str, delivery: dict[str, str], event: dict[str, Any], status: str,
                attempt: dict[str, Any]) -> None:
    """One INFO line an attempt: its outcome, the delivery's status, HTTP status, latency, attempt
    number and ids. Never the URL (it may carry credentials) nor a body."""
    if not attempts.isEnabledFor(logging.INFO):
        return
    code = attempt["status_code"]
    attempts.info("delivery %s to %s: attempt %d %s (%s, HTTP %s, %d ms)", delivery["id"], destination_id,
                  attempt["attempt"], attempt["outcome"], status, code if code else "-",
                  attempt["latency_ms"] or 0,
                  extra={"event_id": event.get("id") or delivery.get("event_id"), "delivery_id": delivery["id"],
                         "destination_id": destination_id, "source_id": event.get("source"),
                         "outcome": attempt["outcome"], "status": status, "status_code": code,
                         "latency_ms": attempt["latency_ms"], "attempt": attempt["attempt"]})


class GunicornLogger(_GunicornBase):
    """gunicorn's logger, its error and access lines in ``HOOKGATE_LOG_FORMAT`` (read from the
    environment: gunicorn's master reads no hookgate settings otherwise)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        try:  # this variable only: another one that is wrong is the app's to report, in this format
            json_lines = parse_log_format(os.environ.get("HOOKGATE_LOG_FORMAT") or "text") == "json"
        except ValueError:
            json_lines = False
        if not json_lines:
            return
        real = _catch_stray_lines()
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False):
                    handler.setFormatter(JsonFormatter())
                    if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                        handler.setStream(real)
