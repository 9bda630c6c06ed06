"""The Idempotency-Key of POST /v1/messages (PROTOCOL.md §3.2): a repeat stores nothing new."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy
import webtest

from .checks import (
    DAY,
    START_MS,
    count,
    error_body,
)


def idempotent_send(device, body, key, status=201):
    return device.post("/v1/messages", body, headers={"Idempotency-Key": key}, status=status)


def test_repeat_with_the_same_key_returns_the_first_answer(app, alice, bob):
    body = alice.envelope(bob)
    first = idempotent_send(alice, body, "send-1")
    again = idempotent_send(alice, body, "send-1")
    assert again.json == first.json
    assert count(app, "messages") == 1
    assert [m["id"] for m in bob.inbox()] == [first.json["id"]]


def test_repeat_answers_the_same_even_when_the_devices_changed(app, alice, bob):
    body = alice.envelope(bob)
    first = idempotent_send(alice, body, "send-1")
    bob.add_device()
    again = idempotent_send(alice, body, "send-1")
    assert again.json == first.json
    assert count(app, "messages") == 1


def test_same_key_with_another_body_gets_422(app, alice, bob):
    idempotent_send(alice, alice.envelope(bob), "send-1")
    refused = idempotent_send(alice, alice.envelope(bob), "send-1", status=422)
    assert refused.json == error_body("header", "Idempotency-Key")
    assert count(app, "messages") == 1


def test_same_key_from_another_device_is_independent(app, alice, bob):
    phone = alice.add_device()
    body = phone.envelope(bob)
    first = idempotent_send(alice, body, "send-1")
    other = idempotent_send(phone, body, "send-1")
    assert other.json["id"] != first.json["id"]
    assert count(app, "messages") == 2
    assert len(bob.inbox()) == 2


def test_different_keys_store_different_messages(app, alice, bob):
    body = alice.envelope(bob)
    first = idempotent_send(alice, body, "send-1")
    second = idempotent_send(alice, body, "send-2")
    assert first.json["id"] != second.json["id"]
    assert count(app, "messages") == 2


def test_key_is_remembered_for_24_hours(app, clock, alice, bob):
    body = alice.envelope(bob)
    first = idempotent_send(alice, body, "send-1")
    clock.advance(DAY - 1)
    assert idempotent_send(alice, body, "send-1").json == first.json
    clock.advance(1)
    later = idempotent_send(alice, body, "send-1")
    assert later.json["id"] != first.json["id"]
    assert later.json["sent_at"] == START_MS + DAY * 1000
    assert count(app, "messages") == 2
    # The new send is now the one a repeat returns.
    assert idempotent_send(alice, body, "send-1").json == later.json


def test_refused_send_does_not_take_the_key(app, alice, bob):
    phone = bob.add_device()
    body = alice.envelope(bob)
    idempotent_send(alice, body, "send-1", status=409)
    body = alice.envelope(bob, phone)
    sent = idempotent_send(alice, body, "send-1")
    assert [m["id"] for m in phone.inbox()] == [sent.json["id"]]


def test_concurrent_repeats_are_answered_like_one_send(app, alice, bob, database_kind):
    """Two sends with one key at once: both get the answer of the one that is stored.

    On PostgreSQL both are held at the recipient's row lock after each found
    no earlier send; once released, one stores the message and the other's
    key collides with it, and is retried (pyramid_retry) into the first
    one's answer. SQLite runs one writer at a time: the second sees the key.
    """
    body = alice.envelope(bob)
    engine = app.app.registry["db_engine"]
    answers = []

    def send_once():
        twin = webtest.TestApp(app.app)
        answers.append(
            twin.post_json(
                "/v1/messages",
                body,
                headers={**alice.headers, "Idempotency-Key": "send-1"},
                status="*",
            )
        )

    threads = [threading.Thread(target=send_once) for _ in range(2)]
    with engine.connect() as blocker:
        if database_kind == "postgresql":
            blocker.execute(
                sqlalchemy.text("SELECT 1 FROM devices WHERE device_id = :d FOR UPDATE"),
                {"d": bob.device_id},
            )
        for thread in threads:
            thread.start()
        if database_kind == "postgresql":
            _wait_for_lock_waiters(blocker, 2)
        blocker.commit()
    for thread in threads:
        thread.join(30)
    assert [a.status_int for a in answers] == [201, 201]
    assert answers[0].json == answers[1].json
    assert count(app, "messages") == 1
    assert [m["id"] for m in bob.inbox()] == [answers[0].json["id"]]


def _wait_for_lock_waiters(connection, n: int, timeout: float = 10) -> None:
    waiting = sqlalchemy.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.engine.connect() as observer:
            if observer.scalar(waiting) >= n:
                return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} sends waited for the lock")


@pytest.mark.parametrize(
    "key",
    ["a" * 65, "", "two words", "tab\tkey", "caf\u00e9"],
    ids=["65 chars", "empty", "space", "tab", "non-ascii"],
)
def test_invalid_idempotency_key_gets_400(new_user, key):
    alice, bob = new_user("alice"), new_user("bob")
    refused = alice.post(
        "/v1/messages", alice.envelope(bob), headers={"Idempotency-Key": key}, status=400
    )
    assert refused.json == error_body("header", "Idempotency-Key")
    assert bob.inbox() == []


def test_idempotency_key_of_64_characters_is_accepted(app, alice, bob):
    body = alice.envelope(bob)
    key = "".join(chr(c) for c in range(0x21, 0x7F))[:64]  # printable ASCII
    first = idempotent_send(alice, body, key)
    assert idempotent_send(alice, body, key).json == first.json
    assert count(app, "messages") == 1
