"""Users, their devices, and the hashes of the devices' bearer tokens."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from .meta import Base

# SQLite only gives AUTOINCREMENT semantics to INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer, "sqlite")


class User(Base):
    __tablename__ = "users"

    pk: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(254), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    # Bumped by every change of the user's device set. Sends lock the user row
    # (FOR SHARE) and device changes update it, so a send either sees a new
    # device or waits for it: no message can silently miss a device.
    device_set_version: Mapped[int] = mapped_column(Integer, default=0)


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (
        # Active devices of a user: the device list and the send check.
        Index(
            "ix_devices_active_by_user",
            "user_pk",
            "pk",
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    pk: Mapped[int] = mapped_column(Id, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), unique=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk"))
    name: Mapped[str | None] = mapped_column(String(100))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    # SHA-256 of the bearer token; NULL once the device is revoked.
    token_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    key_updated_at: Mapped[int] = mapped_column(BigInteger)
    # Devices are revoked, not deleted, so that receipts can still name them.
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    # Pending copies in this device's queue, kept in step by every statement
    # that adds or removes one, so the queue limit costs no COUNT(*).
    queued: Mapped[int] = mapped_column(Integer, default=0)
