"""Colander types and validators shared by the API's schemas."""

from __future__ import annotations

import re

import colander

from ..crypto import KEY_LENGTH
from ..encoding import CURSOR, b64decode

USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._%+@-]{0,253}\Z")
# Server-chosen ids are URL-safe, at most 64 characters.
OPAQUE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,64}\Z")


class Base64Url(colander.SchemaType):
    """base64url without padding, decoded to bytes (of an exact length if given)."""

    def __init__(self, length: int | None = None):
        self.length = length

    def serialize(self, node, appstruct):
        return colander.null if appstruct is colander.null else appstruct

    def deserialize(self, node, cstruct):
        if cstruct is colander.null or cstruct is None:  # JSON null: absent
            return colander.null
        if not isinstance(cstruct, str):
            raise colander.Invalid(node, "must be a base64url string")
        try:
            data = b64decode(cstruct)
        except ValueError as exc:
            raise colander.Invalid(node, f"must be base64url without padding ({exc})") from None
        if self.length is not None and len(data) != self.length:
            raise colander.Invalid(node, f"must decode to exactly {self.length} bytes")
        return data


class StrictString(colander.String):
    """A JSON string, not a number or a boolean coerced into one."""

    def deserialize(self, node, cstruct):
        if cstruct is None:  # JSON null: absent
            return colander.null
        if cstruct is not colander.null and not isinstance(cstruct, str):
            raise colander.Invalid(node, "must be a string")
        if isinstance(cstruct, str):
            # Databases refuse NUL and lone surrogates ("\ud800" is valid JSON).
            if "\x00" in cstruct:
                raise colander.Invalid(node, "must not contain NUL characters")
            try:
                cstruct.encode("utf-8")
            except UnicodeEncodeError:
                raise colander.Invalid(node, "must be valid Unicode") from None
        return super().deserialize(node, cstruct)


class StrictInt(colander.Int):
    """A JSON integer: no strings, floats or booleans."""

    def deserialize(self, node, cstruct):
        if cstruct is colander.null or cstruct is None:  # JSON null: absent
            return colander.null
        if isinstance(cstruct, bool) or not isinstance(cstruct, int):
            raise colander.Invalid(node, "must be an integer")
        return cstruct


class QueryInt(colander.Int):
    """An integer from the query string: decimal digits only."""

    def deserialize(self, node, cstruct):
        if cstruct is colander.null:
            return colander.null
        if not isinstance(cstruct, str) or not cstruct.isascii() or not cstruct.isdigit():
            raise colander.Invalid(node, "must be a decimal integer")
        if len(cstruct) > 9:
            raise colander.Invalid(node, "is too large")
        return int(cstruct)


# Regex validators (not functions) so that the OpenAPI document shows them.
user_id = colander.Regex(
    USER_ID, "must be 1 to 254 characters of A-Z a-z 0-9 . _ % + @ -, starting alphanumeric"
)
opaque_id = colander.Regex(OPAQUE_ID, "must be 1 to 64 characters of A-Z a-z 0-9 _ -")
cursor = colander.Regex(CURSOR, "is not a cursor returned by this server")


class UserId(colander.SchemaNode):
    schema_type = StrictString
    validator = user_id


def PublicKey(**kw) -> colander.SchemaNode:  # noqa: N802 (reads like a node class)
    """An X25519 public key: 32 bytes, base64url without padding."""
    return colander.SchemaNode(Base64Url(length=KEY_LENGTH), **kw)


def DeviceName(**kw) -> colander.SchemaNode:  # noqa: N802 (reads like a node class)
    """An optional device name; "" is too short, not absent."""
    return colander.SchemaNode(
        StrictString(allow_empty=True),
        validator=colander.Length(min=1, max=100),
        missing=None,
        **kw,
    )
