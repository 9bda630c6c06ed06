"""Bearer tokens: 32 random bytes, given to the device once, stored as a hash."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from .encoding import b64encode

TOKEN_BYTES = 32
TOKEN_LENGTH = 43  # base64url of 32 bytes, without padding


def new_token() -> tuple[str, bytes]:
    """A fresh token and the hash to store in its place."""
    token = b64encode(secrets.token_bytes(TOKEN_BYTES))
    return token, hash_token(token)


def hash_token(token: str) -> bytes:
    # Tokens carry 256 bits of entropy, so a plain hash is enough: there is
    # nothing to brute-force, and the lookup stays one indexed equality.
    return hashlib.sha256(token.encode("ascii")).digest()


def token_matches(token: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_LENGTH}}}")


def looks_like_token(token: str) -> bool:
    return _TOKEN.fullmatch(token) is not None


def new_id() -> str:
    """A server-chosen id for a device or a message: 128 random bits.

    Never with a leading ``-``, which command lines (the ``fxchat`` CLI's
    ``receipts ID`` and ``delete-device ID`` among them) take for an option:
    one id in 64 would otherwise be one that a user cannot type.
    """
    while True:
        made = secrets.token_urlsafe(16)
        if not made.startswith("-"):
            return made
