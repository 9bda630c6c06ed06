"""What the client library returns: plain, immutable records.

They are parsed from the server's JSON here, strictly: an answer that does
not match PROTOCOL.md §3 raises :class:`~fxchat.client.errors.ClientError`
rather than leaking a ``KeyError`` into the caller's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import crypto
from ..crypto import DeviceAddress
from .errors import ClientError


@dataclass(frozen=True)
class Device:
    """One device of a user, as the server lists it."""

    user: str
    device_id: str
    public_key: bytes
    created_at: int

    @property
    def address(self) -> DeviceAddress:
        """The ``(user, device_id)`` pair a message entry is addressed to."""
        return DeviceAddress(self.user, self.device_id)


@dataclass(frozen=True)
class SentMessage:
    """The server's receipt for a send, and the devices it was sealed for."""

    id: str
    sent_at: int
    expires_at: int
    recipients: tuple[DeviceAddress, ...]


@dataclass(frozen=True)
class ReceivedMessage:
    """A fetched message: verified (``error is None``) or refused, never dropped.

    ``body`` and ``mac_key`` are set only for a verified message; ``error``
    says why a refused one could not be trusted. ``sender`` is the device the
    server authenticated.
    """

    id: str
    sender: DeviceAddress
    sent_at: int
    expires_at: int
    body: bytes | None = None
    mac_key: bytes | None = field(default=None, repr=False)
    error: str | None = None

    @property
    def verified(self) -> bool:
        """True when the message decrypted and its ``msg_sig`` matched."""
        return self.error is None

    @property
    def text(self) -> str | None:
        """The body as text (invalid UTF-8 replaced), or ``None`` if refused."""
        return None if self.body is None else self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Page:
    """One page of the device's queue and the cursor to the next (or ``None``)."""

    messages: list[ReceivedMessage]
    next: str | None


@dataclass(frozen=True)
class AckResult:
    """Ids taken off the queue, and ids the queue did not hold (already gone)."""

    acked: list[str]
    unknown: list[str]


@dataclass(frozen=True)
class Receipt:
    """What became of one copy of a sent message."""

    user: str
    device_id: str
    status: str  # "pending", "acked" or "expired"
    acked_at: int | None = None
    mac_key: bytes | None = None


def parse_devices(answer: Any) -> list[Device]:
    """Devices from ``GET /v1/users/{user}/devices``."""
    user = _field(answer, "user", str)
    devices = []
    for item in _field(answer, "devices", list):
        device_id = _field(item, "device_id", str)
        try:
            public_key = crypto.b64decode(
                _field(item, "public_key", str), length=crypto.KEY_LENGTH, field="public_key"
            )
        except crypto.InvalidEnvelope as exc:
            raise _malformed(f"device {user}/{device_id}: {exc}") from None
        devices.append(Device(user, device_id, public_key, _field(item, "created_at", int)))
    return devices


def parse_sent(answer: Any, recipients: tuple[DeviceAddress, ...]) -> SentMessage:
    """The answer to ``POST /v1/messages``."""
    return SentMessage(
        id=_field(answer, "id", str),
        sent_at=_field(answer, "sent_at", int),
        expires_at=_field(answer, "expires_at", int),
        recipients=recipients,
    )


def parse_queued_header(item: Any) -> dict[str, Any]:
    """The unencrypted facts of a fetched item, as ReceivedMessage arguments."""
    sender = _field(item, "sender", dict)
    return {
        "id": _field(item, "id", str),
        "sender": DeviceAddress(_field(sender, "user", str), _field(sender, "device_id", str)),
        "sent_at": _field(item, "sent_at", int),
        "expires_at": _field(item, "expires_at", int),
    }


def parse_page_items(answer: Any) -> tuple[list[Any], str | None]:
    """The raw items and the next cursor of ``GET /v1/messages``."""
    cursor = _optional(answer, "next", str)
    return _field(answer, "messages", list), cursor


def parse_ack(answer: Any) -> AckResult:
    """The answer to ``POST /v1/messages/ack``."""
    return AckResult(
        acked=_string_list(answer, "acked"),
        unknown=_string_list(answer, "unknown"),
    )


def parse_receipts(answer: Any) -> list[Receipt]:
    """Receipts from ``GET /v1/messages/{id}/receipts``."""
    receipts = []
    for item in _field(answer, "receipts", list):
        mac_key = _optional(item, "mac_key", str)
        try:
            decoded = (
                None
                if mac_key is None
                else crypto.b64decode(mac_key, length=crypto.KEY_LENGTH, field="mac_key")
            )
        except crypto.InvalidEnvelope as exc:
            raise _malformed(str(exc)) from None
        receipts.append(
            Receipt(
                user=_field(item, "user", str),
                device_id=_field(item, "device_id", str),
                status=_field(item, "status", str),
                acked_at=_optional(item, "acked_at", int),
                mac_key=decoded,
            )
        )
    return receipts


def parse_new_device(answer: Any) -> tuple[str, str, str]:
    """``(user, device_id, token)`` from account or device creation."""
    return (
        _field(answer, "user", str),
        _field(answer, "device_id", str),
        _field(answer, "token", str),
    )


def _field(obj: Any, name: str, kind: type) -> Any:
    value = obj.get(name) if isinstance(obj, dict) else None
    # bool is an int in Python, never in JSON.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _malformed(f"{name!r} missing or not a {kind.__name__}")
    return value


def _optional(obj: Any, name: str, kind: type) -> Any:
    if isinstance(obj, dict) and obj.get(name) is None:
        return None
    return _field(obj, name, kind)


def _string_list(obj: Any, name: str) -> list[str]:
    values = _field(obj, name, list)
    if not all(isinstance(v, str) for v in values):
        raise _malformed(f"{name!r} is not a list of strings")
    return values


def _malformed(detail: str) -> ClientError:
    return ClientError(f"unexpected answer from the server: {detail}")
