"""Retention (PROTOCOL.md §3.6): purge old receipts, expire copies, drop bodies.

Everything is done in small batches, each its own transaction, so that a
purge never holds locks for long and can be interrupted at any point
without harm: every step is idempotent and picks up where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy import (
    BigInteger,
    String,
    any_,
    bindparam,
    delete,
    exists,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..models import CopyState
from ..models.prepared import Prepared
from ..models.tables import BODIES, COPIES, DEVICES, IDEMPOTENCY_KEYS, MESSAGES, PENDING

logger = logging.getLogger(__name__)


def _any_of(column, name: str):
    """PostgreSQL: ``column = ANY(array)``, the values as one array parameter.

    An expanding IN renders a placeholder per value (thousands in a batch of
    the purge), which the purge's process spent most of its time rendering
    and parsing, and PostgreSQL parsing and planning again for every batch.
    """
    return column == any_(bindparam(name, type_=ARRAY(BigInteger)))


def _in_json_list(column, name: str):
    """SQLite: ``column IN (SELECT value FROM json_each(:name))``, the values as one JSON array.

    The same SQL whatever the number of values, so that it is compiled once
    (fxchat.models.prepared) and sqlite3 finds it prepared in its statement
    cache, where an expanding IN is rendered and prepared again for every
    batch size. A purge batch on SQLite holds the only write lock: in
    SQLAlchemy's execution of its statements it spent a third of that time.
    """
    values = func.json_each(bindparam(name, type_=String)).table_valued("value")
    return column.in_(select(values.c.value))


def _comma_list(pks: Iterable[int]) -> str:
    """Primary keys as one text of comma-separated integers."""
    return ",".join(str(int(pk)) for pk in pks)


def _json_list(pks: Iterable[int]) -> str:
    """Primary keys as the JSON array that :func:`_in_json_list` takes."""
    return f"[{_comma_list(pks)}]"


# The statements of the purge, built once.
_EXPIRED_COPIES = (
    select(COPIES.c.pk, COPIES.c.device_pk, COPIES.c.message_pk)
    .where(COPIES.c.state == PENDING, COPIES.c.expires_at <= bindparam("now"))
    .order_by(COPIES.c.expires_at)
    .limit(bindparam("size"))
    # Concurrent sweeps share the work.
    .with_for_update(skip_locked=True)
)
_EXPIRED_VALUES = dict(
    state=CopyState.EXPIRED, encrypted_aes_key=None, msg_sig=None, msg_pub_key=None
)


@dataclass(frozen=True)
class _Expiry:
    """A database's statements of the expiry, and how they take a list of keys."""

    of_all_devices: Prepared  # pending copies past their expiry
    of_devices: Prepared  # the same, in the queues of ``device_pks``
    expire: Prepared  # expires ``copy_pks``
    keys: Callable[[Iterable[int]], object]


def _expiry(in_list: Callable, keys: Callable) -> _Expiry:
    """``in_list(column, name)`` matches a column against the list parameter ``name``."""
    return _Expiry(
        Prepared(_EXPIRED_COPIES),
        Prepared(_EXPIRED_COPIES.where(in_list(COPIES.c.device_pk, "device_pks"))),
        Prepared(update(COPIES).where(in_list(COPIES.c.pk, "copy_pks")).values(**_EXPIRED_VALUES)),
        keys,
    )


_EXPIRY = {
    "sqlite": _expiry(_in_json_list, _json_list),
    "postgresql": _expiry(_any_of, list),
}

# One device at a time (SQLite, or a single device on PostgreSQL).
_COUNT_FEWER_QUEUED = Prepared(
    update(DEVICES)
    .where(DEVICES.c.pk == bindparam("device_pk"))
    .values(queued=DEVICES.c.queued - bindparam("fewer"))
)
_OLD_MESSAGES = (
    select(MESSAGES.c.pk)
    .where(MESSAGES.c.expires_at <= bindparam("before"))
    .order_by(MESSAGES.c.expires_at)
    .limit(bindparam("size"))
    # Concurrent purges share the work; a message being acknowledged waits.
    .with_for_update(skip_locked=True)
)
# What goes with the messages after their copies, children first.
_OF_MESSAGES = (
    (IDEMPOTENCY_KEYS, IDEMPOTENCY_KEYS.c.message_pk),
    (BODIES, BODIES.c.message_pk),
    (MESSAGES, MESSAGES.c.pk),
)
# SQLite: the deletion of old messages, run on the driver (see _in_json_list).
_OLD_MESSAGES_SQLITE = Prepared(_OLD_MESSAGES)
_OF_THE_MESSAGES_SQLITE = _in_json_list(COPIES.c.message_pk, "message_pks")
# One statement for every device, cheaper than one per device.
_PENDING_PER_DEVICE = (
    select(COPIES.c.device_pk, func.count().label("fewer"))
    .where(_OF_THE_MESSAGES_SQLITE, COPIES.c.state == PENDING)
    .group_by(COPIES.c.device_pk)
    .subquery()
)
_COUNT_FEWER_QUEUED_FOR_MESSAGES_SQLITE = Prepared(
    update(DEVICES)
    .where(DEVICES.c.pk == _PENDING_PER_DEVICE.c.device_pk)
    .values(queued=DEVICES.c.queued - _PENDING_PER_DEVICE.c.fewer)
)
_DELETE_PENDING_COPIES_SQLITE = Prepared(
    delete(COPIES).where(_OF_THE_MESSAGES_SQLITE, COPIES.c.state == PENDING)
)
_DELETE_COPIES_SQLITE = Prepared(delete(COPIES).where(_OF_THE_MESSAGES_SQLITE))
_DELETE_WITH_MESSAGES_SQLITE = [
    Prepared(delete(table).where(_in_json_list(column, "message_pks")))
    for table, column in _OF_MESSAGES
]
_DELETE_WITH_MESSAGES_POSTGRESQL = [
    delete(table).where(_any_of(column, "message_pks")) for table, column in _OF_MESSAGES
]
_DELETED_COPIES = (
    delete(COPIES)
    .where(_any_of(COPIES.c.message_pk, "message_pks"))
    # The state each copy had when it was deleted, after any concurrent
    # expiry of it by a send's sweep.
    .returning(COPIES.c.device_pk, COPIES.c.state)
    .cte("deleted")
)
# The pending copies deleted, per device: at most one row per device instead
# of one per copy.
_DELETE_COPIES_COUNTING_PENDING = (
    select(_DELETED_COPIES.c.device_pk, func.count())
    .where(_DELETED_COPIES.c.state == PENDING)
    .group_by(_DELETED_COPIES.c.device_pk)
)
# PostgreSQL: the devices' counters of a batch in two statements instead of
# one per device. The rows are locked first in primary-key order, as sends
# lock them, so that the two never deadlock; then updated together.
_LOCK_DEVICES_POSTGRESQL = (
    select(DEVICES.c.pk)
    .where(_any_of(DEVICES.c.pk, "device_pks"))
    .order_by(DEVICES.c.pk)
    .with_for_update(key_share=True)  # FOR NO KEY UPDATE
)
_COUNT_FEWER_QUEUED_POSTGRESQL = text(
    "UPDATE devices SET queued = devices.queued - f.fewer "
    "FROM unnest(CAST(:device_pks AS bigint[]), CAST(:fewer AS bigint[])) AS f(pk, fewer) "
    "WHERE devices.pk = f.pk"
)


@dataclass
class PurgeReport:
    expired_copies: int = 0
    deleted_messages: int = 0
    deleted_idempotency_keys: int = 0
    batches: int = field(default=0, repr=False)
    # Another purge of the same database was running: this one did nothing.
    skipped: bool = False

    def as_json(self) -> dict:
        report = {
            "expired_copies": self.expired_copies,
            "deleted_messages": self.deleted_messages,
            "deleted_idempotency_keys": self.deleted_idempotency_keys,
        }
        return {**report, "skipped": True} if self.skipped else report


@dataclass(frozen=True)
class Pace:
    """How hard a purge pushes against the requests served meanwhile.

    Batches start at ``first_batch`` rows and are then sized so that each
    transaction lasts about ``batch_seconds`` (never more rows than the batch
    size given), and after each one the purge rests ``rest`` times as long as
    the batch took, so that the writers that queued behind it go first.
    """

    batch_seconds: float | None = None  # None: always the full batch size
    rest: float = 0.0
    first_batch: int = 100


@dataclass(frozen=True)
class DeletedMessages:
    messages: int
    pending_copies: int  # copies deleted before they were acknowledged or expired


def purge(
    transaction: Callable[[], AbstractContextManager[Session]],
    *,
    now: int,
    receipt_retention: int,
    idempotency_window: int,
    batch_size: int,
    pace: Pace = Pace(),
    wait: Callable[[float], object] = time.sleep,
) -> PurgeReport:
    """Run every retention step until nothing is left to do.

    ``transaction()`` gives a context manager yielding a session whose work is
    committed when the block ends. ``wait(seconds)`` rests between batches; a
    true answer stops the purge there (the next purge goes on from there).
    """
    report = PurgeReport()

    def delete_messages(dbsession: Session, size: int) -> int:
        deleted = delete_old_messages(
            dbsession, before=now - receipt_retention * 1000, batch_size=size
        )
        report.deleted_messages += deleted.messages
        # Pending copies of messages past their retention were long expired:
        # deleting them is their expiry.
        report.expired_copies += deleted.pending_copies
        return deleted.messages

    def expire(dbsession: Session, size: int) -> int:
        done = expire_copies(dbsession, now=now, batch_size=size)
        report.expired_copies += done
        return done

    def forget_keys(dbsession: Session, size: int) -> int:
        done = forget_idempotency_keys(
            dbsession, before=now - idempotency_window * 1000, batch_size=size
        )
        report.deleted_idempotency_keys += done
        return done

    # Deleting first: what is past its receipt retention is deleted outright,
    # not first expired (a write of every row) and deleted afterwards.
    for step in (delete_messages, expire, forget_keys):
        size = batch_size if pace.batch_seconds is None else min(pace.first_batch, batch_size)
        while True:
            with transaction() as dbsession:
                # Timed from when the write lock is held, where there is one.
                dbsession.connection()
                started = time.perf_counter()
                done = step(dbsession, size)
            took = time.perf_counter() - started
            report.batches += 1
            if done < size:
                break
            if wait(took * pace.rest):
                return report
            if pace.batch_seconds is not None:
                size = _next_batch_size(size, took, pace.batch_seconds, batch_size)
    return report


def _next_batch_size(size: int, took: float, target: float, largest: int) -> int:
    """The size that should take ``target`` seconds, at most twice or a quarter of the last."""
    wanted = size * target / max(took, 1e-6)
    return max(1, min(largest, size * 2, max(size // 4, int(wanted))))


def expire_copies(
    dbsession: Session, *, now: int, batch_size: int, device_pks: Collection[int] = ()
) -> int:
    """Turn pending copies past their expiry into expired receipts, freeing queue places.

    ``device_pks`` limits the sweep to those devices' queues.
    """
    params = {"now": now, "size": batch_size}
    connection = dbsession.connection()
    expiry = _EXPIRY[connection.dialect.name]
    if device_pks:
        params["device_pks"] = expiry.keys(device_pks)
        rows = expiry.of_devices.execute(connection, params)
    else:
        rows = expiry.of_all_devices.execute(connection, params)
    if not rows:
        return 0
    # Locked (FOR UPDATE), so still pending.
    expiry.expire.execute(connection, {"copy_pks": expiry.keys(pk for pk, _, _ in rows)})
    count_fewer_queued(connection, Counter(device_pk for _, device_pk, _ in rows))
    drop_unneeded_bodies(dbsession, [message_pk for _, _, message_pk in rows])
    return len(rows)


def count_fewer_queued(connection: Connection, per_device: Counter) -> None:
    # In primary-key order, like sends, so the two never deadlock.
    device_pks = sorted(pk for pk, fewer in per_device.items() if fewer)
    if len(device_pks) > 1 and connection.dialect.name == "postgresql":
        params = {"device_pks": device_pks, "fewer": [per_device[pk] for pk in device_pks]}
        connection.execute(_LOCK_DEVICES_POSTGRESQL, params).all()
        connection.execute(_COUNT_FEWER_QUEUED_POSTGRESQL, params)
    elif device_pks:
        _COUNT_FEWER_QUEUED.execute_many(
            connection, [{"device_pk": pk, "fewer": per_device[pk]} for pk in device_pks]
        )


def drop_unneeded_bodies(dbsession: Session, message_pks: list[int]) -> int:
    """Delete the bodies of these messages that no device is still waiting for.

    Called wherever copies stop being pending (acknowledgement, expiry,
    revocation of their device), so no sweep over all bodies is needed.
    """
    if not message_pks:
        return 0
    connection = dbsession.connection()
    if connection.dialect.name == "postgresql":
        # One text parameter, whatever the number of messages: the statement
        # is the same every time, so PostgreSQL plans it once per connection
        # instead of parsing 500 placeholders per acknowledgement. Text, not
        # an array parameter as the purge's statements take (_any_of): this
        # runs in every acknowledgement, and psycopg adapts a list item by
        # item in Python (500 pks: 240 us, against 67 us to join them, on
        # the machine of docs/performance.rst on 2026-12-05), as the
        # acknowledgement's own lists travel (fxchat.services.inbox).
        pks = _comma_list(set(message_pks))
        return connection.execute(_DROP_UNNEEDED_BODIES_POSTGRESQL, {"message_pks": pks}).rowcount
    return _DROP_UNNEEDED_BODIES_SQLITE.execute_counting(
        connection, {"message_pks": _json_list(set(message_pks))}
    )


_STILL_PENDING = exists().where(
    COPIES.c.message_pk == BODIES.c.message_pk, COPIES.c.state == PENDING
)
_DROP_UNNEEDED_BODIES_SQLITE = Prepared(
    delete(BODIES).where(_in_json_list(BODIES.c.message_pk, "message_pks"), ~_STILL_PENDING)
)
_DROP_UNNEEDED_BODIES_POSTGRESQL = delete(BODIES).where(
    BODIES.c.message_pk
    == func.any(
        func.string_to_array(bindparam("message_pks", type_=String), ",").cast(ARRAY(BigInteger))
    ),
    ~_STILL_PENDING,
)


def delete_old_messages(dbsession: Session, *, before: int, batch_size: int) -> DeletedMessages:
    """Delete messages whose receipt retention has passed, with their copies and bodies.

    Copies still pending (never expired by the purge) are deleted too, and no
    longer count in their device's queue.
    """
    connection = dbsession.connection()
    if connection.dialect.name == "sqlite":
        return _delete_old_messages_sqlite(connection, before=before, batch_size=batch_size)
    message_pks = connection.scalars(_OLD_MESSAGES, {"before": before, "size": batch_size}).all()
    if not message_pks:
        return DeletedMessages(0, 0)
    params = {"message_pks": message_pks}
    # Children first: not every database cascades.
    per_device = Counter(dict(connection.execute(_DELETE_COPIES_COUNTING_PENDING, params).all()))
    for statement in _DELETE_WITH_MESSAGES_POSTGRESQL:
        connection.execute(statement, params)
    # Last, so that the devices' rows, which sends lock, are held the shortest.
    count_fewer_queued(connection, per_device)
    return DeletedMessages(len(message_pks), per_device.total())


def _delete_old_messages_sqlite(
    connection: Connection, *, before: int, batch_size: int
) -> DeletedMessages:
    rows = _OLD_MESSAGES_SQLITE.execute(connection, {"before": before, "size": batch_size})
    if not rows:
        return DeletedMessages(0, 0)
    params = {"message_pks": _json_list(pk for (pk,) in rows)}
    # One writer at a time: nothing changes between counting and deleting.
    _COUNT_FEWER_QUEUED_FOR_MESSAGES_SQLITE.execute(connection, params)
    pending = _DELETE_PENDING_COPIES_SQLITE.execute_counting(connection, params)
    _DELETE_COPIES_SQLITE.execute(connection, params)
    for statement in _DELETE_WITH_MESSAGES_SQLITE:
        statement.execute(connection, params)
    return DeletedMessages(len(rows), pending)


def forget_idempotency_keys(dbsession: Session, *, before: int, batch_size: int) -> int:
    keys = dbsession.execute(
        select(IDEMPOTENCY_KEYS.c.device_pk, IDEMPOTENCY_KEYS.c.key)
        .where(IDEMPOTENCY_KEYS.c.created_at <= before)
        .limit(batch_size)
    ).all()
    if keys:
        dbsession.execute(
            delete(IDEMPOTENCY_KEYS).where(
                tuple_(IDEMPOTENCY_KEYS.c.device_pk, IDEMPOTENCY_KEYS.c.key).in_(keys)
            )
        )
    return len(keys)
