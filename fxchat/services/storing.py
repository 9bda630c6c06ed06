"""Storing a send: one atomic operation that checks and writes, or writes nothing.

:func:`attempt_send` checks that the sender's token still names it (the
sender may come from a memory of recent authentications, fxchat.security),
looks up an earlier send with the same Idempotency-Key, checks that the
listed devices are exactly the addressed users' current ones, takes a place
in each recipient's queue, and writes the message, its body once, a copy
per device and the key, all in one transaction on a pooled connection of
its own (fxchat.models.prepared.pooled), not the request's session:

* on PostgreSQL, one call of the function ``fxchat_send_v2`` (migration
  0003) in autocommit: one round trip, where the same steps from Python
  were eight, each costing the server process more than PostgreSQL;
* on SQLite, the same steps in Python between ``BEGIN IMMEDIATE`` and
  ``COMMIT`` (fxchat.models.sqlite.write_transaction), so that the
  database's one write lock is held for them and the commit only.

What it found is an :class:`Outcome`; what to answer is decided in
fxchat.services.sending. The two implementations are tested by the same API
tests, which run on both databases.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Integer,
    LargeBinary,
    String,
    bindparam,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine

from ..crypto import ENCRYPTED_AES_KEY_LENGTH, KEY_LENGTH, MAC_LENGTH
from ..models import CopyState
from ..models.prepared import PooledConnection, Prepared, pooled
from ..models.sqlite import write_transaction
from ..models.tables import BODIES, COPIES, DEVICES, IDEMPOTENCY_KEYS, MESSAGES, USERS
from .accounts import Caller

KEY_FIELDS = ("encrypted_aes_key", "msg_sig", "msg_pub_key")
# Their lengths (fxchat.crypto), end to end: one recipient's in fxchat_send_v2.
KEY_FIELDS_BYTES = ENCRYPTED_AES_KEY_LENGTH + MAC_LENGTH + KEY_LENGTH


class Found(enum.Enum):
    STORED = "stored"
    # The sender's token no longer names it (the device was revoked).
    UNKNOWN_SENDER = "unknown_sender"
    # A send with the same Idempotency-Key within the window (maybe another body).
    EARLIER = "earlier"
    # The listed devices are not the addressed users' current ones.
    RECIPIENTS = "recipients"
    # Some recipients' queues have no place left.
    QUEUE_FULL = "queue_full"


@dataclass(frozen=True)
class SendAttempt:
    """Everything a send writes, and the limits it is checked against."""

    sender: Caller
    message_id: str
    suite: str
    sent_at: int
    expires_at: int
    encrypted_message: bytes
    # Validated recipient entries: user, device_id and the KEY_FIELDS.
    recipients: list[dict]
    max_queued: int
    idempotency_key: str | None
    request_hash: bytes
    window_ms: int


@dataclass(frozen=True)
class Outcome:
    found: Found
    # STORED: this send; EARLIER: the earlier one, with its request's hash.
    message_id: str | None = None
    sent_at: int | None = None
    expires_at: int | None = None
    request_hash: bytes | None = None
    # RECIPIENTS: the current devices; QUEUE_FULL: the full ones.
    devices: tuple[tuple[str, str], ...] = ()
    # QUEUE_FULL: the full devices' primary keys, in the same order.
    device_pks: tuple[int, ...] = ()


def attempt_send(engine: Engine, attempt: SendAttempt) -> Outcome:
    """Check ``attempt`` and store it, in one transaction; what was found."""
    with pooled(engine) as connection:
        if connection.dialect.name == "postgresql":
            return _attempt_in_one_call(connection, attempt)
        try:
            with write_transaction(connection):
                return _attempt_statement_by_statement(connection, attempt)
        except _RolledBack as rolled_back:
            return rolled_back.outcome


# -- PostgreSQL ---------------------------------------------------------------

_SEND_FUNCTION_PARAMETERS = {
    "sender_pk": BigInteger,
    "sender_token_hash": LargeBinary,
    "sender_user_pk": BigInteger,
    "sender_user": String,
    "sender_device_id": String,
    "key": String,
    "request_hash": LargeBinary,
    "window_ms": BigInteger,
    "users": String,
    "device_ids": String,
    "key_fields": LargeBinary,
    "message_id": String,
    "suite": String,
    "sent_at": BigInteger,
    "expires_at": BigInteger,
    "encrypted_message": LargeBinary,
    "max_queued": Integer,
}
# Named arguments: the call does not depend on the order of the parameters.
_SEND_FUNCTION = Prepared(
    text(
        "SELECT * FROM fxchat_send_v2("
        + ", ".join(f"p_{name} => :{name}" for name in _SEND_FUNCTION_PARAMETERS)
        + ")"
    ).bindparams(*(bindparam(name, type_=t) for name, t in _SEND_FUNCTION_PARAMETERS.items()))
)


def _attempt_in_one_call(connection: PooledConnection, attempt: SendAttempt) -> Outcome:
    sender, recipients = attempt.sender, attempt.recipients
    # The recipients as fxchat_send_v2 takes them: one value per field, not
    # arrays, which psycopg builds item by item in Python (a tenth of a send
    # to 100 devices). User ids and device ids cannot hold a comma
    # (schemas.types), and the wrapped-key fields have the lengths the schema
    # checked.
    users = ",".join(r["user"] for r in recipients)
    device_ids = ",".join(r["device_id"] for r in recipients)
    key_fields = b"".join(r[name] for r in recipients for name in KEY_FIELDS)
    if users.count(",") != len(recipients) - 1 or device_ids.count(",") != len(recipients) - 1:
        raise ValueError("user ids and device ids cannot hold commas")
    if len(key_fields) != KEY_FIELDS_BYTES * len(recipients):
        raise ValueError("wrapped-key fields of the wrong length")
    [row] = _SEND_FUNCTION.execute(
        connection,
        {
            "sender_pk": sender.pk,
            "sender_token_hash": sender.token_hash,
            "sender_user_pk": sender.user_pk,
            "sender_user": sender.user_id,
            "sender_device_id": sender.device_id,
            "key": attempt.idempotency_key,
            "request_hash": attempt.request_hash,
            "window_ms": attempt.window_ms,
            "users": users,
            "device_ids": device_ids,
            "key_fields": key_fields,
            "message_id": attempt.message_id,
            "suite": attempt.suite,
            "sent_at": attempt.sent_at,
            "expires_at": attempt.expires_at,
            "encrypted_message": attempt.encrypted_message,
            "max_queued": attempt.max_queued,
        },
    )
    found, message_id, sent_at, expires_at, request_hash, users, device_ids, device_pks = row
    return Outcome(
        Found(found),
        message_id=message_id,
        sent_at=sent_at,
        expires_at=expires_at,
        request_hash=None if request_hash is None else bytes(request_hash),
        devices=tuple(zip(users or (), device_ids or (), strict=True)),
        device_pks=tuple(device_pks or ()),
    )


# -- SQLite -------------------------------------------------------------------


class _RolledBack(Exception):
    """Ends the write transaction without its writes; the outcome to report."""

    def __init__(self, outcome: Outcome):
        self.outcome = outcome


def _attempt_statement_by_statement(connection: PooledConnection, attempt: SendAttempt) -> Outcome:
    # One writer at a time: nothing read here changes before the commit.
    sender = attempt.sender
    # The sender may come from a memory of recent authentications
    # (fxchat.security): its token must still name it.
    if not _SENDER_BY_TOKEN.execute(connection, {"pk": sender.pk, "token_hash": sender.token_hash}):
        return Outcome(Found.UNKNOWN_SENDER)
    if attempt.idempotency_key is not None:
        key = {"device_pk": sender.pk, "key": attempt.idempotency_key}
        earlier = _EARLIER_SEND.execute(connection, key)
        if earlier:
            [(request_hash, created_at, message_id, sent_at, expires_at)] = earlier
            if created_at + attempt.window_ms > attempt.sent_at:
                return Outcome(Found.EARLIER, message_id, sent_at, expires_at, request_hash)
            # Too old to be a retry: forget it, and the key may be used again.
            _FORGET_KEY.execute(connection, key)

    user_ids = sorted({r["user"] for r in attempt.recipients})
    current = {
        (user_id, device_id): device_pk
        for user_id, device_id, device_pk in _ADDRESSED_DEVICES.execute(
            connection, {"user_ids": user_ids}
        )
        if device_pk != sender.pk
    }
    listed = [(r["user"], r["device_id"]) for r in attempt.recipients]
    # The listed pairs are distinct (the schema checks it).
    if len(listed) != len(current) or not all(device in current for device in listed):
        return Outcome(Found.RECIPIENTS, devices=tuple(current))

    device_pks = [current[device] for device in listed]
    reserved = {
        pk
        for (pk,) in _COUNT_ONE_MORE.execute(
            connection, {"device_pks": device_pks, "max_queued": attempt.max_queued}
        )
    }
    if len(reserved) < len(device_pks):
        # The counters of the others went up: undo them with the transaction.
        full = sorted(pk for pk in device_pks if pk not in reserved)
        names = {pk: device for device, pk in current.items()}
        raise _RolledBack(
            Outcome(
                Found.QUEUE_FULL,
                devices=tuple(names[pk] for pk in full),
                device_pks=tuple(full),
            )
        )

    [(message_pk,)] = _INSERT_MESSAGE.execute(
        connection,
        {
            "message_id": attempt.message_id,
            "sender_user_pk": sender.user_pk,
            "sender_user": sender.user_id,
            "sender_device_id": sender.device_id,
            "suite": attempt.suite,
            "sent_at": attempt.sent_at,
            "expires_at": attempt.expires_at,
        },
    )
    _INSERT_BODY.execute(
        connection, {"message_pk": message_pk, "encrypted_message": attempt.encrypted_message}
    )
    _INSERT_COPY.execute_many(
        connection,
        [
            {
                "message_pk": message_pk,
                "device_pk": device_pk,
                "state": CopyState.PENDING.value,
                "expires_at": attempt.expires_at,
                "encrypted_aes_key": r["encrypted_aes_key"],
                "msg_sig": r["msg_sig"],
                "msg_pub_key": r["msg_pub_key"],
            }
            for device_pk, r in zip(device_pks, attempt.recipients, strict=True)
        ],
    )
    if attempt.idempotency_key is not None:
        _INSERT_KEY.execute(
            connection,
            {
                "device_pk": sender.pk,
                "key": attempt.idempotency_key,
                "request_hash": attempt.request_hash,
                "message_pk": message_pk,
                "created_at": attempt.sent_at,
            },
        )
    return Outcome(Found.STORED, attempt.message_id, attempt.sent_at, attempt.expires_at)


def _insert(table, columns, returning=None) -> Prepared:
    statement = insert(table).values({name: bindparam(name) for name in columns})
    return Prepared(statement if returning is None else statement.returning(returning))


_IDEMPOTENCY_KEY = (
    IDEMPOTENCY_KEYS.c.device_pk == bindparam("device_pk"),
    IDEMPOTENCY_KEYS.c.key == bindparam("key"),
)
_EARLIER_SEND = Prepared(
    select(
        IDEMPOTENCY_KEYS.c.request_hash,
        IDEMPOTENCY_KEYS.c.created_at,
        MESSAGES.c.message_id,
        MESSAGES.c.sent_at,
        MESSAGES.c.expires_at,
    )
    .join(MESSAGES, MESSAGES.c.pk == IDEMPOTENCY_KEYS.c.message_pk)
    .where(*_IDEMPOTENCY_KEY)
)
_FORGET_KEY = Prepared(delete(IDEMPOTENCY_KEYS).where(*_IDEMPOTENCY_KEY))
# Revoking a device clears its token hash.
_SENDER_BY_TOKEN = Prepared(
    select(DEVICES.c.pk).where(
        DEVICES.c.pk == bindparam("pk"), DEVICES.c.token_hash == bindparam("token_hash")
    )
)
# The current devices of the addressed users (an unknown user has none).
_ADDRESSED_DEVICES = Prepared(
    select(USERS.c.user_id, DEVICES.c.device_id, DEVICES.c.pk)
    .join(DEVICES, DEVICES.c.user_pk == USERS.c.pk)
    .where(
        USERS.c.user_id.in_(bindparam("user_ids", expanding=True)),
        DEVICES.c.revoked_at.is_(None),
    ),
    lists=["user_ids"],
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
_INSERT_MESSAGE = _insert(
    MESSAGES,
    (
        "message_id",
        "sender_user_pk",
        "sender_user",
        "sender_device_id",
        "suite",
        "sent_at",
        "expires_at",
    ),
    returning=MESSAGES.c.pk,
)
_INSERT_BODY = _insert(BODIES, ("message_pk", "encrypted_message"))
_INSERT_COPY = _insert(COPIES, ("message_pk", "device_pk", "state", "expires_at", *KEY_FIELDS))
_INSERT_KEY = _insert(
    IDEMPOTENCY_KEYS, ("device_pk", "key", "request_hash", "message_pk", "created_at")
)
