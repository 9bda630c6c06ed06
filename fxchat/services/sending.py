"""Sending: check the addressed device sets, store the body once, queue a copy per device."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..tokens import new_id
from . import Conflict, LimitReached, ServiceError, storing
from .accounts import Caller
from .retention import expire_copies
from .storing import Found


class UnknownSender(Exception):
    """The sender's token no longer names it: the device was revoked meanwhile.

    Not a ServiceError: the view answers it as any unknown token (401).
    """


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
    engine: Engine,
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
    """Store ``message`` for exactly the addressed users' current devices, or nothing.

    The send is committed when this returns: it is one transaction of its
    own (fxchat.services.storing), not part of the request's.
    """
    attempt = storing.SendAttempt(
        sender=sender,
        message_id=new_id(),
        suite=message["suite"],
        sent_at=now,
        expires_at=now + ttl * 1000,
        encrypted_message=message["encrypted_message"],
        recipients=message["recipients"],
        max_queued=max_queued,
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
        window_ms=idempotency_window * 1000,
    )
    outcome = storing.attempt_send(engine, attempt)
    if outcome.found is Found.QUEUE_FULL and _sweep_expired(
        engine, outcome.device_pks, now=now, batch_size=max_queued
    ):
        # Expired copies no longer count (PROTOCOL.md §3.6), even before the
        # purge has swept them: with them gone, try once more.
        outcome = storing.attempt_send(engine, attempt)

    if outcome.found is Found.UNKNOWN_SENDER:
        raise UnknownSender()
    if outcome.found is Found.EARLIER and outcome.request_hash != fingerprint:
        raise IdempotencyMismatch("this Idempotency-Key was used for a different request")
    if outcome.found in (Found.STORED, Found.EARLIER):
        return Sent(outcome.message_id, outcome.sent_at, outcome.expires_at)
    if outcome.found is Found.RECIPIENTS:
        current = set(outcome.devices)
        listed = {(r["user"], r["device_id"]) for r in message["recipients"]}
        raise Conflict(
            "the device list does not match the recipients' current devices",
            name="recipients",
            missing_devices=[{"user": u, "device_id": d} for u, d in sorted(current - listed)],
            extra_devices=[{"user": u, "device_id": d} for u, d in sorted(listed - current)],
        )
    full = sorted(outcome.devices)
    raise LimitReached(
        f"the queue of {len(full)} device(s) is full ({max_queued} pending copies)",
        name="queue_full",
        full_devices=[{"user": u, "device_id": d} for u, d in full],
    )


def _sweep_expired(engine: Engine, device_pks, *, now: int, batch_size: int) -> int:
    """Expire what is past its expiry in these queues, in a transaction of its own."""
    with Session(engine) as dbsession, dbsession.begin():
        return expire_copies(dbsession, now=now, batch_size=batch_size, device_pks=device_pks)
