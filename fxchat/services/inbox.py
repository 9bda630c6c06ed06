"""A device's inbox: fetching its pending copies in pages, acknowledging them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..encoding import b64encode, encode_cursor
from ..models import Body, Copy, CopyState, Device, Message
from .accounts import Caller
from .retention import drop_unneeded_bodies


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
    query = (
        select(
            Copy.pk,
            Message.message_id,
            Message.sender_user,
            Message.sender_device_id,
            Message.sent_at,
            Message.expires_at,
            Message.suite,
            Body.encrypted_message,
            Copy.encrypted_aes_key,
            Copy.msg_sig,
            Copy.msg_pub_key,
        )
        .join(Message, Message.pk == Copy.message_pk)
        .join(Body, Body.message_pk == Copy.message_pk)
        .where(Copy.device_pk == device.pk, Copy.state == CopyState.PENDING, Copy.expires_at > now)
        .order_by(Copy.pk)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(Copy.pk > after)
    rows = dbsession.execute(query).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    messages = [
        {
            "id": row.message_id,
            "sender": {"user": row.sender_user, "device_id": row.sender_device_id},
            "sent_at": row.sent_at,
            "expires_at": row.expires_at,
            "suite": row.suite,
            "encrypted_message": b64encode(row.encrypted_message),
            "encrypted_aes_key": b64encode(row.encrypted_aes_key),
            "msg_sig": b64encode(row.msg_sig),
            "msg_pub_key": b64encode(row.msg_pub_key),
        }
        for row in rows
    ]
    return Page(messages, encode_cursor(rows[-1].pk) if has_more else None)


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
    """
    mac_keys: dict[str, bytes | None] = {}
    for ack in acks:
        # A repeated id keeps the first mac_key that came with one.
        if mac_keys.get(ack["id"]) is None:
            mac_keys[ack["id"]] = ack["mac_key"]
    if not mac_keys:
        return AckResult([], [])
    pending = {
        message_id: (copy_pk, message_pk)
        for message_id, copy_pk, message_pk in dbsession.execute(
            select(Message.message_id, Copy.pk, Message.pk)
            .join(Message, Message.pk == Copy.message_pk)
            .where(
                Message.message_id.in_(mac_keys),
                Copy.device_pk == device.pk,
                Copy.state == CopyState.PENDING,
                Copy.expires_at > now,
            )
            # Locking the messages too serialises two devices acknowledging the
            # same message, so the last of them sees that no copy is pending.
            .order_by(Message.pk)
            .with_for_update(of=[Copy, Message])
        )
    }
    if pending:
        dbsession.execute(
            update(Copy),
            [
                {
                    "pk": copy_pk,
                    "state": CopyState.ACKED,
                    "acked_at": now,
                    "mac_key": mac_keys[message_id],
                    "encrypted_aes_key": None,
                    "msg_sig": None,
                    "msg_pub_key": None,
                }
                for message_id, (copy_pk, _) in pending.items()
            ],
        )
        dbsession.execute(
            update(Device)
            .where(Device.pk == device.pk)
            .values(queued=Device.queued - len(pending))
            .execution_options(synchronize_session=False)
        )
        drop_unneeded_bodies(dbsession, [message_pk for _, message_pk in pending.values()])
    acked = [message_id for message_id in mac_keys if message_id in pending]
    unknown = [message_id for message_id in mac_keys if message_id not in pending]
    return AckResult(acked, unknown)
