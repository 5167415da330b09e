"""GET /metrics through real processes: gunicorn with 2 workers, 2 `hookgate worker` processes, real
receivers. The counts read back must be what the receivers got, whichever gunicorn process answers."""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hookgate.store import keys

from .processes import free_port, hookgate, spawn, stop_group, wait_http, wait_until
from .receiver import Receiver, Reply

pytestmark = pytest.mark.e2e

ADMIN = "metrics-admin-token"
METRICS_TOKEN = "metrics-scrape-token-0123"
N_GOOD, N_BAD, N_PAUSED = 30, 12, 6


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKGATE_")}
    env.update(HOOKGATE_LOG_LEVEL="WARNING", **extra)
    return env


def scrape(api: str, token: str | None = METRICS_TOKEN) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape on a new connection, parsed: (sample name, sorted labels) → value."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(f"{api}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def stack(tmp_path: Path, redis_url, db):
    """gunicorn (2 processes) and 2 workers against the test store; the metrics token set."""
    port = free_port()
    env = _env(HOOKGATE_REDIS_URL=redis_url, HOOKGATE_ADMIN_TOKEN=ADMIN, HOOKGATE_ALLOWED_NETWORKS="127.0.0.0/8",
               HOOKGATE_BIND=f"127.0.0.1:{port}", HOOKGATE_WEB_WORKERS="2", HOOKGATE_METRICS_TOKEN=METRICS_TOKEN,
               HOOKGATE_TICK="0.2s", HOOKGATE_ACCESS_LOG=str(tmp_path / "access.log"),
               GUNICORN_CMD_ARGS="--access-logformat='%(p)s %(U)s'")  # which process answered which path
    processes = [spawn([sys.executable, "-m", "gunicorn", "wsgi:app"], env, tmp_path / "web.log")]
    processes += [spawn(hookgate("worker", "--name", f"m{n}"), env, tmp_path / f"worker{n}.log") for n in range(2)]
    api = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{api}/healthz", process=processes[0], log=tmp_path / "web.log")
        yield api, tmp_path / "access.log"
    finally:
        for process in processes:
            stop_group(process)


def _create(api: str, path: str, body: dict) -> dict:
    response = requests.post(f"{api}{path}", json=body, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def _post(api: str, source: dict, events) -> dict:
    response = requests.post(f"{api}/v1/sources/{source['id']}/events", json=events,
                             headers={"X-Hookgate-Key": source["key"]}, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()


def _access_lines(access_log: Path) -> list[str]:
    return access_log.read_text().splitlines() if access_log.exists() else []


def _answering(access_log: Path, since: int) -> set[str]:
    """The gunicorn processes (pids) that answered a scrape after the first ``since`` log lines."""
    return {line.split()[0] for line in _access_lines(access_log)[since:] if line.split()[1:] == ["/metrics"]}


def _token_is_required(api: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {METRICS_TOKEN}"}):
        response = requests.get(f"{api}/metrics", headers=headers, timeout=10)
        assert response.status_code == 401
        body = response.json()
        assert body["error"]["code"] == "unauthorized" and body["error"]["message"]
    assert ("hookgate_destinations", ()) in scrape(api)


def test_metrics_read_back_what_the_receivers_got_from_every_process_and_want_the_token(stack, db):
    api, access_log = stack
    _token_is_required(api)
    good, bad = Receiver().start(), Receiver(lambda request: Reply(status=500)).start()
    try:
        source = _create(api, "/v1/sources", {"name": "shop"})
        ok = _create(api, "/v1/destinations", {"name": "ok", "url": good.url, "events": ["good"]})
        failing = _create(api, "/v1/destinations", {
            "name": "failing", "url": bad.url, "events": ["bad"], "retry_schedule": [0.2],
            "circuit_breaker": {"enabled": False}})  # two attempts each, then failed
        paused = _create(api, "/v1/destinations", {
            "name": "paused", "url": bad.url + "/paused", "events": ["paused"], "retry_schedule": [3600],
            "ordered": True,  # a retry keeps its place at the head of the line: its age keeps growing
            "circuit_breaker": {"min_attempts": 1, "failure_rate": 0.01, "cooldown_s": 3600, "max_cooldown_s": 3600}})

        answers = [_post(api, source, [{"name": "good", "id": f"g{n}"} for n in range(N_GOOD)])]
        answers.append(_post(api, source, [{"name": "bad", "id": f"b{n}"} for n in range(N_BAD)]
                             + [{"name": 5}, "nope"]))  # two rejected items
        answers.append(_post(api, source, [{"name": "good", "id": "g0"}, {"name": "good", "id": "g1"}]))  # repeats
        answers.append(_post(api, source, [{"name": "paused", "id": f"p{n}"} for n in range(N_PAUSED)]))

        good.wait_for(N_GOOD, timeout=60)
        bad_for = lambda path: [r for r in bad.requests if r.path == path]  # noqa: E731
        assert wait_until(lambda: len(bad_for("/")) >= 2 * N_BAD, timeout=60), len(bad.requests)
        assert wait_until(lambda: db.hget(keys.breaker(paused["id"]), "state") == "open", timeout=60)
        # settled: nothing pending for the failing destination and every count written
        assert wait_until(lambda: db.zcard(keys.pending(failing["id"])) == 0, timeout=60)
        assert wait_until(lambda: value(scrape(api), "hookgate_deliveries_settled_total",
                                        destination_id=failing["id"], outcome="failed") == N_BAD, timeout=30)

        # a lane settles a chunk's counts after its last answer: under load that lags the receiver
        assert wait_until(lambda: value(scrape(api), "hookgate_delivery_attempts_total",
                                        destination_id=ok["id"], outcome="delivered") == N_GOOD, timeout=30)
        since = len(_access_lines(access_log))
        scrapes = [scrape(api)]  # each on a new connection, until both gunicorn processes have answered
        while len(_answering(access_log, since)) < 2 and len(scrapes) < 100:
            scrapes.append(scrape(api))
        assert len(_answering(access_log, since)) == 2, access_log.read_text()[-2000:]
        assert len(scrapes) >= 2
        counters = [{k: v for k, v in s.items() if k[0].endswith(("_total", "_bucket", "_count", "_sum"))}
                    for s in scrapes]
        assert all(c == counters[0] for c in counters), "counters differ between scrapes"
        samples = scrapes[-1]

        def attempts(did: str, outcome: str) -> float:
            return value(samples, "hookgate_delivery_attempts_total", destination_id=did, outcome=outcome)

        assert len(good.requests) == N_GOOD
        assert attempts(ok["id"], "delivered") == N_GOOD
        assert attempts(ok["id"], "error") + attempts(ok["id"], "bounced") == 0
        failed_requests = len(bad_for("/"))
        assert failed_requests == 2 * N_BAD
        assert attempts(failing["id"], "error") + attempts(failing["id"], "bounced") == failed_requests
        assert attempts(failing["id"], "delivered") == 0
        paused_requests = len(bad_for("/paused"))
        assert attempts(paused["id"], "error") + attempts(paused["id"], "bounced") == paused_requests >= 1

        # the latency histogram: one observation per request a receiver got, buckets cumulative
        for did, sent in ((ok["id"], N_GOOD), (failing["id"], failed_requests), (paused["id"], paused_requests)):
            assert value(samples, "hookgate_delivery_attempt_duration_seconds_count", destination_id=did) == sent
            assert value(samples, "hookgate_delivery_attempt_duration_seconds_bucket", destination_id=did,
                         le="+Inf") == sent
            assert value(samples, "hookgate_delivery_attempt_duration_seconds_sum", destination_id=did) > 0
        bounds = sorted((float(dict(labels)["le"]), v) for (name, labels), v in samples.items()
                        if name == "hookgate_delivery_attempt_duration_seconds_bucket"
                        and dict(labels)["destination_id"] == ok["id"])
        assert [v for _, v in bounds] == sorted(v for _, v in bounds)

        # ingest: what the 202 answers counted, by source, kind and result
        totals = Counter()
        for answer in answers:
            totals.update(accepted=answer["accepted"], duplicate=answer["duplicates"], rejected=answer["rejected"])
        assert totals == Counter(accepted=N_GOOD + N_BAD + N_PAUSED, duplicate=2, rejected=2)
        for result, n in totals.items():
            assert value(samples, "hookgate_events_ingested_total", source_id=source["id"], kind="generic",
                         result=result) == n

        # gauges: the paused destination holds its backlog, the breaker is open
        backlog = value(samples, "hookgate_pending_deliveries", destination_id=paused["id"])
        assert backlog == db.zcard(keys.pending(paused["id"])) == N_PAUSED
        assert value(samples, "hookgate_oldest_pending_age_seconds", destination_id=paused["id"]) > 0
        assert value(samples, "hookgate_breaker_state", destination_id=paused["id"]) == 2
        assert value(samples, "hookgate_breaker_state", destination_id=ok["id"]) == 0
        assert value(samples, "hookgate_pending_deliveries", destination_id=ok["id"]) == 0
        assert value(samples, "hookgate_oldest_pending_age_seconds", destination_id=ok["id"]) == 0
        assert value(samples, "hookgate_destinations") == 3
        assert value(samples, "hookgate_metrics_truncated") == 0
    finally:
        good.stop()
        bad.stop()


def test_requests_in_flight_are_summed_over_the_workers(stack):
    api, access_log = stack
    slow = Receiver(lambda request: Reply(delay=3)).start()
    try:
        source = _create(api, "/v1/sources", {"name": "slow"})
        destination = _create(api, "/v1/destinations", {"name": "slow", "url": slow.url, "timeout_s": 30})
        _post(api, source, [{"name": "slow", "id": f"s{n}"} for n in range(4)])
        assert wait_until(lambda: slow.in_flight >= 1, timeout=30)
        seen: list[float] = []

        def in_flight_matches() -> bool:
            seen.append(value(scrape(api), "hookgate_requests_in_flight", destination_id=destination["id"]))
            return seen[-1] >= 1 and seen[-1] == slow.in_flight

        assert wait_until(in_flight_matches, timeout=5, interval=0.2), (seen, slow.in_flight)
        slow.wait_for(4, timeout=60)
        assert wait_until(lambda: value(scrape(api), "hookgate_requests_in_flight",
                                        destination_id=destination["id"]) == 0, timeout=40)
    finally:
        slow.stop()


def test_without_a_token_set_metrics_are_open(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    names = {family.name for family in text_string_to_metric_families(response.get_data(as_text=True))}
    assert {"hookgate_delivery_attempts", "hookgate_events_ingested", "hookgate_pending_deliveries",
            "hookgate_breaker_state", "hookgate_requests_in_flight", "hookgate_delivery_attempt_duration_seconds",
            "hookgate_oldest_pending_age_seconds", "hookgate_metrics_truncated"} <= names


def test_the_grafana_dashboard_uses_only_metrics_that_are_exposed(client):
    dashboard = json.loads((Path(__file__).resolve().parent.parent / "docs" / "grafana-hookgate.json").read_text())
    families = {family.name: family.type
                for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    exposed = {name + suffix for name, kind in families.items()
               for suffix in {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(kind, ("",))}
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bhookgate_[a-z_]+", expr)}
    assert used and used <= exposed, used - exposed
    assert {"hookgate_delivery_attempts_total", "hookgate_pending_deliveries", "hookgate_oldest_pending_age_seconds",
            "hookgate_delivery_attempt_duration_seconds_bucket", "hookgate_breaker_state",
            "hookgate_requests_in_flight", "hookgate_events_ingested_total"} <= used
    assert any(expr.startswith("histogram_quantile(0.99,") for expr in exprs)


def test_the_counters_of_a_deleted_source_or_destination_expire_with_retention(
        client, admin, make_source, make_destination, post_events, receiver, work, db, rt):
    source_id, key = make_source()
    destination = make_destination(receiver.url)
    assert post_events(source_id, key, [{"name": "a"}, {"name": "b"}]).status_code == 202
    work()
    assert db.hget(keys.metrics_ingest(source_id), "generic|accepted") == "2"
    assert db.hget(keys.metrics_attempts(destination["id"]), "delivered") == "2"
    assert client.delete(f"/v1/sources/{source_id}", headers=admin).status_code == 204
    assert client.delete(f"/v1/destinations/{destination['id']}", headers=admin).status_code == 204
    for counters in (keys.metrics_ingest(source_id), keys.metrics_attempts(destination["id"]),
                     keys.metrics_latency(destination["id"])):
        assert 0 < db.ttl(counters) <= rt.settings.event_retention_s
    samples = client.get("/metrics").get_data(as_text=True)
    assert source_id not in samples and destination["id"] not in samples
