"""Messages, their shared encrypted bodies, and one queue row per device copy.

The body (``encrypted_message``) is stored once per message in ``bodies``;
each recipient device gets a small ``copies`` row with its wrapped key. A
copy is *pending* until its device acknowledges it (``acked``) or its message
expires (``expired``); the same row then serves as that device's receipt.
"""

from __future__ import annotations

import enum

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from .accounts import Id
from .meta import Base


class CopyState(enum.IntEnum):
    PENDING = 0
    ACKED = 1
    EXPIRED = 2


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_expires_at", "expires_at"),)

    pk: Mapped[int] = mapped_column(Id, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    # The authenticated sender, copied so that fetching needs no extra join
    # and a later revocation of the sending device changes nothing.
    sender_user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk"))
    sender_user: Mapped[str] = mapped_column(String(254))
    sender_device_id: Mapped[str] = mapped_column(String(64))
    suite: Mapped[str] = mapped_column(String(32))
    sent_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class Body(Base):
    __tablename__ = "bodies"

    message_pk: Mapped[int] = mapped_column(
        ForeignKey("messages.pk", ondelete="CASCADE"), primary_key=True
    )
    encrypted_message: Mapped[bytes] = mapped_column(LargeBinary)


class Copy(Base):
    __tablename__ = "copies"
    __table_args__ = (
        # The queue: a device's pending copies in receive order. Partial, so
        # acknowledged and swept copies cost the fetch nothing.
        Index(
            "ix_copies_queue",
            "device_pk",
            "pk",
            sqlite_where=text("state = 0"),
            postgresql_where=text("state = 0"),
        ),
        # The expiry sweep: pending copies by expiry time.
        Index(
            "ix_copies_pending_expiry",
            "expires_at",
            sqlite_where=text("state = 0"),
            postgresql_where=text("state = 0"),
        ),
        UniqueConstraint("message_pk", "device_pk"),
    )

    # Also the receive order of the device's queue and the fetch cursor.
    pk: Mapped[int] = mapped_column(Id, primary_key=True)
    # messages.pk and devices.pk, without foreign keys (migration 0004: they
    # cost a query per copy on PostgreSQL; the writers take both from rows
    # they hold, and the purge deletes copies before their message).
    message_pk: Mapped[int] = mapped_column(Id)
    device_pk: Mapped[int] = mapped_column(Id)
    state: Mapped[int] = mapped_column(SmallInteger, default=CopyState.PENDING)
    # Copied from the message so the expiry sweep needs no join.
    expires_at: Mapped[int] = mapped_column(BigInteger)
    # The wrapped key fields; cleared once the copy is no longer pending.
    encrypted_aes_key: Mapped[bytes | None] = mapped_column(LargeBinary(60))
    msg_sig: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    msg_pub_key: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    acked_at: Mapped[int | None] = mapped_column(BigInteger)
    mac_key: Mapped[bytes | None] = mapped_column(LargeBinary(32))


class IdempotencyKey(Base):
    """A send's ``Idempotency-Key``, remembered for a while per device."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        Index("ix_idempotency_keys_created_at", "created_at"),
        Index("ix_idempotency_keys_message_pk", "message_pk"),
    )

    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.pk"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    # SHA-256 of the request body: the same key with another body is refused.
    request_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.pk", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
