"""PostgreSQL closes the server's idle connections (a restart, a proxy's idle timeout).

Connections idle for longer than ``IDLE_BEFORE_PING`` are pinged when they
leave the pool and replaced if dead, so the next requests succeed; a
connection reused sooner is not pinged (that is the point: no round trip per
request under load), and a request on a dead one is a 503, never a 500.
"""

from __future__ import annotations

import secrets
import time

import pytest
import sqlalchemy
import webtest

from fxchat import main
from fxchat.models import liveness

from .conftest import TEST_SETTINGS, register
from .servers import postgresql_database


def close_server_connections(url: str) -> int:
    """End every other backend of the database, as a restart would."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return len(
                connection.execute(
                    sqlalchemy.text(
                        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).all()
            )
    finally:
        engine.dispose()


@pytest.fixture
def postgresql_app(request):
    # A database of its own: ending its backends must not touch other tests'.
    with postgresql_database(request.config) as url:
        app = webtest.TestApp(main({}, **{"sqlalchemy.url": url, **TEST_SETTINGS}))
        yield app
        app.app.registry["db_engine"].dispose()


def test_idle_connections_closed_by_the_server_are_replaced(postgresql_app, monkeypatch):
    monkeypatch.setattr(liveness, "IDLE_BEFORE_PING", 0.2)
    alice = register(postgresql_app, f"alice-{secrets.token_hex(4)}@example.com")
    alice.get("/v1/messages")
    assert close_server_connections(postgresql_app.app.registry["db_engine"].url) >= 1
    time.sleep(0.3)
    for _ in range(3):
        alice.get("/v1/messages", status=200)


def test_without_the_ping_a_dead_connection_fails_its_request_cleanly(postgresql_app, monkeypatch):
    # The counterpart, which shows the test above can fail: a connection
    # reused before the idle threshold is not pinged.
    monkeypatch.setattr(liveness, "IDLE_BEFORE_PING", 3600)
    alice = register(postgresql_app, f"alice-{secrets.token_hex(4)}@example.com")
    alice.get("/v1/messages")
    assert close_server_connections(postgresql_app.app.registry["db_engine"].url) >= 1
    response = alice.get("/v1/messages", status=503)
    assert response.headers["Retry-After"]
    # The pool dropped the dead connection: the next request gets a new one.
    alice.get("/v1/messages", status=200)
