"""Strict base64url without padding (PROTOCOL.md §1), and the fetch cursor."""

from __future__ import annotations

import binascii
import re

# The rule is the crypto module's (a leaf that imports nothing of ours), for
# server and clients alike; the server's hot loops, hundreds of values per
# request, take the shorter paths below, which tests/test_validators.py
# checks against the rule.
from .crypto import InvalidEnvelope
from .crypto import b64decode as strict_b64decode

__all__ = ["b64decode", "b64encode", "decode_cursor", "encode_cursor"]

_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_URLSAFE = re.compile(r"[A-Za-z0-9_-]*")
# The last character of a canonical encoding leaves its unused bits at zero:
# 4 of them after 2 characters (1 byte), 2 after 3 (2 bytes); 1 is no length.
_CANONICAL_LAST = ("", (), "AQgw", "AEIMQUYcgkosw048")


def b64encode(data: bytes) -> str:
    """Encode bytes as base64url without padding (PROTOCOL.md §1)."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode()


def b64decode(text: str) -> bytes:
    """Decode canonical base64url without padding; ValueError for anything else."""
    if type(text) is str and _URLSAFE.fullmatch(text):
        rest = len(text) % 4
        if not rest or text[-1] in _CANONICAL_LAST[rest]:
            # ASCII, as the pattern matched.
            return binascii.a2b_base64(text.encode().translate(_FROM_URLSAFE) + b"=="[: -rest % 4])
    # Refused: the strict decoder says why.
    try:
        return strict_b64decode(text)
    except InvalidEnvelope as error:
        raise ValueError(str(error)) from None


# The cursor is opaque to clients: a version tag and the receive-order
# position of the last copy served. Tampering with it can only move the
# caller within its own queue.
CURSOR = re.compile(r"^c1\.(0|[1-9][0-9]{0,17})\Z")


def encode_cursor(position: int) -> str:
    return f"c1.{position}"


def decode_cursor(cursor: str) -> int:
    """The position in a cursor made by :func:`encode_cursor`; ValueError otherwise."""
    match = CURSOR.match(cursor) if isinstance(cursor, str) else None
    if match is None:
        raise ValueError("not a cursor of this server")
    return int(match.group(1))
