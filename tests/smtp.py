"""A real (minimal) SMTP server on 127.0.0.1 for tests: records every message and every login.

It speaks what Python's ``smtplib`` needs: the 220 greeting, EHLO/HELO (advertising
``AUTH PLAIN LOGIN``), AUTH PLAIN and AUTH LOGIN (with or without an initial response) accepting one
user and password and refusing anything else with 535, MAIL FROM, RCPT TO, DATA (ending at a lone
``.``, with dot-unstuffing), RSET, NOOP and QUIT. No TLS. When a user is configured, MAIL FROM is
refused (530) until the session has authenticated.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.message
import re
import socketserver
import threading
import time
from dataclasses import dataclass, field

__all__ = ["SmtpServer", "Mail", "Login"]

MAX_LINE = 64 * 1024
_PATH = re.compile(r"^(?:FROM|TO):\s*<([^>]*)>", re.IGNORECASE)


@dataclass
class Login:
    mechanism: str
    username: str
    ok: bool
    at: float = field(default_factory=time.time)


@dataclass
class Mail:
    mail_from: str
    rcpt_to: list[str]
    data: bytes  # as received, dot-unstuffed, without the terminating "."
    auth: str | None  # the user the session authenticated as, if any
    message: email.message.Message = field(init=False)
    at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.message = email.message_from_bytes(self.data)

    def body(self) -> str:
        """The (first) text part, decoded."""
        part = next((p for p in self.message.walk() if p.get_content_maintype() == "text"), self.message)
        payload = part.get_payload(decode=True) or b""
        return payload.decode(part.get_content_charset() or "utf-8", errors="replace")


class _Handler(socketserver.StreamRequestHandler):
    """One SMTP session; ``self.server.smtp`` is the ``SmtpServer`` it records to."""

    timeout = 10
    server: _Server

    @property
    def smtp(self) -> SmtpServer:
        return self.server.smtp

    def setup(self) -> None:
        super().setup()
        self.reset()
        self.authenticated: str | None = None

    def reset(self) -> None:
        self.mail_from: str | None = None
        self.rcpt_to: list[str] = []

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def readline(self) -> bytes | None:
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            return None
        return line

    def handle(self) -> None:
        try:
            self.reply(f"220 {self.smtp.hostname} ESMTP hookgate-test ready")
            while True:
                raw = self.readline()
                if raw is None:
                    return
                if len(raw) > MAX_LINE:
                    self.reply("500 line too long")
                    return
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                verb, _, arg = line.partition(" ")
                verb = verb.upper()
                self.smtp._record_command(f"AUTH {arg.split(' ')[0]} ***" if verb == "AUTH" else line)
                if not self.command(verb, arg.strip()):
                    return
        except (ConnectionError, TimeoutError, OSError):
            return

    def command(self, verb: str, arg: str) -> bool:
        """Answer one command; False ends the session."""
        verbs = {"EHLO": self.ehlo, "HELO": self.helo, "AUTH": self.auth, "MAIL": self.mail, "RCPT": self.rcpt,
                 "DATA": self.data, "RSET": self.rset, "NOOP": self.noop, "QUIT": self.quit}
        action = verbs.get(verb)
        if action is None:
            self.reply("502 5.5.2 command not implemented")
            return True
        return action(arg)

    def ehlo(self, arg: str) -> bool:
        self.reset()
        self.reply(f"250-{self.smtp.hostname} greets {arg or 'you'}")
        self.reply("250-AUTH PLAIN LOGIN")
        self.reply("250 HELP")
        return True

    def helo(self, arg: str) -> bool:
        self.reset()
        self.reply(f"250 {self.smtp.hostname}")
        return True

    def mail(self, arg: str) -> bool:
        match = _PATH.match(arg)
        if self.smtp.user is not None and self.authenticated is None:
            self.reply("530 5.7.0 authentication required")
        elif self.mail_from is not None:
            self.reply("503 5.5.1 nested MAIL command")
        elif not match:
            self.reply("501 5.5.4 syntax: MAIL FROM:<address>")
        else:
            self.mail_from = match.group(1)
            self.reply("250 2.1.0 OK")
        return True

    def rcpt(self, arg: str) -> bool:
        match = _PATH.match(arg)
        if self.mail_from is None:
            self.reply("503 5.5.1 need MAIL before RCPT")
        elif not match or not match.group(1):
            self.reply("501 5.5.4 syntax: RCPT TO:<address>")
        else:
            self.rcpt_to.append(match.group(1))
            self.reply("250 2.1.5 OK")
        return True

    def data(self, arg: str) -> bool:
        if self.mail_from is None or not self.rcpt_to:
            self.reply("503 5.5.1 need MAIL and RCPT before DATA")
            return True
        self.reply("354 end data with <CR><LF>.<CR><LF>")
        data = self.read_data()
        if data is None:
            return False
        self.smtp._record_mail(Mail(self.mail_from, list(self.rcpt_to), data, self.authenticated))
        self.reset()
        self.reply("250 2.0.0 OK: queued")
        return True

    def rset(self, arg: str) -> bool:
        self.reset()
        self.reply("250 2.0.0 OK")
        return True

    def noop(self, arg: str) -> bool:
        self.reply("250 2.0.0 OK")
        return True

    def quit(self, arg: str) -> bool:
        self.reply("221 2.0.0 bye")
        return False

    def read_data(self) -> bytes | None:
        lines = []
        while True:
            raw = self.readline()
            if raw is None:
                return None
            if raw in (b".\r\n", b".\n"):
                return b"".join(lines)
            if raw.startswith(b"."):
                raw = raw[1:]  # dot-unstuffing (RFC 5321 4.5.2)
            lines.append(raw)

    # -- AUTH ----------------------------------------------------------------------------
    def auth(self, arg: str) -> bool:
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if self.authenticated is not None:
            self.reply("503 5.5.1 already authenticated")
        elif mechanism == "PLAIN":
            self.auth_plain(initial)
        elif mechanism == "LOGIN":
            self.auth_login(initial)
        else:
            self.reply("504 5.5.4 unrecognized authentication type")
        return True

    def auth_plain(self, initial: str) -> None:
        response = initial.strip() or self.challenge("")
        if response is None:
            return
        try:
            _authzid, user, password = base64.b64decode(response, validate=True).decode().split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self.reply("501 5.5.2 cannot decode AUTH PLAIN response")
            return
        self.finish_auth("PLAIN", user, password)

    def auth_login(self, initial: str) -> None:
        user_b64 = initial.strip() or self.challenge(base64.b64encode(b"Username:").decode())
        if user_b64 is None:
            return
        password_b64 = self.challenge(base64.b64encode(b"Password:").decode())
        if password_b64 is None:
            return
        try:
            user = base64.b64decode(user_b64, validate=True).decode()
            password = base64.b64decode(password_b64, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            self.reply("501 5.5.2 cannot decode AUTH LOGIN response")
            return
        self.finish_auth("LOGIN", user, password)

    def challenge(self, text: str) -> str | None:
        """Send a 334 challenge; the client's answer, or None (cancelled or disconnected)."""
        self.reply(f"334 {text}".rstrip() if text else "334 ")
        raw = self.readline()
        if raw is None:
            return None
        answer = raw.decode("ascii", errors="replace").strip()
        if answer == "*":
            self.reply("501 5.7.0 authentication cancelled")
            return None
        return answer

    def finish_auth(self, mechanism: str, user: str, password: str) -> None:
        smtp = self.smtp
        ok = smtp.user is not None and user == smtp.user and password == smtp.password
        smtp._record_login(Login(mechanism, user, ok))
        if ok:
            self.authenticated = user
            self.reply("235 2.7.0 authentication successful")
        else:
            self.reply("535 5.7.8 authentication credentials invalid")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], smtp: SmtpServer):
        self.smtp = smtp
        super().__init__(address, _Handler)


class SmtpServer:
    """``user``/``password``: the one login accepted (``None``: no AUTH required, any login refused)."""

    def __init__(self, user: str | None = "user", password: str | None = "pass", hostname: str = "smtp.test"):
        self.user, self.password, self.hostname = user, password, hostname
        self.messages: list[Mail] = []
        self.logins: list[Login] = []
        self.commands: list[str] = []  # every command line received (AUTH payloads redacted)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.server = _Server(("127.0.0.1", 0), self)
        self.host, self.port = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """An ``smtp://`` URL for this server, with the configured login unless others are given."""
        user = self.user if user is None else user
        password = self.password if password is None else password
        login = f"{user}:{password}@" if user is not None else ""
        return f"smtp://{login}{self.host}:{self.port}"

    def start(self) -> SmtpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _record_command(self, line: str) -> None:
        with self._lock:
            self.commands.append(line)

    def _record_login(self, login: Login) -> None:
        with self._lock:
            self.logins.append(login)

    def _record_mail(self, mail: Mail) -> None:
        with self._arrived:
            self.messages.append(mail)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Mail]:
        """Block until ``count`` messages arrived (or the timeout); return what arrived."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < count and time.monotonic() < deadline:
                self._arrived.wait(max(0.01, deadline - time.monotonic()))
            return list(self.messages)
