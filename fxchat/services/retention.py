"""Retention (PROTOCOL.md §3.6): expire copies, drop bodies, purge old receipts.

Everything is done in small batches, each its own transaction, so that a
purge never holds locks for long and can be interrupted at any point
without harm: every step is idempotent and picks up where it stopped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy import delete, exists, select, tuple_, update
from sqlalchemy.orm import Session

from ..models import Body, Copy, CopyState, Device, IdempotencyKey, Message

logger = logging.getLogger(__name__)


@dataclass
class PurgeReport:
    expired_copies: int = 0
    deleted_messages: int = 0
    deleted_idempotency_keys: int = 0
    batches: int = field(default=0, repr=False)

    def as_json(self) -> dict:
        return {
            "expired_copies": self.expired_copies,
            "deleted_messages": self.deleted_messages,
            "deleted_idempotency_keys": self.deleted_idempotency_keys,
        }


def purge(
    transaction: Callable[[], AbstractContextManager[Session]],
    *,
    now: int,
    receipt_retention: int,
    idempotency_window: int,
    batch_size: int,
) -> PurgeReport:
    """Run every retention step until nothing is left to do.

    ``transaction()`` gives a context manager yielding a session whose work is
    committed when the block ends.
    """
    report = PurgeReport()
    steps = (
        ("expired_copies", lambda s: expire_copies(s, now=now, batch_size=batch_size)),
        (
            "deleted_messages",
            lambda s: delete_old_messages(
                s, before=now - receipt_retention * 1000, batch_size=batch_size
            ),
        ),
        (
            "deleted_idempotency_keys",
            lambda s: forget_idempotency_keys(
                s, before=now - idempotency_window * 1000, batch_size=batch_size
            ),
        ),
    )
    for name, step in steps:
        while True:
            with transaction() as dbsession:
                done = step(dbsession)
            report.batches += 1
            setattr(report, name, getattr(report, name) + done)
            if done < batch_size:
                break
    return report


def expire_copies(
    dbsession: Session, *, now: int, batch_size: int, device_pks: Collection[int] = ()
) -> int:
    """Turn pending copies past their expiry into expired receipts, freeing queue places.

    ``device_pks`` limits the sweep to those devices' queues.
    """
    query = (
        select(Copy.pk, Copy.device_pk, Copy.message_pk)
        .where(Copy.state == CopyState.PENDING, Copy.expires_at <= now)
        .order_by(Copy.expires_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    if device_pks:
        query = query.where(Copy.device_pk.in_(device_pks))
    rows = dbsession.execute(query).all()
    if not rows:
        return 0
    dbsession.execute(
        update(Copy),
        [
            {
                "pk": pk,
                "state": CopyState.EXPIRED,
                "encrypted_aes_key": None,
                "msg_sig": None,
                "msg_pub_key": None,
            }
            for pk, _, _ in rows
        ],
    )
    per_device = Counter(device_pk for _, device_pk, _ in rows)
    # In primary-key order, like sends, so the two never deadlock.
    for device_pk, count in sorted(per_device.items()):
        dbsession.execute(
            update(Device)
            .where(Device.pk == device_pk)
            .values(queued=Device.queued - count)
            .execution_options(synchronize_session=False)
        )
    drop_unneeded_bodies(dbsession, [message_pk for _, _, message_pk in rows])
    return len(rows)


def drop_unneeded_bodies(dbsession: Session, message_pks: list[int]) -> int:
    """Delete the bodies of these messages that no device is still waiting for.

    Called wherever copies stop being pending (acknowledgement, expiry,
    revocation of their device), so no sweep over all bodies is needed.
    """
    if not message_pks:
        return 0
    still_pending = exists().where(
        Copy.message_pk == Body.message_pk, Copy.state == CopyState.PENDING
    )
    result = dbsession.execute(
        delete(Body)
        .where(Body.message_pk.in_(set(message_pks)), ~still_pending)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def delete_old_messages(dbsession: Session, *, before: int, batch_size: int) -> int:
    """Delete messages whose receipt retention has passed, with their copies."""
    message_pks = dbsession.scalars(
        select(Message.pk).where(Message.expires_at <= before).limit(batch_size)
    ).all()
    if message_pks:
        # Children first: not every database cascades.
        dbsession.execute(delete(IdempotencyKey).where(IdempotencyKey.message_pk.in_(message_pks)))
        dbsession.execute(delete(Copy).where(Copy.message_pk.in_(message_pks)))
        dbsession.execute(delete(Body).where(Body.message_pk.in_(message_pks)))
        dbsession.execute(delete(Message).where(Message.pk.in_(message_pks)))
    return len(message_pks)


def forget_idempotency_keys(dbsession: Session, *, before: int, batch_size: int) -> int:
    keys = dbsession.execute(
        select(IdempotencyKey.device_pk, IdempotencyKey.key)
        .where(IdempotencyKey.created_at <= before)
        .limit(batch_size)
    ).all()
    if keys:
        dbsession.execute(
            delete(IdempotencyKey).where(
                tuple_(IdempotencyKey.device_pk, IdempotencyKey.key).in_(keys)
            )
        )
    return len(keys)
