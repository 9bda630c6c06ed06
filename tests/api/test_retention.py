"""Retention (PROTOCOL.md §3.6): expiry, bodies, receipt retention, the purge and its command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy.exc
import webtest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from fxchat import main
from fxchat.models import CopyState, prepared
from fxchat.purger import run_purge
from fxchat.services.retention import Pace, count_fewer_queued

from .. import databases
from ..conftest import TEST_SETTINGS, empty_database, register
from .checks import (
    DAY,
    NOTHING_STORED,
    START_MS,
    count,
    error_body,
    freeze_clock,
    rows,
    stored_counts,
)

HOUR_MS = 3_600_000
DAY_MS = DAY * 1000
RETENTION_MS = 7 * DAY_MS  # receipt_retention default


def purge(app, at_ms: int, **kw) -> dict:
    return run_purge(app.app.registry, now=at_ms, **kw).as_json()


def queue_counters(app) -> dict[str, tuple[int, int]]:
    """Each device's (queued, pending copies): the counter sends trust, and what it counts."""
    pending = Counter(
        c["device_pk"] for c in rows(app, "copies") if c["state"] == CopyState.PENDING
    )
    return {d["device_id"]: (d["queued"], pending[d["pk"]]) for d in rows(app, "devices")}


def assert_queue_counters_exact(app) -> None:
    counters = queue_counters(app)
    assert {device: queued for device, (queued, _) in counters.items()} == {
        device: pending for device, (_, pending) in counters.items()
    }


def receipt_statuses(device, msg_id) -> dict[str, str]:
    answer = device.get(f"/v1/messages/{msg_id}/receipts").json
    return {r["device_id"]: r["status"] for r in answer["receipts"]}


def test_purge_with_nothing_to_do(app):
    assert purge(app, START_MS) == {
        "expired_copies": 0,
        "deleted_messages": 0,
        "deleted_idempotency_keys": 0,
    }


def test_expired_copies_become_expired_receipts(clock, app, alice, bob):
    phone = bob.add_device()
    msg_id = alice.send_to(bob, phone, ttl=3600)
    bob.ack(msg_id)
    # Before expiry the purge leaves the pending copy alone.
    assert purge(app, START_MS + HOUR_MS - 1)["expired_copies"] == 0
    assert count(app, "bodies") == 1
    report = purge(app, START_MS + HOUR_MS)
    assert report == {"expired_copies": 1, "deleted_messages": 0, "deleted_idempotency_keys": 0}
    clock.advance(3600)
    assert receipt_statuses(alice, msg_id) == {bob.device_id: "acked", phone.device_id: "expired"}
    # No copy is pending any more: the body is gone, the copies lost their key fields.
    assert stored_counts(app) == {"messages": 1, "bodies": 0, "copies": 2}
    for copy in rows(app, "copies"):
        assert (copy["encrypted_aes_key"], copy["msg_sig"], copy["msg_pub_key"]) == (
            None,
            None,
            None,
        )
    assert phone.inbox() == []


def test_purge_is_idempotent(clock, app, alice, bob):
    alice.send_to(bob, ttl=60)
    assert purge(app, START_MS + 10**12)["expired_copies"] == 1
    assert purge(app, START_MS + 10**12) == {
        "expired_copies": 0,
        "deleted_messages": 0,
        "deleted_idempotency_keys": 0,
    }


def test_expiry_frees_queue_places(make_app):
    app = make_app(max_queued_per_device=1)
    clock = freeze_clock(app)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    alice.send_to(bob, ttl=60)
    clock.advance(60)
    purge(app, START_MS + 60_000)
    alice.send_to(bob)


def test_messages_and_receipts_are_deleted_after_the_retention(clock, app, alice, bob):
    msg_id = alice.send_to(bob, ttl=3600)
    expires_at = START_MS + HOUR_MS
    purge(app, expires_at + RETENTION_MS - 1)
    clock.advance((HOUR_MS + RETENTION_MS - 1) / 1000)
    assert receipt_statuses(alice, msg_id) == {bob.device_id: "expired"}
    report = purge(app, expires_at + RETENTION_MS)
    assert report == {"expired_copies": 0, "deleted_messages": 1, "deleted_idempotency_keys": 0}
    assert stored_counts(app) == {"messages": 0, "bodies": 0, "copies": 0}
    refused = alice.get(f"/v1/messages/{msg_id}/receipts", status=404)
    assert refused.json == error_body("path", "id")


def test_acknowledged_receipts_are_kept_until_the_retention_ends(clock, app, alice, bob):
    msg_id = alice.send_to(bob, ttl=3600)
    bob.ack(msg_id, mac_key=os.urandom(32))
    assert purge(app, START_MS + HOUR_MS + RETENTION_MS - 1)["deleted_messages"] == 0
    assert count(app, "copies") == 1
    assert purge(app, START_MS + HOUR_MS + RETENTION_MS)["deleted_messages"] == 1
    assert stored_counts(app) == {"messages": 0, "bodies": 0, "copies": 0}


def test_configured_receipt_retention(make_app):
    app = make_app(receipt_retention=60)
    freeze_clock(app)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    alice.send_to(bob, ttl=60)
    assert purge(app, START_MS + 119_999)["deleted_messages"] == 0
    assert purge(app, START_MS + 120_000)["deleted_messages"] == 1


def test_idempotency_keys_are_forgotten_after_the_window(clock, app, alice, bob):
    body = alice.envelope(bob)
    headers = {"Idempotency-Key": "send-1"}
    first = alice.post("/v1/messages", body, headers=headers, status=201).json
    assert purge(app, START_MS + DAY_MS - 1)["deleted_idempotency_keys"] == 0
    assert count(app, "idempotency_keys") == 1
    assert purge(app, START_MS + DAY_MS)["deleted_idempotency_keys"] == 1
    assert count(app, "idempotency_keys") == 0
    # The message itself stays, and the key can name a new one.
    assert [m["id"] for m in bob.inbox()] == [first["id"]]
    clock.advance(DAY)
    again = alice.post("/v1/messages", body, headers=headers, status=201).json
    assert again["id"] != first["id"]


def test_purge_only_touches_what_is_due(clock, app, alice, bob):
    short = alice.send_to(bob, ttl=60)
    long = alice.send_to(bob, ttl=3600)
    report = purge(app, START_MS + 60_000)
    assert report["expired_copies"] == 1
    clock.advance(60)
    assert [m["id"] for m in bob.inbox()] == [long]
    assert receipt_statuses(alice, short) == {bob.device_id: "expired"}
    assert receipt_statuses(alice, long) == {bob.device_id: "pending"}
    assert stored_counts(app) == {"messages": 2, "bodies": 1, "copies": 2}


def test_purge_in_small_batches(make_app):
    app = make_app(purge_batch_size=2)
    freeze_clock(app)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    for _ in range(5):
        alice.send_to(bob, ttl=60)
    far = START_MS + 60_000 + RETENTION_MS
    assert purge(app, far) == {
        "expired_copies": 5,
        "deleted_messages": 5,
        "deleted_idempotency_keys": 0,
    }
    assert stored_counts(app) == {"messages": 0, "bodies": 0, "copies": 0}
    assert queue_counters(app) == {alice.device_id: (0, 0), bob.device_id: (0, 0)}


def test_a_full_queue_of_messages_past_their_retention_takes_sends_again(make_app):
    # The purge deletes these messages without expiring their copies first:
    # their device's count of pending copies must go down all the same.
    app = make_app(max_queued_per_device=2)
    clock = freeze_clock(app)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    alice.send_to(bob, ttl=60)
    alice.send_to(bob, ttl=60)
    alice.post("/v1/messages", alice.envelope(bob), status=409)

    report = purge(app, START_MS + 60_000 + RETENTION_MS)

    assert report == {"expired_copies": 2, "deleted_messages": 2, "deleted_idempotency_keys": 0}
    assert stored_counts(app) == NOTHING_STORED
    clock.advance(60 + RETENTION_MS / 1000)
    alice.send_to(bob)
    alice.send_to(bob)
    refused = alice.post("/v1/messages", alice.envelope(bob), status=409)
    assert refused.json == error_body("body", "queue_full", full_devices=[bob.address])


def test_deleting_messages_counts_only_the_copies_still_pending(clock, app, alice, bob):
    phone, carol = bob.add_device(), register(app, "carol@example.com")
    acked = alice.send_to(bob, phone, carol, ttl=60)
    expired = alice.send_to(bob, phone, carol, ttl=60)
    never_swept = alice.send_to(bob, phone, carol, ttl=120)
    bob.ack(acked, expired)
    carol.ack(acked)
    assert purge(app, START_MS + 60_000)["expired_copies"] == 3  # phone and carol's
    kept = alice.send_to(bob, phone, carol, ttl=8 * DAY)
    assert queue_counters(app) == {
        alice.device_id: (0, 0),
        bob.device_id: (2, 2),
        phone.device_id: (2, 2),
        carol.device_id: (2, 2),
    }

    report = purge(app, START_MS + 120_000 + RETENTION_MS)

    assert report == {"expired_copies": 3, "deleted_messages": 3, "deleted_idempotency_keys": 0}
    assert queue_counters(app) == {
        alice.device_id: (0, 0),
        bob.device_id: (1, 1),
        phone.device_id: (1, 1),
        carol.device_id: (1, 1),
    }
    for device in (bob, phone, carol):
        assert [m["id"] for m in device.inbox()] == [kept]
    assert receipt_statuses(alice, kept) == dict.fromkeys(
        (bob.device_id, phone.device_id, carol.device_id), "pending"
    )
    for gone in (acked, expired, never_swept):
        alice.get(f"/v1/messages/{gone}/receipts", status=404)


def test_expiry_in_batches_keeps_every_queue_counter_exact(make_app):
    app = make_app(purge_batch_size=3)
    freeze_clock(app)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    phone, carol = bob.add_device(), register(app, "carol@example.com")
    sent = [alice.send_to(bob, phone, carol, ttl=60 * (1 + n % 3)) for n in range(8)]
    bob.ack(*sent[:4])
    carol.ack(*sent[::2])
    due = [n for n in range(8) if n % 3 < 2]  # ttl 60 or 120 s

    report = purge(app, START_MS + 120_000)

    pending_due = sum((n >= 4) + 1 + (n % 2) for n in due)  # bob's, phone's, carol's
    assert report == {
        "expired_copies": pending_due,
        "deleted_messages": 0,
        "deleted_idempotency_keys": 0,
    }
    assert_queue_counters_exact(app)
    assert queue_counters(app)[phone.device_id] == (8 - len(due), 8 - len(due))


def test_batches_start_small_and_grow_while_they_are_quick(make_app):
    app = make_app(purge_batch_size=100)
    freeze_clock(app)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    for _ in range(20):
        alice.send_to(bob, ttl=60)
    # Batches of 1, 2, 4, 8 then 16: the last one, not full, ends the step.
    report = run_purge(
        app.app.registry,
        now=START_MS + 60_000 + RETENTION_MS,
        pace=Pace(batch_seconds=60, first_batch=1),
    )
    assert report.as_json() == {
        "expired_copies": 20,
        "deleted_messages": 20,
        "deleted_idempotency_keys": 0,
    }
    assert report.batches == 5 + 2  # and one for each of the other steps
    assert stored_counts(app) == NOTHING_STORED
    assert queue_counters(app)[bob.device_id] == (0, 0)


@pytest.mark.parametrize(
    "after_ms, step, rows",
    [(60_000, "expired_copies", 40), (60_000 + RETENTION_MS, "deleted_messages", 20)],
    ids=["expiry", "deletion"],
)
def test_the_purge_runs_the_same_statements_whatever_the_batch_size(make_app, after_ms, step, rows):
    # The same SQL for a batch of 2 rows as for one of 8: compiled once and
    # found in the driver's statement cache, not rendered with a placeholder
    # per row and prepared again for each size, inside SQLite's only write
    # lock (docs/performance.rst, "Purge (SQLite)").
    app = make_app(purge_batch_size=100)
    freeze_clock(app)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    phone = bob.add_device()
    for _ in range(20):
        alice.send_to(bob, phone, ttl=60)
    batches: list[list[str]] = [[]]

    def record(statement: str) -> None:
        batches[-1].append(" ".join(statement.split()))

    def on_cursor(conn, cursor, statement, parameters, context, executemany):
        record(statement)

    def rest(seconds: float) -> bool:
        batches.append([])
        return False

    # Statements through SQLAlchemy, and those run on the driver (prepared).
    event.listen(Engine, "before_cursor_execute", on_cursor)
    prepared.observers.append(record)
    try:
        report = run_purge(
            app.app.registry,
            now=START_MS + after_ms,
            pace=Pace(batch_seconds=60, first_batch=1),
            wait=rest,
        )
    finally:
        prepared.observers.remove(record)
        event.remove(Engine, "before_cursor_execute", on_cursor)

    assert report.as_json()[step] == rows
    # Batches of 1, 2, 4 and 8 rows, each followed by a rest, and more after.
    _first, second, *others = batches[:4]
    assert second and all(batch == second for batch in others)


def test_an_interrupted_purge_goes_on_where_it_stopped(make_app):
    app = make_app(purge_batch_size=2, max_queued_per_device=5)
    clock = freeze_clock(app)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    for _ in range(5):
        alice.send_to(bob, ttl=60)
    far = START_MS + 60_000 + RETENTION_MS
    rests = []

    def stop_after_first_batch(seconds: float) -> bool:
        rests.append(seconds)
        return True

    first = purge(app, far, wait=stop_after_first_batch)

    assert len(rests) == 1
    assert first == {"expired_copies": 2, "deleted_messages": 2, "deleted_idempotency_keys": 0}
    assert stored_counts(app) == {"messages": 3, "bodies": 3, "copies": 3}
    assert queue_counters(app)[bob.device_id] == (3, 3)
    rest = purge(app, far)
    assert rest == {"expired_copies": 3, "deleted_messages": 3, "deleted_idempotency_keys": 0}
    assert stored_counts(app) == NOTHING_STORED
    clock.advance(60 + RETENTION_MS / 1000)
    for _ in range(5):
        alice.send_to(bob)


INI = """\
[app:main]
use = egg:fxchat
sqlalchemy.url = {url}
fxchat.purge_interval = 0
fxchat.ratelimit.enabled = false
"""


def test_purge_command(tmp_path: Path):
    url = databases.sqlite_url(tmp_path)
    databases.migrate(url)
    app = webtest.TestApp(main({}, **{"sqlalchemy.url": url, **TEST_SETTINGS}))
    # Sent in 2001: long expired, and past its receipt retention, now.
    freeze_clock(app, 1_000_000_000.0)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    alice.post(
        "/v1/messages", alice.envelope(bob, ttl=60), headers={"Idempotency-Key": "k"}, status=201
    )
    app.app.registry["db_engine"].dispose()
    ini = tmp_path / "purge.ini"
    ini.write_text(INI.format(url=url))
    command = Path(sys.executable).with_name("fxchat-purge")

    done = subprocess.run([str(command), str(ini)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary) == {
        "expired_copies",
        "deleted_messages",
        "deleted_idempotency_keys",
        "seconds",
    }
    assert (summary["expired_copies"], summary["deleted_messages"]) == (1, 1)
    assert isinstance(summary["seconds"], (int, float))
    for table in ("messages", "bodies", "copies", "idempotency_keys"):
        assert count(app, table) == 0, table

    again = subprocess.run([str(command), str(ini)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert (
        summary["expired_copies"],
        summary["deleted_messages"],
        summary["deleted_idempotency_keys"],
    ) == (0, 0, 0)
    app.app.registry["db_engine"].dispose()


def _wait_until_a_backend_waits_for_a_lock(engine, thread, *, seconds: float = 10) -> None:
    """Return once a backend of this database waits for a lock (the batch, on the lowest device).

    Checking the other devices' locks any earlier would prove nothing: the
    batch might not have tried to lock anything yet.
    """
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + seconds
    with engine.connect() as watcher:
        while not watcher.scalar(waiting):
            assert thread.is_alive(), "the batch ended without waiting for the lowest device"
            assert time.monotonic() < deadline, "the batch never waited for a lock"
            watcher.rollback()  # a fresh snapshot of pg_stat_activity
            time.sleep(0.01)


def test_the_purge_locks_queue_counters_in_the_order_sends_do(postgresql_url, _engines):
    """PostgreSQL: devices' rows are locked in primary-key order, as sends lock them.

    A purge batch lowers many devices' counters at once; were it to lock them
    in another order than sends, a send and a batch sharing two devices could
    each hold one and wait for the other. Here a send's lock on the lowest
    device stops the batch before it has locked any other.
    """
    app = webtest.TestApp(
        main({}, **{"sqlalchemy.url": empty_database(postgresql_url, _engines)}, **TEST_SETTINGS)
    )
    for user in ("alice@example.com", "bob@example.com", "carol@example.com"):
        register(app, user)
    engine = app.app.registry["db_engine"]
    lowest, *others = sorted(device["pk"] for device in rows(app, "devices"))
    with engine.begin() as connection:
        connection.execute(text("UPDATE devices SET queued = 5"))

    lock = text("SELECT pk FROM devices WHERE pk = :pk FOR NO KEY UPDATE")
    sender = engine.connect()
    sender.begin()
    sender.execute(lock, {"pk": lowest})
    failures = []

    def batch():
        try:
            with engine.begin() as connection:
                count_fewer_queued(
                    connection, Counter({pk: 2 for pk in [*reversed(others), lowest]})
                )
        except Exception as error:  # reported below, in the test's thread
            failures.append(error)

    batch_thread = threading.Thread(target=batch)
    batch_thread.start()
    try:
        _wait_until_a_backend_waits_for_a_lock(engine, batch_thread)
        with engine.connect() as probe, probe.begin():
            for pk in others:
                try:
                    probe.execute(text(f"{lock.text} NOWAIT"), {"pk": pk})
                except sqlalchemy.exc.OperationalError:
                    pytest.fail(f"the batch locked device {pk} before device {lowest}")
    finally:
        sender.rollback()
        sender.close()
        batch_thread.join(timeout=10)
    assert not failures
    assert {device["pk"]: device["queued"] for device in rows(app, "devices")} == {
        pk: 3 for pk in [lowest, *others]
    }
    app.app.registry["fxchat.purger"].stop()
    engine.dispose()
