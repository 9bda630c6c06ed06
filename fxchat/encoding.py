"""Strict base64url without padding (PROTOCOL.md §1), and the fetch cursor."""

from __future__ import annotations

import re

# One implementation of the encoding for server and clients: the crypto module
# is a leaf that imports nothing of ours.
from .crypto import InvalidEnvelope, b64encode
from .crypto import b64decode as strict_b64decode

__all__ = ["b64decode", "b64encode", "decode_cursor", "encode_cursor"]


def b64decode(text: str) -> bytes:
    """Decode canonical base64url without padding; ValueError for anything else."""
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
