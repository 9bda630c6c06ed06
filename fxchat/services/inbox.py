"""A device's inbox: fetching its pending copies in pages, acknowledging them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..encoding import b64encode, encode_cursor
from ..models import CopyState
from ..models.prepared import Prepared
from ..models.tables import BODIES, COPIES, MESSAGES, PENDING
from .accounts import Caller
from .retention import count_fewer_queued, drop_unneeded_bodies

# Run on the driver (models.prepared): a page is up to 501 rows, and
# SQLAlchemy's result rows cost more than the driver's tuples.
_QUEUE_SELECT = (
    select(
        COPIES.c.pk,
        MESSAGES.c.message_id,
        MESSAGES.c.sender_user,
        MESSAGES.c.sender_device_id,
        MESSAGES.c.sent_at,
        MESSAGES.c.expires_at,
        MESSAGES.c.suite,
        BODIES.c.encrypted_message,
        COPIES.c.encrypted_aes_key,
        COPIES.c.msg_sig,
        COPIES.c.msg_pub_key,
    )
    .select_from(
        COPIES.join(MESSAGES, MESSAGES.c.pk == COPIES.c.message_pk).join(
            BODIES, BODIES.c.message_pk == COPIES.c.message_pk
        )
    )
    .where(
        COPIES.c.device_pk == bindparam("device_pk"),
        COPIES.c.state == PENDING,
        COPIES.c.expires_at > bindparam("now"),
    )
    .order_by(COPIES.c.pk)
    .limit(bindparam("limit"))
)
_QUEUE = Prepared(_QUEUE_SELECT)
_QUEUE_AFTER = Prepared(_QUEUE_SELECT.where(COPIES.c.pk > bindparam("after")))


@dataclass(frozen=True)
class Page:
    messages: list[dict]
    next_cursor: str | None

    def as_json(self) -> dict:
        return {"messages": self.messages, "next": self.next_cursor}


def fetch(
    dbsession: Session, device: Caller, *, now: int, limit: int, after: int | None = None
) -> Page:
    """The device's unacknowledged, unexpired copies, oldest first.

    One range scan of the ``ix_copies_queue`` index, whatever the size of
    the other devices' queues; the extra row tells whether a next page exists.
    """
    rows = (_QUEUE if after is None else _QUEUE_AFTER).execute(
        dbsession.connection(),
        {"device_pk": device.pk, "now": now, "after": after, "limit": limit + 1},
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    messages = [
        {
            "id": message_id,
            "sender": {"user": sender_user, "device_id": sender_device_id},
            "sent_at": sent_at,
            "expires_at": expires_at,
            "suite": suite,
            "encrypted_message": b64encode(encrypted_message),
            "encrypted_aes_key": b64encode(encrypted_aes_key),
            "msg_sig": b64encode(msg_sig),
            "msg_pub_key": b64encode(msg_pub_key),
        }
        for (
            _,
            message_id,
            sender_user,
            sender_device_id,
            sent_at,
            expires_at,
            suite,
            encrypted_message,
            encrypted_aes_key,
            msg_sig,
            msg_pub_key,
        ) in rows
    ]
    return Page(messages, encode_cursor(rows[-1][0]) if has_more else None)


# Acknowledging locks the messages of the caller's pending copies among the
# ids: that serialises two devices acknowledging the same message, so the
# last of them sees that no copy is pending and drops the body. Each id is
# looked up by key: at most 500 lookups, however long the queue and large
# the tables.

# PostgreSQL: one statement. The CTE looks each id up by key (OFFSET 0 keeps
# the lateral subquery a per-id lookup: hoisted into the join, it could be
# planned as a hash of the whole messages table) and locks the messages in
# the order of the (sorted) ids; the UPDATE then changes the copies still
# pending, so two acknowledgements of one copy ack it once (PostgreSQL
# re-checks "state = 0" on the row the first one changed). The ANY(ARRAY())
# condition, implied by the join, makes it fetch the copies by key.
# Lists travel as comma-separated text (ids are URL-safe, mac_keys in hex):
# psycopg adapts a list item by item in Python, at several times the cost.
_ACK_POSTGRESQL = text(
    f"""
    WITH found AS (
        SELECT m.message_id, c.pk AS copy_pk, m.pk AS message_pk, acked.mac_key
        FROM unnest(string_to_array(:ids, ','), string_to_array(:mac_keys, ',', ''))
            AS acked (id, mac_key)
        CROSS JOIN LATERAL (
            SELECT copies.pk, copies.message_pk
            FROM messages JOIN copies ON copies.message_pk = messages.pk
            WHERE messages.message_id = acked.id AND copies.device_pk = :device_pk
                AND copies.state = {CopyState.PENDING.value} AND copies.expires_at > :now
            OFFSET 0
        ) AS c
        CROSS JOIN LATERAL (
            SELECT messages.pk, messages.message_id FROM messages WHERE messages.pk = c.message_pk
            FOR UPDATE
        ) AS m
    )
    UPDATE copies SET state = {CopyState.ACKED.value}, acked_at = :now,
        mac_key = decode(found.mac_key, 'hex'),
        encrypted_aes_key = NULL, msg_sig = NULL, msg_pub_key = NULL
    FROM found
    WHERE copies.pk = found.copy_pk AND copies.pk = ANY(ARRAY(SELECT copy_pk FROM found))
        AND copies.state = {CopyState.PENDING.value}
    RETURNING found.message_id, found.message_pk
    """
)

# SQLite runs one writer at a time (models/sqlite.py): no row locks. Without
# statistics, it takes "device_pk = ?" to pick out a few rows and would scan
# the whole queue for the ids: likely() makes it look up each id instead.
# On the driver: SQLAlchemy would process the 500 items of the IN list on
# every call; here the statement for 500 ids is rendered once.
_ACKABLE_SQLITE = Prepared(
    select(MESSAGES.c.message_id, COPIES.c.pk, MESSAGES.c.pk)
    .select_from(COPIES.join(MESSAGES, MESSAGES.c.pk == COPIES.c.message_pk))
    .where(
        MESSAGES.c.message_id.in_(bindparam("ids", expanding=True)),
        func.likely(COPIES.c.device_pk == bindparam("device_pk")),
        COPIES.c.state == PENDING,
        COPIES.c.expires_at > bindparam("now"),
    ),
    lists=["ids"],
)
# Straight to the driver: a Core executemany processes each row's parameters
# in Python, which costs more than SQLite's own work.
_ACK_SQLITE = (
    f"UPDATE copies SET state = {CopyState.ACKED.value}, acked_at = ?, mac_key = ?,"
    " encrypted_aes_key = NULL, msg_sig = NULL, msg_pub_key = NULL WHERE pk = ?"
)


@dataclass(frozen=True)
class AckResult:
    acked: list[str]
    unknown: list[str]

    def as_json(self) -> dict:
        return {"acked": self.acked, "unknown": self.unknown}


def acknowledge(dbsession: Session, device: Caller, acks: list[dict], *, now: int) -> AckResult:
    """Take acknowledged copies out of the device's queue, keeping disclosed mac_keys.

    Touches only the calling device's copies; ids not pending in its queue
    (unknown, another device's, already acknowledged, expired) are "unknown".
    Ids are opaque ids (schemas.types.OPAQUE_ID).
    """
    mac_keys: dict[str, bytes | None] = {}
    for ack in acks:
        # A repeated id keeps the first mac_key that came with one.
        if mac_keys.get(ack["id"]) is None:
            mac_keys[ack["id"]] = ack["mac_key"]
    if not mac_keys:
        return AckResult([], [])
    db = dbsession.connection()
    if db.dialect.name == "postgresql":
        acked_messages = _ack_postgresql(db, device.pk, mac_keys, now=now)
    else:
        acked_messages = _ack_sqlite(db, device.pk, mac_keys, now=now)
    if acked_messages:
        count_fewer_queued(db, Counter({device.pk: len(acked_messages)}))
        drop_unneeded_bodies(dbsession, list(acked_messages.values()))
    acked = [message_id for message_id in mac_keys if message_id in acked_messages]
    unknown = [message_id for message_id in mac_keys if message_id not in acked_messages]
    return AckResult(acked, unknown)


def _ack_postgresql(
    db: Connection, device_pk: int, mac_keys: dict[str, bytes | None], *, now: int
) -> dict[str, int]:
    """Acknowledge the device's pending copies among ``mac_keys``; their message pks by id."""
    ids = sorted(mac_keys)
    if any("," in message_id for message_id in ids):
        raise ValueError("message ids are opaque ids, without commas")
    return dict(
        db.execute(
            _ACK_POSTGRESQL,
            {
                "ids": ",".join(ids),
                "mac_keys": ",".join((mac_keys[message_id] or b"").hex() for message_id in ids),
                "device_pk": device_pk,
                "now": now,
            },
        ).all()
    )


def _ack_sqlite(
    db: Connection, device_pk: int, mac_keys: dict[str, bytes | None], *, now: int
) -> dict[str, int]:
    """Acknowledge the device's pending copies among ``mac_keys``; their message pks by id."""
    pending = {
        message_id: (copy_pk, message_pk)
        for message_id, copy_pk, message_pk in _ACKABLE_SQLITE.execute(
            db, {"ids": list(mac_keys), "device_pk": device_pk, "now": now}
        )
    }
    if pending:
        db.exec_driver_sql(
            _ACK_SQLITE,
            [(now, mac_keys[message_id], copy_pk) for message_id, (copy_pk, _) in pending.items()],
        )
    return {message_id: message_pk for message_id, (_, message_pk) in pending.items()}
