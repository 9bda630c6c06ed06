"""Statements run on the driver (fxchat.models.prepared) behave as SQLAlchemy's would.

The API tests exercise them through every send; these pin what a send rarely
meets: IN lists of every length (none included), values written into the
statement, driver errors raised as SQLAlchemy's exceptions (the retry and
503 rules depend on it), and broken connections dropped from the pool.
"""

from __future__ import annotations

import pytest
import sqlalchemy
from sqlalchemy import bindparam, delete, insert, select, update

from fxchat.database_errors import is_unavailable
from fxchat.models import get_engine
from fxchat.models.prepared import Prepared, pooled
from fxchat.models.tables import USERS

_VALUES = {
    "user_id": bindparam("user_id"),
    "created_at": bindparam("created_at"),
    "device_set_version": 0,
}
_ADD_USER = Prepared(insert(USERS).values(_VALUES).returning(USERS.c.pk))
_USERS_NAMED = Prepared(
    select(USERS.c.user_id)
    .where(USERS.c.user_id.in_(bindparam("user_ids", expanding=True)))
    .order_by(USERS.c.user_id),
    lists=["user_ids"],
)
# "+ 1" is a value written into the statement: it must reach the driver too.
_NEXT_VERSION = Prepared(
    update(USERS)
    .where(USERS.c.pk.in_(bindparam("pks", expanding=True)))
    .values(device_set_version=USERS.c.device_set_version + 1)
    .returning(USERS.c.device_set_version),
    lists=["pks"],
)


@pytest.fixture
def engine(clean_database):
    engine = get_engine({"sqlalchemy.url": clean_database})
    yield engine
    engine.dispose()


def test_in_lists_of_every_length(engine):
    with engine.begin() as connection:
        for name in ("ann", "bob", "cy"):
            _ADD_USER.execute(connection, {"user_id": name, "created_at": 1})
        for asked, found in (
            ([], []),
            (["bob"], ["bob"]),
            (["cy", "nobody", "ann"], ["ann", "cy"]),
            (["ann", "bob", "cy"], ["ann", "bob", "cy"]),
        ):
            rows = _USERS_NAMED.execute(connection, {"user_ids": asked})
            assert [user_id for (user_id,) in rows] == found


def test_values_in_the_statement_and_returning(engine):
    with engine.begin() as connection:
        [(pk,)] = _ADD_USER.execute(connection, {"user_id": "ann", "created_at": 1})
        assert _NEXT_VERSION.execute(connection, {"pks": [pk]}) == [(1,)]
        assert _NEXT_VERSION.execute(connection, {"pks": [pk]}) == [(2,)]


def test_writes_share_the_transaction_of_the_connection(engine):
    with engine.connect() as connection:
        connection.begin()
        _ADD_USER.execute(connection, {"user_id": "ann", "created_at": 1})
        connection.rollback()
    with engine.connect() as connection:
        assert _USERS_NAMED.execute(connection, {"user_ids": ["ann"]}) == []


def test_driver_errors_are_sqlalchemy_errors(engine):
    with engine.connect() as connection:
        connection.begin()
        _ADD_USER.execute(connection, {"user_id": "ann", "created_at": 1})
        with pytest.raises(sqlalchemy.exc.IntegrityError) as raised:
            _ADD_USER.execute(connection, {"user_id": "ann", "created_at": 2})
        # Parameters hold token hashes and message bytes: never in the error.
        assert "parameters hidden" in str(raised.value)
        connection.rollback()


def test_execute_many(engine):
    with engine.begin() as connection:
        _ADD_USER_NO_RETURN.execute_many(
            connection, [{"user_id": name, "created_at": 1} for name in ("ann", "bob")]
        )
        rows = _USERS_NAMED.execute(connection, {"user_ids": ["ann", "bob"]})
    assert rows == [("ann",), ("bob",)]


_ADD_USER_NO_RETURN = Prepared(insert(USERS).values(_VALUES))
_FORGET_USERS_BEFORE = Prepared(delete(USERS).where(USERS.c.created_at < bindparam("before")))


def test_execute_counting_says_how_many_rows_changed(engine):
    with engine.begin() as connection:
        _ADD_USER_NO_RETURN.execute_many(
            connection,
            [
                {"user_id": name, "created_at": at}
                for name, at in (("ann", 1), ("bob", 2), ("cy", 3))
            ],
        )
        assert _FORGET_USERS_BEFORE.execute_counting(connection, {"before": 3}) == 2
        assert _FORGET_USERS_BEFORE.execute_counting(connection, {"before": 3}) == 0
        rows = _USERS_NAMED.execute(connection, {"user_ids": ["ann", "bob", "cy"]})
    assert rows == [("cy",)]


def test_a_value_left_to_a_python_default_is_refused(engine):
    # users.device_set_version has default=0, applied by SQLAlchemy only.
    statement = Prepared(insert(USERS).values(user_id=bindparam("user_id"), created_at=1))
    with engine.begin() as connection, pytest.raises(ValueError, match="device_set_version"):
        statement.execute(connection, {"user_id": "ann"})


def test_a_broken_connection_is_invalidated(postgresql_url):
    # Only a server can close a connection under the client: PostgreSQL.
    engine = get_engine({"sqlalchemy.url": postgresql_url})
    with engine.connect() as connection:
        connection.begin()
        _USERS_NAMED.execute(connection, {"user_ids": ["ann"]})
        # Only this connection's backend: other tests' share the database.
        # The timeout makes the call wait until the backend has exited.
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)}, 5000)")
        with pytest.raises(sqlalchemy.exc.DBAPIError) as raised:
            _USERS_NAMED.execute(connection, {"user_ids": ["ann"]})
        assert raised.value.connection_invalidated
        assert connection.invalidated
    # The pool hands out a working connection next.
    with engine.connect() as connection:
        assert _USERS_NAMED.execute(connection, {"user_ids": ["nobody"]}) == []
    engine.dispose()


def test_pooled_connections_commit_each_statement(engine):
    with pooled(engine) as connection:
        _ADD_USER.execute(connection, {"user_id": "ann", "created_at": 1})
    # Seen from another connection: nothing was left to commit.
    with engine.connect() as other:
        assert _USERS_NAMED.execute(other, {"user_ids": ["ann"]}) == [("ann",)]


def test_pooled_connections_go_back_as_they_came(engine):
    # Sessions rely on the driver's own transactions: autocommit must not leak.
    with pooled(engine) as connection:
        driver = connection.driver_connection
    with engine.connect() as connection:
        assert connection.connection.driver_connection is driver
        if engine.dialect.name == "postgresql":
            assert driver.autocommit is False
        connection.begin()
        _ADD_USER.execute(connection, {"user_id": "ann", "created_at": 1})
        connection.rollback()
    with engine.connect() as connection:
        assert _USERS_NAMED.execute(connection, {"user_ids": ["ann"]}) == []


def test_a_database_that_cannot_be_reached_is_a_sqlalchemy_error(postgresql_url):
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    url = sqlalchemy.engine.make_url(postgresql_url).set(port=9)
    engine = get_engine({"sqlalchemy.url": url.render_as_string(hide_password=False)})
    with pytest.raises(sqlalchemy.exc.OperationalError) as raised, pooled(engine):
        pass
    assert is_unavailable(raised.value)
    engine.dispose()


def test_a_pooled_connection_broken_in_use_is_replaced(postgresql_url):
    engine = get_engine({"sqlalchemy.url": postgresql_url})
    with pytest.raises(sqlalchemy.exc.DBAPIError) as raised, pooled(engine) as connection:
        pid = connection.driver_connection.execute("SELECT pg_backend_pid()").fetchone()[0]
        with engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)}, 5000)")
        _USERS_NAMED.execute(connection, {"user_ids": ["ann"]})
    # Leaving the block raised nothing of its own, and dropped the connection.
    assert raised.value.connection_invalidated
    with pooled(engine) as connection:
        assert _USERS_NAMED.execute(connection, {"user_ids": ["nobody"]}) == []
        assert connection.driver_connection.autocommit
    engine.dispose()
