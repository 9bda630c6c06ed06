"""Strict base64url without padding (PROTOCOL.md §1), and the fetch cursor."""

from __future__ import annotations

import base64
import binascii
import re

_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """Decode base64url without padding; ValueError for anything else.

    Non-canonical encodings (unused trailing bits set) are refused too, so
    that every value has exactly one spelling.
    """
    if not isinstance(text, str) or not _BASE64URL.match(text) or len(text) % 4 == 1:
        raise ValueError("not base64url without padding")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url without padding") from None
    if b64encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


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
