"""bench.floor does a send's real work: what it stores, fxchat delivers.

The floor's rate is the bench page's evidence of what a send costs without
fxchat's framework layers; it means something only if the floor stores the
message as fxchat does, durably and completely.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy
import webtest

from bench import floor
from tests.conftest import TEST_SETTINGS


@pytest.fixture
def floor_app(clean_database):
    app = webtest.TestApp(floor.main({}, **{"sqlalchemy.url": clean_database, **TEST_SETTINGS}))
    yield app
    app.app.registry["db_engine"].dispose()


@pytest.fixture
def one_row_app(clean_database):
    floor.create_rows_table(clean_database)
    settings = {"sqlalchemy.url": clean_database, **TEST_SETTINGS}
    app = webtest.TestApp(floor.one_row({}, **settings))
    yield app
    engine = app.app.registry["db_engine"]
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"DROP TABLE {floor.ROWS_TABLE}"))
    engine.dispose()


def _send(floor_app, sender, envelope, *, status, key=None):
    headers = {"Authorization": f"Bearer {sender.token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return floor_app.post("/v1/messages", json.dumps(envelope), headers=headers, status=status)


def test_a_send_through_the_floor_is_delivered_by_fxchat(floor_app, alice, bob):
    envelope = alice.envelope(bob)
    sent = _send(floor_app, alice, envelope, status=201).json

    (delivered,) = bob.inbox()
    assert delivered["id"] == sent["id"]
    assert delivered["encrypted_message"] == envelope["encrypted_message"]
    assert delivered["msg_sig"] == envelope["recipients"][0]["msg_sig"]
    assert delivered["sent_at"] == sent["sent_at"]


def test_the_floor_keeps_the_idempotency_key(floor_app, alice, bob):
    envelope = alice.envelope(bob)
    first = _send(floor_app, alice, envelope, status=201, key="once").json
    again = _send(floor_app, alice, envelope, status=201, key="once").json

    assert again["id"] == first["id"]
    assert [m["id"] for m in bob.inbox()] == [first["id"]]


def test_the_floor_stores_nothing_it_refuses(floor_app, alice, bob):
    _send(floor_app, alice, {"suite": "fxchat-1"}, status=400)
    floor_app.post(
        "/v1/messages",
        json.dumps(alice.envelope(bob)),
        headers={"Authorization": "Bearer not-a-token"},
        status=401,
    )

    assert bob.inbox() == []


def test_the_floor_refuses_a_send_to_devices_that_are_not_the_recipients(floor_app, alice, bob):
    stale = alice.envelope(bob)
    bob.add_device()  # the envelope now misses one of bob's devices

    refused = _send(floor_app, alice, stale, status=409)

    assert refused.json["status"] == "error"
    assert bob.inbox() == []


def test_one_row_stores_each_body_as_one_row(one_row_app):
    bodies = [json.dumps({"n": n}).encode() for n in range(3)]
    for body in bodies:
        one_row_app.post("/v1/messages", body, status=201)
    one_row_app.post("/v1/messages", b"{not json", status=400)

    with one_row_app.app.registry["db_engine"].connect() as connection:
        stored = connection.execute(
            sqlalchemy.text(f"SELECT body FROM {floor.ROWS_TABLE} ORDER BY id")
        ).scalars()
        assert [bytes(body) for body in stored] == bodies
