"""Sending: check the addressed device sets, store the body once, queue a copy per device."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..models.prepared import Prepared
from ..models.tables import DEVICES, IDEMPOTENCY_KEYS, MESSAGES, USERS
from ..tokens import new_id
from . import Conflict, LimitReached, ServiceError, storing
from .accounts import Caller
from .retention import expire_copies


class IdempotencyMismatch(ServiceError):
    status = 422
    name = "Idempotency-Key"
    location = "header"


@dataclass(frozen=True)
class Sent:
    message_id: str
    sent_at: int
    expires_at: int

    def as_json(self) -> dict:
        return {"id": self.message_id, "sent_at": self.sent_at, "expires_at": self.expires_at}


def request_fingerprint(body: bytes) -> bytes:
    """What an idempotent retry must repeat: the request body, byte for byte."""
    return hashlib.sha256(body).digest()


def send(
    dbsession: Session,
    sender: Caller,
    message: dict,
    *,
    now: int,
    ttl: int,
    max_queued: int,
    idempotency_key: str | None = None,
    fingerprint: bytes = b"",
    idempotency_window: int = 0,
) -> Sent:
    """Store ``message`` for exactly the addressed users' current devices, or nothing."""
    # Statements go to the session's connection directly: Session.execute
    # adds a third to each statement's cost, for ORM features unused here.
    db = dbsession.connection()
    if idempotency_key is not None:
        earlier = _earlier_send(
            db,
            sender,
            idempotency_key,
            fingerprint,
            now=now,
            window_ms=idempotency_window * 1000,
        )
        if earlier is not None:
            return earlier

    device_pks = _current_recipient_devices(db, sender, message["recipients"])
    _reserve_queue_places(dbsession, db, device_pks, max_queued, now=now)

    sent = Sent(message_id=new_id(), sent_at=now, expires_at=now + ttl * 1000)
    storing.store(
        db,
        {
            "message_id": sent.message_id,
            "sender_user_pk": sender.user_pk,
            "sender_user": sender.user_id,
            "sender_device_id": sender.device_id,
            "suite": message["suite"],
            "sent_at": now,
            "expires_at": sent.expires_at,
        },
        message["encrypted_message"],
        [
            (
                device_pks[(r["user"], r["device_id"])],
                r["encrypted_aes_key"],
                r["msg_sig"],
                r["msg_pub_key"],
            )
            for r in message["recipients"]
        ],
        # A concurrent twin of this request fails on this key; it is then
        # retried and answered by _earlier_send.
        None
        if idempotency_key is None
        else {"device_pk": sender.pk, "key": idempotency_key, "request_hash": fingerprint},
    )
    return sent


def _earlier_send(
    db: Connection, sender: Caller, key: str, fingerprint: bytes, *, now: int, window_ms: int
) -> Sent | None:
    rows = _EARLIER_SEND.execute(db, {"device_pk": sender.pk, "key": key})
    if not rows:
        return None
    [(request_hash, created_at, message_id, sent_at, expires_at)] = rows
    if created_at + window_ms <= now:
        # Too old to be a retry: forget it, and the key may be used again.
        db.execute(_FORGET_KEY, {"device_pk": sender.pk, "key": key})
        return None
    if request_hash != fingerprint:
        raise IdempotencyMismatch("this Idempotency-Key was used for a different request")
    return Sent(message_id=message_id, sent_at=sent_at, expires_at=expires_at)


# Statements of the hot path, built once and run on the driver (models.prepared).
_EARLIER_SEND = Prepared(
    select(
        IDEMPOTENCY_KEYS.c.request_hash,
        IDEMPOTENCY_KEYS.c.created_at,
        MESSAGES.c.message_id,
        MESSAGES.c.sent_at,
        MESSAGES.c.expires_at,
    )
    .join(MESSAGES, MESSAGES.c.pk == IDEMPOTENCY_KEYS.c.message_pk)
    .where(
        IDEMPOTENCY_KEYS.c.device_pk == bindparam("device_pk"),
        IDEMPOTENCY_KEYS.c.key == bindparam("key"),
    )
)
# Rare (a key reused after its window): through SQLAlchemy.
_FORGET_KEY = delete(IDEMPOTENCY_KEYS).where(
    IDEMPOTENCY_KEYS.c.device_pk == bindparam("device_pk"),
    IDEMPOTENCY_KEYS.c.key == bindparam("key"),
)
_LOCK_USERS = Prepared(
    select(USERS.c.pk, USERS.c.user_id)
    .where(USERS.c.user_id.in_(bindparam("user_ids", expanding=True)))
    .order_by(USERS.c.pk)
    .with_for_update(read=True),
    lists=["user_ids"],
)
_ACTIVE_DEVICES = Prepared(
    select(DEVICES.c.pk, DEVICES.c.device_id, DEVICES.c.user_pk).where(
        DEVICES.c.user_pk.in_(bindparam("user_pks", expanding=True)),
        DEVICES.c.revoked_at.is_(None),
    ),
    lists=["user_pks"],
)
_LOCK_DEVICES = Prepared(
    select(DEVICES.c.pk)
    .where(DEVICES.c.pk.in_(bindparam("device_pks", expanding=True)))
    .order_by(DEVICES.c.pk)
    .with_for_update(),
    lists=["device_pks"],
)
_COUNT_ONE_MORE = Prepared(
    update(DEVICES)
    .where(
        DEVICES.c.pk.in_(bindparam("device_pks", expanding=True)),
        DEVICES.c.queued < bindparam("max_queued"),
    )
    .values(queued=DEVICES.c.queued + 1)
    .returning(DEVICES.c.pk),
    lists=["device_pks"],
)


def _current_recipient_devices(
    db: Connection, sender: Caller, recipients: list[dict]
) -> dict[tuple[str, str], int]:
    """Map each listed (user, device_id) to its device, or raise 409 naming the differences."""
    user_ids = sorted({r["user"] for r in recipients})
    # FOR SHARE on the users: device changes update the user row, so they
    # wait for this send to finish, or this send waits for them and then sees
    # their result (see models.accounts.User).
    users = dict(_LOCK_USERS.execute(db, {"user_ids": user_ids}))
    # A second statement, not a join in the first: under READ COMMITTED a
    # locking statement that waited re-reads only the rows it locks, and would
    # return the devices of its old snapshot, without the change it waited for.
    current = {
        (users[user_pk], device_id): device_pk
        for device_pk, device_id, user_pk in _ACTIVE_DEVICES.execute(db, {"user_pks": list(users)})
        if device_pk != sender.pk
    }
    listed = {(r["user"], r["device_id"]) for r in recipients}
    missing = sorted(current.keys() - listed)
    extra = sorted(listed - current.keys())
    if missing or extra:
        raise Conflict(
            "the device list does not match the recipients' current devices",
            name="recipients",
            missing_devices=[{"user": u, "device_id": d} for u, d in missing],
            extra_devices=[{"user": u, "device_id": d} for u, d in extra],
        )
    return current


def _reserve_queue_places(
    dbsession: Session,
    db: Connection,
    device_pks: dict[tuple[str, str], int],
    max_queued: int,
    *,
    now: int,
) -> None:
    """Count one more pending copy for each device, or raise if a queue is full.

    The update also locks the devices' rows until commit, so copies enter
    each queue in commit order (the fetch cursor relies on it). A full
    queue aborts the whole send: the raised error rolls the update back.
    """
    by_pk = {pk: key for key, pk in device_pks.items()}
    # Lock the rows in primary-key order first: the UPDATE alone locks them in
    # whatever order its plan meets them, and two sends to overlapping devices
    # then deadlock (PostgreSQL breaks the tie after deadlock_timeout, 1 s).
    # One row can't deadlock, and SQLite has no row locks (one writer at a time).
    if len(by_pk) > 1 and db.dialect.name != "sqlite":
        _LOCK_DEVICES.execute(db, {"device_pks": list(by_pk)})
    reserved = _count_one_more(db, by_pk, max_queued)
    if len(reserved) < len(by_pk):
        # Expired copies no longer count (PROTOCOL.md §3.6), even before the
        # purge has swept them: sweep the full queues now and try them again.
        full = [pk for pk in by_pk if pk not in reserved]
        if expire_copies(dbsession, now=now, batch_size=max_queued, device_pks=full):
            reserved |= _count_one_more(db, full, max_queued)
    if len(reserved) < len(by_pk):
        full = sorted(key for pk, key in by_pk.items() if pk not in reserved)
        raise LimitReached(
            f"the queue of {len(full)} device(s) is full ({max_queued} pending copies)",
            name="queue_full",
            full_devices=[{"user": u, "device_id": d} for u, d in full],
        )


def _count_one_more(db: Connection, device_pks, max_queued: int) -> set[int]:
    """Bump the queue counters that are under the limit; the devices bumped."""
    rows = _COUNT_ONE_MORE.execute(db, {"device_pks": list(device_pks), "max_queued": max_queued})
    return {pk for (pk,) in rows}
