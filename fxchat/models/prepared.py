"""Hot-path statements: written in Core, compiled once, run on the driver's cursor.

SQLAlchemy's execution of a statement (execution context, parameter
processing, events, result object) costs 20 to 70 µs; sqlite3 runs a
one-row lookup or insert in 2 to 10 µs, and a send on SQLite is nine statements. The
statements of the requests that every client makes all the time (send,
authentication, fetch, acknowledgement), and those of the purge's batches on
SQLite, which hold its only write lock, are still written in Core, so that
SQLAlchemy renders them for each dialect, but each is compiled once per
dialect and list length and run with the DBAPI cursor of the connection: the
session's own (the same transaction) or one taken from the pool for a
statement or a short transaction of its own (:func:`pooled`), with none of
the per-statement work.

Column defaults computed in Python are not applied: a statement names every
value it writes (one that does not is refused when first compiled).

Driver errors are raised as SQLAlchemy's exceptions, exactly as
``Connection.execute`` would raise them, so the retry and 503 rules
(fxchat.database_errors) and the pool's invalidation of broken connections
see no difference.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.sql import ClauseElement

# Called with the SQL of every statement run here, as SQLAlchemy's
# before_cursor_execute listeners would be (these statements bypass them):
# the benchmarks count a send's statements with it.
observers: list[Callable[[str], None]] = []


class PooledConnection:
    """A connection of the engine's pool used outside any Session (see :func:`pooled`)."""

    __slots__ = ("dialect", "pooled", "driver_connection")

    def __init__(self, engine: Engine):
        self.dialect = engine.dialect
        try:
            self.pooled = engine.raw_connection()
        except self.dialect.loaded_dbapi.Error as error:
            # As Engine.connect raises it: the database is not there (503).
            raise exc.DBAPIError.instance(
                None,
                None,
                error,
                self.dialect.loaded_dbapi.Error,
                hide_parameters=True,
                connection_invalidated=self.dialect.is_disconnect(error, None, None),
                dialect=self.dialect,
            ) from error
        self.driver_connection = self.pooled.driver_connection

    @property
    def info(self) -> dict:
        """The pool's dictionary for this connection (kept while it lives)."""
        return self.pooled.info

    def invalidate(self, error: BaseException) -> None:
        self.pooled.invalidate(error)


@contextmanager
def pooled(engine: Engine) -> Iterator[PooledConnection]:
    """A pooled connection in autocommit: each statement is its own transaction.

    For what is one statement (authentication, a send on PostgreSQL) or a
    short transaction of its own (a send on SQLite, which issues BEGIN
    itself): no Session, no BEGIN and COMMIT round trips, no transaction
    manager. SQLite's connections are in autocommit already
    (``isolation_level=None``, see fxchat.models.get_engine).
    """
    connection = PooledConnection(engine)
    postgresql = connection.dialect.name == "postgresql"
    try:
        if postgresql:
            _set_autocommit(connection)
        yield connection
    finally:
        if postgresql and connection.pooled.dbapi_connection is not None:
            try:
                connection.driver_connection.autocommit = False
            except connection.dialect.loaded_dbapi.Error as error:
                # Broken while in use: the pool replaces it.
                connection.invalidate(error)
        # Back to the pool, which ends any transaction left open.
        connection.pooled.close()


def _set_autocommit(connection: PooledConnection) -> None:
    driver = connection.driver_connection
    try:
        if driver.info.transaction_status != driver.info.transaction_status.IDLE:
            # Never so from the pool (it rolls back what it takes back);
            # autocommit can only be set on an idle connection.
            driver.rollback()
        driver.autocommit = True
    except connection.dialect.loaded_dbapi.Error as error:
        raise _as_sqlalchemy_error(connection, driver, None, "ROLLBACK", (), error) from error


class _Compiled:
    """One rendering of a statement: its SQL, how to lay out its parameters, how to run it."""

    __slots__ = (
        "sql",
        "run",
        "_defaults",
        "_expansion",
        "_positions",
        "_processors",
        "_as_given",
        "_in_order",
    )

    def __init__(self, compiled, lists: Mapping[str, int]):
        # Placeholder values: only the lengths of the IN lists shape the SQL.
        placeholders = {name: None for name in compiled.binds} | {
            name: [None] * n for name, n in lists.items()
        }
        expanded = compiled.construct_expanded_state(placeholders)
        self.sql: str = expanded.statement
        # Known here, so that no cursor is asked for its description (which
        # psycopg builds column by column) just to know whether to fetch.
        dml = compiled.isinsert or compiled.isupdate or compiled.isdelete
        returns_rows = not dml or bool(compiled.effective_returning)
        self.run: Callable = (
            _execute
            if not returns_rows
            else _execute_and_fetch_binary
            if compiled.dialect.driver == "psycopg"
            else _execute_and_fetch
        )
        # Values written into the statement (literals such as the 1 of
        # "queued + 1"): SQLAlchemy sends them as parameters too.
        self._defaults = {
            compiled.bind_names[bind]: bind.effective_value
            for bind in compiled.binds.values()
            if not bind.required
        }
        # An IN list becomes one parameter per item.
        self._expansion: dict[str, list[str]] = dict(expanded.parameter_expansion)
        self._positions = tuple(expanded.positiontup) if expanded.positiontup else None
        # Types that convert values for the driver (few do: ints, strings and
        # bytes go as they are), applied as SQLAlchemy would.
        self._processors = dict(expanded.processors)
        # Most statements take their values as given: no copy for them.
        self._as_given = not (self._defaults or self._expansion or self._processors)
        self._in_order = _picker(self._positions) if self._positions is not None else None

    def parameters(self, values: Mapping[str, Any]) -> Sequence | Mapping[str, Any]:
        if self._as_given:
            flat = values
        else:
            flat = self._defaults | dict(values)
            for name, names in self._expansion.items():
                flat.update(zip(names, flat.pop(name), strict=True))
            for name, processor in self._processors.items():
                if name in flat:
                    flat[name] = processor(flat[name])
        if self._in_order is not None:
            return self._in_order(flat)
        return flat


def _picker(names: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple]:
    """The values of ``names``, in that order, as a tuple (positional parameters)."""
    if len(names) == 1:
        [name] = names
        return lambda values: (values[name],)
    return operator.itemgetter(*names) if names else lambda values: ()


class Prepared:
    """A Core statement to run on the driver; ``lists`` names its expanding IN parameters."""

    def __init__(self, statement: ClauseElement, *, lists: Iterable[str] = ()):
        self.statement = statement
        self.lists = tuple(lists)
        self._compiled: dict[str, Any] = {}
        # One rendering per dialect and IN-list lengths met: bounded by the
        # request limits (recipients per send, ids per acknowledgement).
        self._renderings: dict[tuple, _Compiled] = {}

    def _rendering(self, dialect: Dialect, values: Mapping[str, Any]) -> _Compiled:
        lengths = tuple([len(values[name]) for name in self.lists]) if self.lists else ()
        key = (dialect.name, lengths)
        rendering = self._renderings.get(key)
        if rendering is None:
            # Racing threads may both compile; either result is the same.
            compiled = self._compiled.get(dialect.name)
            if compiled is None:
                compiled = self.statement.compile(dialect=dialect)
                unset = [*compiled.insert_prefetch, *compiled.update_prefetch]
                if unset:
                    raise ValueError(
                        f"give {', '.join(c.name for c in unset)} a value: their defaults"
                        " are computed in Python, which a prepared statement skips"
                    )
                self._compiled[dialect.name] = compiled
            rendering = _Compiled(compiled, dict(zip(self.lists, lengths, strict=True)))
            self._renderings[key] = rendering
        return rendering

    def execute(
        self, connection: Connection | PooledConnection, values: Mapping[str, Any]
    ) -> list[tuple]:
        """Run on ``connection`` (in its transaction, if any); the rows (empty for no result)."""
        rendering = self._rendering(connection.dialect, values)
        return _on_driver(connection, rendering.sql, rendering.parameters(values), rendering.run)

    def execute_counting(
        self, connection: Connection | PooledConnection, values: Mapping[str, Any]
    ) -> int:
        """Run on ``connection``; how many rows it changed (an UPDATE's or a DELETE's)."""
        rendering = self._rendering(connection.dialect, values)
        return _on_driver(
            connection, rendering.sql, rendering.parameters(values), _execute_and_count
        )

    def execute_many(
        self, connection: Connection | PooledConnection, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Run once per row of ``rows`` (no IN lists, no results), with the driver's executemany.

        A single row is run as one statement: psycopg's executemany costs
        it about 35 us more of CPU, on the acknowledgement's and the send's
        paths, where one row is the rule.
        """
        rendering = self._rendering(connection.dialect, rows[0])
        if len(rows) == 1:
            _on_driver(connection, rendering.sql, rendering.parameters(rows[0]), _execute)
            return
        parameters = [rendering.parameters(row) for row in rows]
        _on_driver(
            connection, rendering.sql, parameters, lambda cursor, sql, p: cursor.executemany(sql, p)
        )


def run_command(connection: PooledConnection, sql: str) -> None:
    """A statement without parameters or result (``BEGIN IMMEDIATE``, ``COMMIT``), on the driver."""
    _on_driver(connection, sql, (), lambda cursor, sql, parameters: cursor.execute(sql))


def _execute_and_fetch(cursor, sql, parameters) -> list[tuple]:
    cursor.execute(sql, parameters)
    return cursor.fetchall()


def _execute_and_fetch_binary(cursor, sql, parameters) -> list[tuple]:
    # Rows in PostgreSQL's binary format: a page of 500 bodies then travels
    # as bytes, not as hex text that the server writes and psycopg parses
    # back (a page's statement took two thirds of the time, and half the
    # worker's CPU).
    cursor.execute(sql, parameters, binary=True)
    return cursor.fetchall()


def _execute(cursor, sql, parameters) -> list[tuple]:
    cursor.execute(sql, parameters)
    return []


def _execute_and_count(cursor, sql, parameters) -> int:
    cursor.execute(sql, parameters)
    return cursor.rowcount


# Where a driver connection keeps its one cursor (in the pool's dictionary of
# that connection, which a new connection gets empty).
_CURSOR = "fxchat_cursor"


def _on_driver(connection: Connection | PooledConnection, sql: str, parameters, run: Callable):
    """``run(cursor, sql, parameters)`` on the cursor of ``connection``'s driver connection."""
    dialect = connection.dialect
    if isinstance(connection, PooledConnection):
        dbapi_connection, info = connection.driver_connection, connection.info
    else:
        dbapi_connection, info = connection.connection.driver_connection, connection.connection.info
    # One cursor per connection, made once: a connection serves one request at
    # a time, and making and closing a cursor per statement cost psycopg more
    # than some statements.
    cursor = info.get(_CURSOR)
    if cursor is None:
        cursor = info[_CURSOR] = dbapi_connection.cursor()
    for observe in observers:
        observe(sql)
    try:
        return run(cursor, sql, parameters)
    except dialect.loaded_dbapi.Error as error:
        raise _as_sqlalchemy_error(
            connection, dbapi_connection, cursor, sql, parameters, error
        ) from error


def _as_sqlalchemy_error(
    connection: Connection | PooledConnection, dbapi_connection, cursor, sql, parameters, error
):
    """The exception ``Connection.execute`` would raise for ``error``; drops a broken connection."""
    dialect = connection.dialect
    disconnected = dialect.is_disconnect(error, dbapi_connection, cursor)
    if disconnected:
        connection.invalidate(error)
    return exc.DBAPIError.instance(
        sql,
        parameters,
        error,
        dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=disconnected,
        dialect=dialect,
    )
