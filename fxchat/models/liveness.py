"""Pinging pooled connections that sat idle, instead of every checkout.

SQLAlchemy's ``pool_pre_ping`` sends a ``SELECT 1`` each time a request takes
a connection from the pool: one more round trip per request, for a check
that only matters after the connection has been idle (a database restart,
an idle timeout of a proxy or firewall). This pings a connection only when
it comes out of the pool after more than ``IDLE_BEFORE_PING`` seconds; a
dead one is replaced, as with ``pool_pre_ping`` (SQLAlchemy's documented
"pessimistic" handling: raising ``DisconnectionError`` at checkout).

A connection broken while it was busy, or idle for less than that, fails
its request with 503 (fxchat.database_errors), as before.
"""

from __future__ import annotations

import time

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine

IDLE_BEFORE_PING = 1.0
_RETURNED_AT = "fxchat_returned_at"


def ping_idle_connections(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _fresh(dbapi_connection, record):
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection, record):
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, proxy):
        if time.monotonic() - record.info.get(_RETURNED_AT, 0.0) <= IDLE_BEFORE_PING:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            # The driver opened a transaction for the ping: end it, so the
            # request's transaction starts with the request.
            dbapi_connection.rollback()
        except Exception as error:
            # The pool discards this connection and tries another (or a new one).
            raise exc.DisconnectionError(str(error)) from error
