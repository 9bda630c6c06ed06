"""Accounts and devices: registration, device lists, key rotation, revocation."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..models import Copy, CopyState, Device, User
from ..models.prepared import Prepared
from ..models.tables import DEVICES, USERS
from ..tokens import hash_token, looks_like_token, new_id, new_token, token_matches
from . import Conflict, Forbidden, LimitReached, NotFound
from .retention import drop_unneeded_bodies


@dataclass(frozen=True)
class NewDevice:
    user: str
    device_id: str
    token: str

    def as_json(self) -> dict:
        return {"user": self.user, "device_id": self.device_id, "token": self.token}


@dataclass(frozen=True)
class Caller:
    """The authenticated device making a request, and its user."""

    pk: int
    device_id: str
    user_pk: int
    user_id: str
    # What it authenticated with: the hash of its bearer token.
    token_hash: bytes = field(repr=False)


# Built once and run on the driver (models.prepared): this runs on every request.
_CALLER_BY_TOKEN_HASH = Prepared(
    select(
        DEVICES.c.pk,
        DEVICES.c.device_id,
        DEVICES.c.user_pk,
        USERS.c.user_id,
        DEVICES.c.token_hash,
    )
    .join(USERS, USERS.c.pk == DEVICES.c.user_pk)
    .where(DEVICES.c.token_hash == bindparam("token_hash"))
)


def authenticate(connection: Connection, token: str) -> Caller | None:
    """The active device that owns ``token``, or None."""
    if not looks_like_token(token):
        return None
    rows = _CALLER_BY_TOKEN_HASH.execute(connection, {"token_hash": hash_token(token)})
    if not rows:
        return None
    [(pk, device_id, user_pk, user_id, token_hash)] = rows
    if not token_matches(token, token_hash):
        return None
    return Caller(pk, device_id, user_pk, user_id, token_hash)


def create_account(
    dbsession: Session, user_id: str, public_key: bytes, name: str | None, *, now: int
) -> NewDevice:
    if dbsession.scalar(select(User.pk).where(User.user_id == user_id)) is not None:
        raise Conflict(f"user {user_id} already exists", name="user")
    user = User(user_id=user_id, created_at=now, device_set_version=0)
    dbsession.add(user)
    try:
        dbsession.flush()
    except IntegrityError:
        # Another request registered the same user in between.
        raise Conflict(f"user {user_id} already exists", name="user") from None
    return _new_device(dbsession, user, public_key, name, now=now)


def add_device(
    dbsession: Session,
    acting: Caller,
    public_key: bytes,
    name: str | None,
    *,
    now: int,
    max_devices: int,
) -> NewDevice:
    user = _lock_device_set(dbsession, acting.user_pk)
    active = dbsession.scalar(
        select(func.count())
        .select_from(Device)
        .where(Device.user_pk == user.pk, Device.revoked_at.is_(None))
    )
    if active >= max_devices:
        raise LimitReached(
            f"{user.user_id} already has {active} devices, the most allowed", name="devices"
        )
    return _new_device(dbsession, user, public_key, name, now=now)


def _new_device(
    dbsession: Session, user: User, public_key: bytes, name: str | None, *, now: int
) -> NewDevice:
    token, token_hash = new_token()
    device = Device(
        device_id=new_id(),
        user_pk=user.pk,
        name=name,
        public_key=public_key,
        token_hash=token_hash,
        created_at=now,
        key_updated_at=now,
        queued=0,
    )
    dbsession.add(device)
    dbsession.flush()
    return NewDevice(user=user.user_id, device_id=device.device_id, token=token)


def _lock_device_set(dbsession: Session, user_pk: int) -> User:
    """Lock the user's device set against concurrent sends (see User)."""
    dbsession.execute(
        update(User)
        .where(User.pk == user_pk)
        .values(device_set_version=User.device_set_version + 1)
    )
    return dbsession.get(User, user_pk)


def list_devices(dbsession: Session, user_id: str) -> tuple[User, list[Device]]:
    user = dbsession.scalar(select(User).where(User.user_id == user_id))
    if user is None:
        raise NotFound(f"no user {user_id}", name="user")
    devices = dbsession.scalars(
        select(Device)
        .where(Device.user_pk == user.pk, Device.revoked_at.is_(None))
        .order_by(Device.pk)
    ).all()
    return user, list(devices)


def _device_of_same_user(dbsession: Session, acting: Caller, device_id: str) -> Device:
    device = dbsession.scalar(
        select(Device).where(Device.device_id == device_id, Device.revoked_at.is_(None))
    )
    # Another user's device is reported as absent: device ids must not leak.
    if device is None or device.user_pk != acting.user_pk:
        raise NotFound(f"no device {device_id} of this user", name="device_id")
    return device


def rotate_key(
    dbsession: Session, acting: Caller, device_id: str, public_key: bytes, *, now: int
) -> Device:
    device = _device_of_same_user(dbsession, acting, device_id)
    if device.pk != acting.pk:
        raise Forbidden("only the device itself may replace its key", name="device_id")
    device.public_key = public_key
    device.key_updated_at = now
    return device


def revoke_device(dbsession: Session, acting: Caller, device_id: str, *, now: int) -> None:
    """Revoke a device: its token stops working and its queue is dropped."""
    device = _device_of_same_user(dbsession, acting, device_id)
    _lock_device_set(dbsession, device.user_pk)
    dbsession.execute(
        update(Device)
        .where(Device.pk == device.pk)
        .values(revoked_at=now, token_hash=None, queued=0)
    )
    dropped = dbsession.scalars(
        delete(Copy)
        .where(Copy.device_pk == device.pk, Copy.state == CopyState.PENDING)
        .returning(Copy.message_pk)
    ).all()
    drop_unneeded_bodies(dbsession, list(dropped))
