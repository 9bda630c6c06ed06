"""The ``fxchat-1`` crypto suite (PROTOCOL.md §2).

A leaf module: it imports only the standard library and ``cryptography``, so
the server, the client and third-party tools can all share it. Every
primitive comes from ``cryptography``; this module only composes them.

Sending: :func:`encrypt` seals a message once with a random AES key and wraps
that key for every recipient device with a fresh X25519 ephemeral key.
Receiving: :func:`decrypt` unwraps, decrypts and checks ``msg_sig``, and
returns the ``mac_key`` that a deniable acknowledgement discloses.

Every refusal is an :class:`InvalidEnvelope` (or one of its subclasses); their
messages name the field at fault and never contain key material.
"""

# InvalidEnvelope and its kinds say what is wrong with the input, like
# cryptography's InvalidTag; an "Error" suffix would add nothing.
# ruff: noqa: N818

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SUITE = "fxchat-1"
AAD = SUITE.encode("ascii")

KEY_LENGTH = 32  # X25519 keys, AES-256 keys and SHA-256 outputs alike
NONCE_LENGTH = 12
TAG_LENGTH = 16
MAC_LENGTH = 32
ENCRYPTED_AES_KEY_LENGTH = NONCE_LENGTH + KEY_LENGTH + TAG_LENGTH  # 60
MIN_ENCRYPTED_MESSAGE_LENGTH = NONCE_LENGTH + TAG_LENGTH  # an empty message

_ALL_ZERO_SECRET = bytes(KEY_LENGTH)
# X25519 ignores the top bit and reduces mod p, so several encodings name the
# same point; accepting only the canonical one makes every flipped bit count.
_FIELD_PRIME = 2**255 - 19
_BASE64URL_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


class InvalidEnvelope(Exception):
    """The input cannot be trusted; the reason never includes key material."""


class BadEncoding(InvalidEnvelope):
    """A value is not canonical base64url without padding."""


class WrongLength(InvalidEnvelope):
    """A value decodes to a length the suite does not allow."""


class InvalidPublicKey(InvalidEnvelope):
    """A public key is not the canonical encoding of an X25519 point."""


class LowOrderPublicKey(InvalidPublicKey):
    """A public key gives an all-zero shared secret (a low-order point)."""


class BadAesKeyTag(InvalidEnvelope):
    """``encrypted_aes_key`` does not authenticate: wrong device key or tampered."""


class BadMessageTag(InvalidEnvelope):
    """``encrypted_message`` does not authenticate under the unwrapped AES key."""


class BadSignature(InvalidEnvelope):
    """``msg_sig`` does not match the decrypted message."""


# -- encodings -------------------------------------------------------------


def b64encode(data: bytes) -> str:
    """Encode bytes as base64url without padding (PROTOCOL.md §1)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str, *, length: int | None = None, field: str = "value") -> bytes:
    """Decode strict base64url without padding.

    Refuses padding, characters outside the URL-safe alphabet, whitespace and
    non-canonical trailing bits with :class:`BadEncoding`, and a decoded
    length other than ``length`` (when given) with :class:`WrongLength`.
    ``field`` names the value in error messages.
    """
    if not isinstance(text, str) or not _BASE64URL_ALPHABET.fullmatch(text):
        raise BadEncoding(f"{field}: not base64url without padding")
    if len(text) % 4 == 1:
        raise BadEncoding(f"{field}: impossible base64url length")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Unused trailing bits must be zero, so each value has exactly one spelling.
    if b64encode(data) != text:
        raise BadEncoding(f"{field}: non-canonical base64url")
    if length is not None and len(data) != length:
        raise WrongLength(f"{field}: expected {length} bytes, got {len(data)}")
    return data


# -- key pairs -------------------------------------------------------------


def generate_private_key() -> X25519PrivateKey:
    """Return a new random X25519 private key for a device."""
    return X25519PrivateKey.generate()


def private_key_bytes(private_key: X25519PrivateKey) -> bytes:
    """Serialize a private key as its raw 32 bytes."""
    return private_key.private_bytes_raw()


def public_key_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    """Return the raw 32-byte public key of a private or public key."""
    if isinstance(key, X25519PrivateKey):
        key = key.public_key()
    return key.public_bytes_raw()


def load_private_key(raw: bytes) -> X25519PrivateKey:
    """Load a private key from its raw 32 bytes (:class:`WrongLength` if not)."""
    _check_length(raw, KEY_LENGTH, "private_key")
    return X25519PrivateKey.from_private_bytes(raw)


def load_public_key(raw: bytes, *, field: str = "public_key") -> X25519PublicKey:
    """Load a canonical 32-byte X25519 public key.

    Raises :class:`WrongLength` or :class:`InvalidPublicKey`. Low-order points
    are only detectable through the shared secret, which :func:`encrypt`,
    :func:`decrypt` and :func:`derive_keys` check.
    """
    _check_length(raw, KEY_LENGTH, field)
    if int.from_bytes(raw, "little") >= _FIELD_PRIME:
        raise InvalidPublicKey(f"{field}: not a canonical X25519 public key")
    return X25519PublicKey.from_public_bytes(raw)


def derive_keys(private_key: X25519PrivateKey, public_key: bytes) -> tuple[bytes, bytes]:
    """Return ``(encryption_key, mac_key)`` for one sender/recipient pair.

    Works from either side: the sender's ephemeral private key with the
    device's public key, or the device's private key with ``msg_pub_key``.
    Raises :class:`LowOrderPublicKey` for an all-zero shared secret.
    """
    return _keys_from_secret(_shared_secret(private_key, public_key))


def _shared_secret(private_key: X25519PrivateKey, public_key: bytes) -> bytes:
    peer = load_public_key(public_key)
    try:
        shared_secret = private_key.exchange(peer)
    except ValueError:
        # OpenSSL itself refuses an all-zero result before we can see it.
        raise LowOrderPublicKey("public key is a low-order point") from None
    if hmac.compare_digest(shared_secret, _ALL_ZERO_SECRET):
        raise LowOrderPublicKey("public key is a low-order point")
    return shared_secret


def _keys_from_secret(shared_secret: bytes) -> tuple[bytes, bytes]:
    encryption_key = hashlib.sha256(shared_secret).digest()
    mac_key = hashlib.sha256(encryption_key).digest()
    return encryption_key, mac_key


# -- envelopes -------------------------------------------------------------


@dataclass(frozen=True)
class DeviceAddress:
    """Who a per-device entry is for: a user id and one of its device ids."""

    user: str
    device_id: str


@dataclass(frozen=True)
class RecipientEntry:
    """What one device needs, beside ``encrypted_message``, to read a message.

    Construction checks the lengths (:class:`WrongLength`), so every instance
    is well-formed.
    """

    encrypted_aes_key: bytes
    msg_sig: bytes
    msg_pub_key: bytes

    def __post_init__(self) -> None:
        _check_length(self.encrypted_aes_key, ENCRYPTED_AES_KEY_LENGTH, "encrypted_aes_key")
        _check_length(self.msg_sig, MAC_LENGTH, "msg_sig")
        _check_length(self.msg_pub_key, KEY_LENGTH, "msg_pub_key")

    @classmethod
    def from_wire(cls, fields: Mapping[str, object]) -> RecipientEntry:
        """Build an entry from the base64url wire fields of PROTOCOL.md §3.

        Raises :class:`BadEncoding` or :class:`WrongLength` (a missing field
        counts as bad encoding).
        """
        return cls(
            encrypted_aes_key=_wire_field(fields, "encrypted_aes_key", ENCRYPTED_AES_KEY_LENGTH),
            msg_sig=_wire_field(fields, "msg_sig", MAC_LENGTH),
            msg_pub_key=_wire_field(fields, "msg_pub_key", KEY_LENGTH),
        )

    def to_wire(self) -> dict[str, str]:
        """Return the entry's fields encoded for JSON."""
        return {
            "encrypted_aes_key": b64encode(self.encrypted_aes_key),
            "msg_sig": b64encode(self.msg_sig),
            "msg_pub_key": b64encode(self.msg_pub_key),
        }


@dataclass(frozen=True)
class Envelope:
    """A sealed message: the shared ciphertext and one entry per device."""

    encrypted_message: bytes
    entries: Mapping[DeviceAddress, RecipientEntry]


class Decrypted(NamedTuple):
    """A verified message and the ``mac_key`` its acknowledgement may disclose."""

    message: bytes
    mac_key: bytes


def decode_encrypted_message(text: str) -> bytes:
    """Decode a wire ``encrypted_message``, refusing one too short to be valid."""
    data = b64decode(text, field="encrypted_message")
    _check_min_length(data)
    return data


def encrypt(message: bytes, recipients: Mapping[DeviceAddress, bytes]) -> Envelope:
    """Seal ``message`` for every device in ``recipients``.

    ``recipients`` maps each device's address to its raw 32-byte public key;
    the returned entries keep that order. Each device gets a fresh ephemeral
    key. Raises :class:`InvalidPublicKey` (including
    :class:`LowOrderPublicKey`) or :class:`WrongLength` for an unusable
    device key, and ``ValueError`` when there is no recipient at all.
    """
    return _encrypt_with(
        message,
        recipients,
        aes_key=AESGCM.generate_key(bit_length=KEY_LENGTH * 8),
        message_nonce=os.urandom(NONCE_LENGTH),
        ephemeral_keys=[X25519PrivateKey.generate() for _ in recipients],
        key_nonces=_split(os.urandom(NONCE_LENGTH * len(recipients)), NONCE_LENGTH),
    )


def decrypt(
    private_key: X25519PrivateKey, encrypted_message: bytes, entry: RecipientEntry
) -> Decrypted:
    """Open and verify a message addressed to the device owning ``private_key``.

    Returns ``(message, mac_key)``. Raises :class:`WrongLength`,
    :class:`InvalidPublicKey`, :class:`LowOrderPublicKey`,
    :class:`BadAesKeyTag`, :class:`BadMessageTag` or :class:`BadSignature`,
    all subclasses of :class:`InvalidEnvelope`.
    """
    _check_min_length(encrypted_message)
    encryption_key, mac_key = derive_keys(private_key, entry.msg_pub_key)
    try:
        aes_key = _open(encryption_key, entry.encrypted_aes_key)
    except InvalidTag:
        raise BadAesKeyTag("encrypted_aes_key does not authenticate") from None
    try:
        message = _open(aes_key, encrypted_message)
    except InvalidTag:
        raise BadMessageTag("encrypted_message does not authenticate") from None
    expected = hmac.digest(mac_key, message, "sha256")
    if not hmac.compare_digest(expected, entry.msg_sig):
        raise BadSignature("msg_sig does not match the message")
    return Decrypted(message, mac_key)


def _encrypt_with(
    message: bytes,
    recipients: Mapping[DeviceAddress, bytes],
    *,
    aes_key: bytes,
    message_nonce: bytes,
    ephemeral_keys: Sequence[X25519PrivateKey],
    key_nonces: Sequence[bytes],
) -> Envelope:
    """:func:`encrypt` with its randomness supplied, for the test vectors."""
    if not recipients:
        raise ValueError("a message needs at least one recipient device")
    if not len(recipients) == len(ephemeral_keys) == len(key_nonces):
        raise ValueError("one ephemeral key and one nonce per recipient")
    encrypted_message = _seal(aes_key, message_nonce, message)
    # All the X25519 work first, then the hashing and sealing: interleaved,
    # each evicts the other's tables from the CPU caches, and the symmetric
    # steps cost twice as much (measured in bench/cryptobench.py).
    shared_secrets = [
        _shared_secret(ephemeral, public_key)
        for ephemeral, public_key in zip(ephemeral_keys, recipients.values(), strict=True)
    ]
    msg_pub_keys = [ephemeral.public_key().public_bytes_raw() for ephemeral in ephemeral_keys]
    entries = {}
    for address, shared_secret, msg_pub_key, key_nonce in zip(
        recipients, shared_secrets, msg_pub_keys, key_nonces, strict=True
    ):
        encryption_key, mac_key = _keys_from_secret(shared_secret)
        entries[address] = RecipientEntry(
            encrypted_aes_key=_seal(encryption_key, key_nonce, aes_key),
            msg_sig=hmac.digest(mac_key, message, "sha256"),
            msg_pub_key=msg_pub_key,
        )
    return Envelope(encrypted_message=encrypted_message, entries=entries)


def _split(data: bytes, size: int) -> list[bytes]:
    """``data`` cut into pieces of ``size`` bytes (one random draw, many nonces)."""
    return [data[start : start + size] for start in range(0, len(data), size)]


def _seal(key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    """``nonce || AES-256-GCM(key, nonce, plaintext, AAD)``."""
    return nonce + AESGCM(key).encrypt(nonce, plaintext, AAD)


def _open(key: bytes, sealed: bytes) -> bytes:
    """Inverse of :func:`_seal`; raises ``InvalidTag``."""
    return AESGCM(key).decrypt(sealed[:NONCE_LENGTH], sealed[NONCE_LENGTH:], AAD)


def _wire_field(fields: Mapping[str, object], name: str, length: int) -> bytes:
    value = fields.get(name)
    if not isinstance(value, str):
        raise BadEncoding(f"{name}: missing or not a string")
    return b64decode(value, length=length, field=name)


def _check_length(value: bytes, length: int, field: str) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        got = len(value) if isinstance(value, bytes) else type(value).__name__
        raise WrongLength(f"{field}: expected {length} bytes, got {got}")


def _check_min_length(encrypted_message: bytes) -> None:
    if len(encrypted_message) < MIN_ENCRYPTED_MESSAGE_LENGTH:
        raise WrongLength(
            f"encrypted_message: at least {MIN_ENCRYPTED_MESSAGE_LENGTH} bytes, "
            f"got {len(encrypted_message)}"
        )
