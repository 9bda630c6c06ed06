"""Receipts: what became of each device copy of a message, for its sender."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..encoding import b64encode
from ..models import Copy, CopyState, Device, Message, User
from . import NotFound
from .accounts import Caller


def receipts(dbsession: Session, device: Caller, message_id: str, *, now: int) -> dict:
    """Receipts of one message; only devices of the sending user may read them."""
    message = dbsession.scalar(select(Message).where(Message.message_id == message_id))
    # Anyone but the sending user gets the same 404 as for an unknown id.
    if message is None or message.sender_user_pk != device.user_pk:
        raise NotFound(f"no message {message_id} sent by this user", name="id")
    rows = dbsession.execute(
        select(
            User.user_id, Device.device_id, Copy.state, Copy.expires_at, Copy.acked_at, Copy.mac_key
        )
        .join(Device, Device.pk == Copy.device_pk)
        .join(User, User.pk == Device.user_pk)
        .where(Copy.message_pk == message.pk)
        .order_by(Copy.pk)
    ).all()
    return {"id": message.message_id, "receipts": [_receipt(row, now) for row in rows]}


def _receipt(row, now: int) -> dict:
    receipt = {"user": row.user_id, "device_id": row.device_id}
    if row.state == CopyState.ACKED:
        receipt.update(status="acked", acked_at=row.acked_at)
        if row.mac_key is not None:
            receipt["mac_key"] = b64encode(row.mac_key)
    elif row.state == CopyState.EXPIRED or row.expires_at <= now:
        receipt["status"] = "expired"
    else:
        receipt["status"] = "pending"
    return receipt
