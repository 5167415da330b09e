"""E-mail notifications of a disabled destination, through a real SMTP server (``tests/smtp.py``).

The circuit breaker disables a destination that failed for ``failing_for_s``; the ticker
(``app.delivery.ticker.tick``, which the in-process worker runs) sends the e-mail and keeps sending it
every ``interval_s`` until the destination is enabled again. (A pause and a recovery are e-mailed
once each: ``test_breaker.py``.)
"""

from __future__ import annotations

import dataclasses
import logging
import smtplib
from collections.abc import Iterator

import pytest

from hookgate import create_app, runtime
from hookgate.delivery.followups import FollowUps
from hookgate.delivery.ticker import tick
from hookgate.notify import send_due
from hookgate.store import keys, now_ms

from .receiver import Receiver, Reply
from .smtp import SmtpServer

SMTP_FROM = "hookgate-alerts@example.org"
OPS = "ops@example.com"


# -- wiring: the app of these tests sends e-mail through the SMTP server below ------------------------
@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(user="user", password="pass").start()
    yield server
    server.stop()


@pytest.fixture
def smtp_password() -> str:
    """The password hookgate is configured with (parametrize to get it wrong)."""
    return "pass"


@pytest.fixture
def app(settings, smtp, smtp_password):  # overrides conftest's ``app``: same wiring, plus SMTP
    configured = dataclasses.replace(settings, smtp_url=f"smtp://user:{smtp_password}@127.0.0.1:{smtp.port}",
                                     smtp_from=SMTP_FROM)
    app = create_app(configured)
    runtime.install(app.extensions["hookgate"])
    yield app
    runtime.install(None)


@pytest.fixture
def failing() -> Iterator[Receiver]:
    server = Receiver(lambda request: Reply(500, body=b'{"error": "down"}')).start()
    yield server
    server.stop()


@pytest.fixture
def trip(make_source, make_destination, post_events, failing, work, db):
    """Make destinations that fail (and have failed for two hours already), post a few events and run
    the worker until their breakers disable them."""

    def make(*names_and_emails: tuple[str, str]) -> list[dict]:
        source_id, key = make_source()
        destinations = [
            make_destination(f"{failing.url}/{name}", name=name, retry_schedule=[],
                             circuit_breaker={"min_attempts": 3, "failure_rate": 0.5, "failing_for_s": 3600},
                             notify={"email": address, "interval_s": 60})
            for name, address in names_and_emails
        ]
        for destination in destinations:
            db.set(keys.failing_since(destination["id"]), now_ms() - 2 * 3600 * 1000)
        assert post_events(source_id, key, [{"name": f"order.{n}"} for n in range(5)]).status_code < 300
        work()
        return destinations

    return make


def shown(client, admin, destination_id: str) -> dict:
    response = client.get(f"/v1/destinations/{destination_id}", headers=admin)
    assert response.status_code == 200
    return response.get_json()


# -- the SMTP server itself ---------------------------------------------------------------------------
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("initial_response", [True, False])
def test_the_smtp_server_accepts_its_login_and_records_the_message(smtp, mechanism, initial_response):
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as client:
        client.ehlo("tester")
        assert client.has_extn("auth") and client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        client.user, client.password = "user", "pass"
        code, _ = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"),
                              initial_response_ok=initial_response)
        assert code == 235
        assert client.noop()[0] == 250
        client.sendmail("a@example.org", ["b@example.org", "c@example.org"],
                        b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n")
    [mail] = smtp.messages
    assert mail.mail_from == "a@example.org" and mail.rcpt_to == ["b@example.org", "c@example.org"]
    assert mail.auth == "user" and mail.message["Subject"] == "dots"
    assert mail.data.endswith(b"\r\n.leading dot\r\n..two\r\n.\r\nend\r\n")  # stuffed by smtplib, unstuffed here
    assert [(login.mechanism, login.username, login.ok) for login in smtp.logins] == [(mechanism, "user", True)]


def test_the_smtp_server_refuses_other_logins_and_mail_before_login(smtp):
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("user", "wrong")
        assert refused.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPSenderRefused) as sender_refused:
            client.sendmail("a@example.org", ["b@example.org"], b"Subject: x\r\n\r\nx\r\n")
        assert sender_refused.value.smtp_code == 530
        client.login("user", "pass")
        assert client.rset()[0] == 250
        client.helo("tester")
        client.sendmail("a@example.org", ["b@example.org"], b"Subject: after\r\n\r\nx\r\n")
    assert [(login.mechanism, login.ok) for login in smtp.logins] == [("PLAIN", False), ("LOGIN", False),
                                                                       ("PLAIN", True)]
    assert [mail.message["Subject"] for mail in smtp.messages] == ["after"]


# -- notifications ------------------------------------------------------------------------------------
def test_a_tripped_breaker_is_e_mailed_to_the_notify_address(client, admin, trip, smtp, rt, db):
    [flaky] = trip(("flaky", OPS))
    state = shown(client, admin, flaky["id"])
    assert state["enabled"] is False and state["disabled_reason"] == "failing"

    [mail] = smtp.wait_for(1)
    assert mail.mail_from == SMTP_FROM and mail.rcpt_to == [OPS]
    assert mail.message["From"] == SMTP_FROM and mail.message["To"] == OPS
    assert "flaky" in mail.message["Subject"] and "disabled" in mail.message["Subject"]
    body = mail.body()
    assert state["disabled_detail"] in body and "failing continuously" in body
    assert '"reason": "failing"' in body and flaky["id"] in body
    assert f"/v1/destinations/{flaky['id']}/enable" in body
    assert mail.auth == "user" and [(login.username, login.ok) for login in smtp.logins] == [("user", True)]
    # Sent once; the next reminder is an interval later, and ticking before then sends nothing.
    assert db.zscore(keys.notify, flaky["id"]) > now_ms() + 50_000
    tick(rt)
    assert len(smtp.messages) == 1


def test_the_ticker_is_what_sends_the_e_mail(client, admin, make_destination, failing, smtp, rt, db):
    flaky = make_destination(failing.url, name="flaky", notify={"email": OPS, "interval_s": 60})
    FollowUps(rt).disable(flaky, "failing", "failing continuously for 2.0 h")
    assert shown(client, admin, flaky["id"])["enabled"] is False
    assert db.zscore(keys.notify, flaky["id"]) is not None and smtp.messages == []  # scheduled, not sent
    tick(rt)
    [mail] = smtp.wait_for(1)
    assert mail.rcpt_to == [OPS] and "failing continuously for 2.0 h" in mail.body()
    assert "flaky" in mail.message["Subject"]


@pytest.mark.parametrize("smtp_password", ["wrong"])
def test_a_refused_smtp_login_is_logged_and_the_destination_stays_disabled(client, admin, trip, smtp, db,
                                                                            caplog):
    caplog.set_level(logging.WARNING, logger="hookgate.notify")
    [flaky] = trip(("flaky", OPS))  # the worker does not crash
    assert smtp.messages == []
    assert smtp.logins and not any(login.ok for login in smtp.logins)
    failures = [record for record in caplog.records
                if record.name == "hookgate.notify" and record.levelno == logging.WARNING
                and f"notification e-mail to {OPS} failed" in record.getMessage()]
    assert len(failures) == 1 and "535" in failures[0].getMessage()
    state = shown(client, admin, flaky["id"])
    assert state["enabled"] is False and state["disabled_reason"] == "failing"
    assert db.zscore(keys.notify, flaky["id"]) > now_ms() + 50_000  # it will be tried again an interval later


def test_enabling_stops_the_reminders_while_a_still_disabled_destination_gets_another(client, admin, trip, smtp,
                                                                                      rt, db):
    fixed, broken = trip(("fixed", "fixed-ops@example.com"), ("broken", "broken-ops@example.com"))
    first = smtp.wait_for(2)
    assert sorted(mail.rcpt_to[0] for mail in first) == ["broken-ops@example.com", "fixed-ops@example.com"]

    response = client.post(f"/v1/destinations/{fixed['id']}/enable", headers=admin)
    assert response.status_code == 200 and response.get_json()["enabled"] is True
    assert db.zscore(keys.notify, fixed["id"]) is None
    assert db.zscore(keys.notify, broken["id"]) is not None

    # Force both schedules to now (the enabled one as if a stale entry had survived): only the
    # destination that is still disabled is reminded; the stale entry is dropped.
    db.zadd(keys.notify, {fixed["id"]: 0, broken["id"]: 0})
    assert send_due(rt) == 1
    assert len(smtp.wait_for(3, timeout=2)) == 3
    reminder = smtp.messages[-1]
    assert reminder.rcpt_to == ["broken-ops@example.com"] and "broken" in reminder.message["Subject"]
    assert db.zscore(keys.notify, fixed["id"]) is None
    assert db.zscore(keys.notify, broken["id"]) > now_ms() + 50_000
    assert send_due(rt) == 0 and len(smtp.messages) == 3


def test_a_name_with_a_line_break_cannot_inject_headers(rt, smtp):
    from hookgate.notify import notify_once

    destination = {"id": "dst_x", "name": "a\r\nBcc: x@evil.test", "url": "https://example.com",
                   "disabled_reason": "gone", "disabled_detail": "410", "notify": {"email": "ops@example.com"}}
    notify_once(rt, destination)
    [mail] = smtp.wait_for(1)
    assert mail.message["Bcc"] is None and "Bcc" not in mail.message["Subject"].split(":")[0]
