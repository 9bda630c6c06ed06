"""Writing a checked send: the message, its body once, a copy per device, its key.

On PostgreSQL all of it is one statement (data-modifying CTEs, the copies
from ``unnest`` of arrays, so the statement is the same whatever the number
of recipients and is compiled once): one round trip instead of four, and a
quarter of the per-statement work in the server process. SQLite has no
data-modifying CTEs, and no round trips to save: there it is four inserts.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    LargeBinary,
    SmallInteger,
    String,
    bindparam,
    func,
    insert,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from ..models import CopyState
from ..models.prepared import Prepared
from ..models.tables import BODIES, COPIES, IDEMPOTENCY_KEYS, MESSAGES

MESSAGE_COLUMNS = (
    "message_id",
    "sender_user_pk",
    "sender_user",
    "sender_device_id",
    "suite",
    "sent_at",
    "expires_at",
)
KEY_FIELDS = ("encrypted_aes_key", "msg_sig", "msg_pub_key")


def store(
    db: Connection,
    message: dict,
    body: bytes,
    copies: list[tuple[int, bytes, bytes, bytes]],
    idempotency_key: dict | None,
) -> None:
    """Insert ``message`` (its columns), ``body``, ``copies`` and the key.

    ``copies`` are ``(device_pk, encrypted_aes_key, msg_sig, msg_pub_key)``;
    ``idempotency_key`` holds ``device_pk``, ``key`` and ``request_hash``.
    A concurrent twin (same key) fails on the key's primary key, and the
    request is retried (fxchat.database_errors).
    """
    if db.dialect.name == "postgresql":
        _store_in_one_statement(db, message, body, copies, idempotency_key)
    else:
        _store_row_by_table(db, message, body, copies, idempotency_key)


def _store_row_by_table(db, message, body, copies, idempotency_key) -> None:
    [(message_pk,)] = _INSERT_MESSAGE.execute(db, message)
    _INSERT_BODY.execute(db, {"message_pk": message_pk, "encrypted_message": body})
    rows = [
        {
            "message_pk": message_pk,
            "device_pk": device_pk,
            "state": CopyState.PENDING.value,
            "expires_at": message["expires_at"],
            **dict(zip(KEY_FIELDS, keys, strict=True)),
        }
        for device_pk, *keys in copies
    ]
    _INSERT_COPY.execute_many(db, rows)
    if idempotency_key is not None:
        _INSERT_KEY.execute(
            db, {**idempotency_key, "message_pk": message_pk, "created_at": message["sent_at"]}
        )


def _store_in_one_statement(db, message, body, copies, idempotency_key) -> None:
    device_pks, aes_keys, sigs, pub_keys = (list(column) for column in zip(*copies, strict=True))
    parameters = {
        **message,
        "encrypted_message": body,
        "device_pks": device_pks,
        "encrypted_aes_keys": aes_keys,
        "msg_sigs": sigs,
        "msg_pub_keys": pub_keys,
    }
    if idempotency_key is None:
        _STORE.execute(db, parameters)
    else:
        _STORE_WITH_KEY.execute(
            db,
            {
                **parameters,
                "key_device_pk": idempotency_key["device_pk"],
                "key": idempotency_key["key"],
                "request_hash": idempotency_key["request_hash"],
            },
        )


def _insert(table, columns, returning=None) -> Prepared:
    statement = insert(table).values({name: bindparam(name) for name in columns})
    return Prepared(statement if returning is None else statement.returning(returning))


# SQLite's four inserts.
_INSERT_MESSAGE = _insert(MESSAGES, MESSAGE_COLUMNS, returning=MESSAGES.c.pk)
_INSERT_BODY = _insert(BODIES, ("message_pk", "encrypted_message"))
_INSERT_COPY = _insert(COPIES, ("message_pk", "device_pk", "state", "expires_at", *KEY_FIELDS))
_INSERT_KEY = _insert(
    IDEMPOTENCY_KEYS, ("device_pk", "key", "request_hash", "message_pk", "created_at")
)


def _one_statement(with_key: bool):
    new_message = (
        insert(MESSAGES)
        .values({name: bindparam(name) for name in MESSAGE_COLUMNS})
        .returning(MESSAGES.c.pk)
        .cte("new_message")
    )
    new_body = insert(BODIES).from_select(
        ["message_pk", "encrypted_message"],
        select(new_message.c.pk, bindparam("encrypted_message", type_=LargeBinary)),
    )
    keys = (
        func.unnest(
            bindparam("device_pks", type_=ARRAY(BigInteger)),
            bindparam("encrypted_aes_keys", type_=ARRAY(LargeBinary)),
            bindparam("msg_sigs", type_=ARRAY(LargeBinary)),
            bindparam("msg_pub_keys", type_=ARRAY(LargeBinary)),
        )
        .table_valued("device_pk", *KEY_FIELDS)
        .render_derived(name="keys")
    )
    statement = insert(COPIES).from_select(
        ["message_pk", "device_pk", "state", "expires_at", *KEY_FIELDS],
        select(
            new_message.c.pk,
            keys.c.device_pk,
            bindparam("pending", CopyState.PENDING.value, type_=SmallInteger),
            bindparam("expires_at", type_=BigInteger),
            *(keys.c[name] for name in KEY_FIELDS),
        )
        .select_from(new_message)
        .join(keys, true()),
    )
    # Data-modifying CTEs run whether or not the statement reads them.
    statement = statement.add_cte(new_body.cte("new_body"))
    if with_key:
        new_key = insert(IDEMPOTENCY_KEYS).from_select(
            ["device_pk", "key", "request_hash", "message_pk", "created_at"],
            select(
                bindparam("key_device_pk", type_=BigInteger),
                bindparam("key", type_=String),
                bindparam("request_hash", type_=LargeBinary),
                new_message.c.pk,
                bindparam("sent_at", type_=BigInteger),
            ),
        )
        statement = statement.add_cte(new_key.cte("new_key"))
    return statement


_STORE = Prepared(_one_statement(with_key=False))
_STORE_WITH_KEY = Prepared(_one_statement(with_key=True))
