"""The server purges by itself while it runs: a purger thread per process."""

import time

from sqlalchemy import func, select

from fxchat.models import Body, Copy, CopyState

from .conftest import register


def test_a_running_server_expires_copies_and_drops_bodies_by_itself(make_app):
    app = make_app(purge_interval=1)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    message_id = alice.send_to(bob, ttl=1)
    engine = app.app.registry["db_engine"]

    def pending_and_bodies():
        with engine.connect() as connection:
            pending = connection.scalar(
                select(func.count()).select_from(Copy).where(Copy.state == CopyState.PENDING)
            )
            bodies = connection.scalar(select(func.count()).select_from(Body))
        return pending, bodies

    assert pending_and_bodies() == (1, 1)
    deadline = time.monotonic() + 15
    while pending_and_bodies() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pending_and_bodies() == (0, 0)
    [receipt] = alice.get(f"/v1/messages/{message_id}/receipts").json["receipts"]
    assert receipt["status"] == "expired"


def test_purging_can_be_turned_off(make_app):
    app = make_app(purge_interval=0)
    app.get("/__lbheartbeat__")
    assert app.app.registry["fxchat.purger"].pid is None
