"""The operator's commands: ``hookgate deliveries list/show`` and ``hookgate replay``, and how every
command finds its store (``store_settings``).

A command uses the store HOOKGATE_REDIS_URL (or Sentinel) names; without one, the embedded store of
the ``hookgate up`` running with its data in HOOKGATE_DATA_DIR (its ``valkey/address`` and
``valkey/password``); without that either, it stops and says what to set, never answering from no
store at all. These commands read and write the store directly (``DeliveryStore``, ``replay``), not
through the HTTP API.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from . import runtime
from .config import Settings
from .deliveries import STATUSES, DeliveryStore
from .embedded import running_store
from .errors import HookgateError
from .replay import bulk_replay_size, new_bulk_replay, read_replay, replay_delivery, run_bulk_replay
from .times import parse_moment

__all__ = ["store_settings", "deliveries", "replay"]


def store_settings(settings: Settings | None = None) -> Settings:
    """The settings with the store to use: the configured one, else the embedded store of the
    ``hookgate up`` running in the data directory; ``ClickException`` when there is neither."""
    settings = settings or Settings.from_env()
    if settings.external_store:
        return settings
    data = Path(settings.data_dir).resolve()
    found = running_store(data)
    if found is None:
        raise click.ClickException(
            f"no store: HOOKGATE_REDIS_URL is not set and no `hookgate up` is running with its data in {data} "
            f"(no embedded store answers from {data / 'valkey' / 'address'}). Start `hookgate up` there, set "
            "HOOKGATE_DATA_DIR to the data directory of the running `hookgate up`, or set HOOKGATE_REDIS_URL "
            "(or HOOKGATE_REDIS_SENTINELS and HOOKGATE_REDIS_SENTINEL_MASTER) to the instance's store")
    return dataclasses.replace(settings, redis_url=found.url)


def _runtime() -> runtime.Runtime:
    return runtime.Runtime(store_settings())


def _time(value: Any) -> str:
    """Epoch milliseconds (or an RFC 3339 string) as RFC 3339 UTC to the second; "-" for none."""
    if value in (None, ""):
        return "-"
    try:
        return parse_moment(value).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return str(value)


def _moment(value: str | None, option: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return parse_moment(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


COLUMNS = (("ID", "id"), ("STATUS", "status"), ("TRIES", "attempts"), ("CODE", "last_status_code"),
           ("DESTINATION", "destination_id"), ("EVENT", "event_id"), ("CREATED", "created_at"),
           ("LAST ERROR", "last_error"))


def _cell(item: dict[str, Any], field: str) -> str:
    value = item.get(field)
    if field.endswith("_at"):
        return _time(value)
    if value is None:
        return "-"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:59] + "…"


def table(rows: list[dict[str, Any]], columns: tuple[tuple[str, str], ...]) -> list[str]:
    """Aligned columns with a header line."""
    cells = [[title for title, _ in columns]] + [[_cell(row, field) for _, field in columns] for row in rows]
    widths = [max(len(line[n]) for line in cells) for n in range(len(columns))]
    return ["  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
            for line in cells]


@click.group()
def deliveries() -> None:
    """Look deliveries up: their status, attempts and errors."""


@deliveries.command("list")
@click.option("--destination", "destination_id", default=None, help="only this destination's (dst_…)")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="only deliveries in this status")
@click.option("--event", "event_id", default=None, help="only this event's (evt_…)")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="at most this many")
@click.option("--json", "as_json", is_flag=True, help="print JSON ({\"items\": [...]}) for scripts")
def deliveries_list(destination_id: str | None, status: str | None, event_id: str | None, limit: int,
                    as_json: bool) -> None:
    """Deliveries, newest first, one line each."""
    rt = _runtime()
    try:
        items = DeliveryStore(rt.db).page(destination_id=destination_id, status=status, event_id=event_id,
                                          limit=limit)["items"]
    finally:
        rt.close()
    if as_json:
        click.echo(json.dumps({"items": items}, indent=2, ensure_ascii=False))
        return
    if not items:
        click.echo("no deliveries match", err=True)
        return
    for line in table(items, COLUMNS):
        click.echo(line)


def _attempt_line(attempt: dict[str, Any]) -> str:
    parts = [f"#{attempt.get('attempt', '?')}", _time(attempt.get("at"))]
    for name in ("outcome", "status_code"):
        if attempt.get(name) is not None:
            parts.append(str(attempt[name]))
    if attempt.get("latency_ms") is not None:
        parts.append(f"{float(attempt['latency_ms']):.0f} ms")
    if attempt.get("error"):
        parts.append(str(attempt["error"]))
    return "  ".join(parts)


@deliveries.command("show")
@click.argument("delivery_id")
@click.option("--json", "as_json", is_flag=True, help="print the delivery as JSON, as GET /v1/deliveries/<id>")
def deliveries_show(delivery_id: str, as_json: bool) -> None:
    """One delivery: its state, its event and its attempt log."""
    rt = _runtime()
    try:
        delivery = DeliveryStore(rt.db).get(delivery_id)
    except HookgateError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        rt.close()
    if as_json:
        click.echo(json.dumps(delivery, indent=2, ensure_ascii=False))
        return
    event = delivery.get("event") or {}
    shown = [("delivery", delivery["id"]), ("status", delivery["status"]), ("attempts", delivery["attempts"]),
             ("destination", delivery["destination_id"]),
             ("event", f"{delivery['event_id']} {event.get('name', '(expired)') if event else '(expired)'}"),
             ("created", _time(delivery["created_at"])), ("updated", _time(delivery["updated_at"])),
             ("next attempt", _time(delivery["next_attempt_at"])),
             ("last status code", delivery["last_status_code"] or "-"), ("last error", delivery["last_error"] or "-")]
    for label, value in shown:
        click.echo(f"{label + ':':<18}{value}")
    click.echo("attempt log:" if delivery["attempt_log"] else "attempt log:     (no attempt yet)")
    for attempt in delivery["attempt_log"]:
        click.echo("  " + _attempt_line(attempt))


@click.command()
@click.argument("delivery_id", required=False)
@click.option("--destination", "destination_id", default=None, help="bulk: this destination's deliveries")
@click.option("--status", type=click.Choice([s for s in STATUSES if s != "pending"]), default=None,
              help="bulk: those in this status")
@click.option("--since", default=None, help="bulk: created from (RFC 3339 or epoch seconds/ms)")
@click.option("--until", default=None, help="bulk: created until (RFC 3339 or epoch seconds/ms; default now)")
def replay(delivery_id: str | None, destination_id: str | None, status: str | None, since: str | None,
           until: str | None) -> None:
    """Send a delivery again (DELIVERY_ID), or every one of a destination's in a status (--destination,
    --status, optionally --since/--until) with a progress bar. A worker sends them."""
    if delivery_id and (destination_id or status or since or until):
        raise click.UsageError("give a DELIVERY_ID, or --destination and --status, not both")
    if not delivery_id and not (destination_id and status):
        raise click.UsageError("give a DELIVERY_ID, or --destination and --status for a bulk replay")
    window = (_moment(since, "--since"), _moment(until, "--until"))
    rt = _runtime()
    try:
        if delivery_id:
            try:
                replay_delivery(rt, delivery_id)
            except HookgateError as exc:
                raise click.ClickException(exc.message) from None
            click.echo(f"{delivery_id}: pending again; a worker sends it")
            return
        assert destination_id and status
        _bulk(rt, destination_id, status, *window)
    finally:
        rt.close()


def _bulk(rt: runtime.Runtime, destination_id: str, status: str, since: dt.datetime | None,
          until: dt.datetime | None) -> None:
    replay_id = new_bulk_replay(rt, destination_id, status, since, until)
    size = bulk_replay_size(rt.db, read_replay(rt.db, replay_id))
    runtime.install(rt)  # run_bulk_replay reads the runtime as an RQ job would
    try:
        with click.progressbar(length=size, label=f"replaying {destination_id} {status}", file=None) as bar:
            run_bulk_replay(replay_id, progress=bar.update)
    finally:
        runtime.install(None)
    done = read_replay(rt.db, replay_id)
    click.echo(f"{replay_id}: replayed {done['replayed']} of {done['scanned']} scanned; a worker sends them")
