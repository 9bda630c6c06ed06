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


# The cursor is opaque to clients; it is the receive-order position of the
# last copy served, with a version letter so that it can change later.
_CURSOR_PREFIX = b"c1:"


def encode_cursor(position: int) -> str:
    return b64encode(_CURSOR_PREFIX + str(position).encode("ascii"))


def decode_cursor(cursor: str) -> int:
    """The position in a cursor made by :func:`encode_cursor`; ValueError otherwise."""
    raw = b64decode(cursor)
    if not raw.startswith(_CURSOR_PREFIX):
        raise ValueError("not a cursor of this server")
    digits = raw[len(_CURSOR_PREFIX):]
    if not digits.isdigit() or len(digits) > 19 or (len(digits) > 1 and digits[:1] == b"0"):
        raise ValueError("not a cursor of this server")
    position = int(digits)
    if position >= 2**63:
        raise ValueError("not a cursor of this server")
    return position
