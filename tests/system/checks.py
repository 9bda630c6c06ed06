"""What every system test checks afterwards: the server's logs, its answers, its database."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy
from sqlalchemy import func, select

from fxchat.models import Body, Copy, CopyState, Device, Message, User

from ..servers import ServerProcess, describe, unexpected_log_records
from .devices import Exchanges


def assert_clean_logs(
    server: ServerProcess, *, records: list[dict] | None = None, allowed_tracebacks=()
) -> None:
    """No error, crash or unexpected traceback in the server's JSON log or its stderr."""
    records = server.log_records() if records is None else records
    assert records, f"the server wrote no log lines to {server.log}"
    bad = unexpected_log_records(records, allowed_tracebacks=allowed_tracebacks)
    assert not bad, f"{len(bad)} unexpected log records, the first ones:\n{describe(bad)}"
    assert "Traceback" not in server.stderr_text(), server.stderr_text()[-3000:]


def assert_no_server_errors(exchanges: Exchanges) -> None:
    errors = exchanges.server_errors()
    assert not errors, (
        f"{len(errors)} of {len(exchanges.items)} answers were 5xx, the first ones: "
        + "; ".join(f"{e.method} {e.path} -> {e.status} {e.body[:300]}" for e in errors[:5])
    )


@dataclass(frozen=True)
class StoredCopy:
    state: int
    encrypted_aes_key: bytes | None


@dataclass(frozen=True)
class StoredMessage:
    message_id: str
    sender: tuple[str, str]
    body: bytes | None  # None: no row in ``bodies``
    copies: dict[tuple[str, str], StoredCopy]  # by (user, device_id)


def stored_messages(database_url: str) -> list[StoredMessage]:
    """Every message in the database with its body and copies, read directly."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            bodies = dict(connection.execute(select(Body.message_pk, Body.encrypted_message)).all())
            copies: dict[int, dict] = {}
            for message_pk, user, device_id, state, key in connection.execute(
                select(
                    Copy.message_pk,
                    User.user_id,
                    Device.device_id,
                    Copy.state,
                    Copy.encrypted_aes_key,
                )
                .join(Device, Device.pk == Copy.device_pk)
                .join(User, User.pk == Device.user_pk)
            ):
                copies.setdefault(message_pk, {})[(user, device_id)] = StoredCopy(state, key)
            return [
                StoredMessage(message_id, (user, device_id), bodies.get(pk), copies.get(pk, {}))
                for pk, message_id, user, device_id in connection.execute(
                    select(
                        Message.pk,
                        Message.message_id,
                        Message.sender_user,
                        Message.sender_device_id,
                    ).order_by(Message.pk)
                )
            ]
    finally:
        engine.dispose()


def queue_counter_mismatches(database_url: str) -> list[tuple[str, int, int]]:
    """Devices whose ``queued`` differs from their count of pending copies: (id, queued, real)."""
    engine = sqlalchemy.create_engine(database_url)
    pending = (
        select(Copy.device_pk, func.count().label("n"))
        .where(Copy.state == CopyState.PENDING)
        .group_by(Copy.device_pk)
        .subquery()
    )
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Device.device_id, Device.queued, func.coalesce(pending.c.n, 0)).outerjoin(
                    pending, pending.c.device_pk == Device.pk
                )
            ).all()
    finally:
        engine.dispose()
    return [(device_id, queued, real) for device_id, queued, real in rows if queued != real]


def pending_copies_of_revoked_devices(database_url: str) -> list[tuple[str, str]]:
    """(device_id, message_id) of copies still queued for a revoked device: there must be none."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            return [
                tuple(row)
                for row in connection.execute(
                    select(Device.device_id, Message.message_id)
                    .join(Copy, Copy.device_pk == Device.pk)
                    .join(Message, Message.pk == Copy.message_pk)
                    .where(Device.revoked_at.is_not(None), Copy.state == CopyState.PENDING)
                )
            ]
    finally:
        engine.dispose()
