"""Schemas of sending, fetching and acknowledging (PROTOCOL.md §3.2–§3.4).

Limits that come from the settings are deferred: the schema is bound to the
running server's :class:`~fxchat.settings.Settings` on every request.
"""

import colander

from ..crypto import (
    ENCRYPTED_AES_KEY_LENGTH,
    KEY_LENGTH,
    MAC_LENGTH,
    MIN_ENCRYPTED_MESSAGE_LENGTH,
    SUITE,
)
from ..encoding import b64decode
from .types import (
    OPAQUE_ID,
    USER_ID,
    Base64Url,
    QueryInt,
    StrictInt,
    StrictString,
    UserId,
    cursor,
    opaque_id,
)


@colander.deferred
def ttl_range(node, kw):
    return colander.Range(min=1, max=kw["settings"].max_ttl)


@colander.deferred
def message_size(node, kw):
    maximum = kw["settings"].max_message_bytes
    return colander.Length(
        min=MIN_ENCRYPTED_MESSAGE_LENGTH,
        max=maximum,
        min_err=f"is shorter than a nonce and a tag ({MIN_ENCRYPTED_MESSAGE_LENGTH} bytes)",
        max_err=f"is larger than {maximum} bytes",
    )


def _no_duplicate_devices(node, recipients):
    seen = set()
    for recipient in recipients:
        key = (recipient["user"], recipient["device_id"])
        if key in seen:
            raise colander.Invalid(node, f"device {key[1]} of {key[0]} is listed twice")
        seen.add(key)


@colander.deferred
def recipients_validator(node, kw):
    return colander.All(
        colander.Length(min=1, max=kw["settings"].max_recipients), _no_duplicate_devices
    )


_WRAPPED_KEY_FIELDS = (
    ("encrypted_aes_key", ENCRYPTED_AES_KEY_LENGTH),
    ("msg_sig", MAC_LENGTH),
    ("msg_pub_key", KEY_LENGTH),
)


class Recipient(colander.MappingSchema):
    user = UserId()
    device_id = colander.SchemaNode(StrictString(), validator=opaque_id)
    encrypted_aes_key = colander.SchemaNode(Base64Url(length=ENCRYPTED_AES_KEY_LENGTH))
    msg_sig = colander.SchemaNode(Base64Url(length=MAC_LENGTH))
    msg_pub_key = colander.SchemaNode(Base64Url(length=KEY_LENGTH))

    def deserialize(self, cstruct=colander.null):
        # One per recipient device of every send, where colander's walk of the
        # nodes costs more than the checks: a well-formed entry gets the same
        # result directly (USER_ID and OPAQUE_ID are ASCII, so the strings
        # need no other check), anything else goes through the nodes above
        # for their exact error (tests/test_validators.py compares the two).
        if type(cstruct) is dict:
            user, device_id = cstruct.get("user"), cstruct.get("device_id")
            if (
                type(user) is str
                and USER_ID.match(user)
                and type(device_id) is str
                and OPAQUE_ID.match(device_id)
            ):
                entry = {"user": user, "device_id": device_id}
                try:
                    for name, length in _WRAPPED_KEY_FIELDS:
                        entry[name] = value = b64decode(cstruct.get(name))
                        if len(value) != length:
                            break
                    else:
                        return entry
                except ValueError:
                    pass
        return super().deserialize(cstruct)


class Recipients(colander.SequenceSchema):
    """Each device at most once (``uniqueItems`` can only say part of this)."""

    recipient = Recipient()
    validator = recipients_validator


class SendSchema(colander.MappingSchema):
    suite = colander.SchemaNode(StrictString(), validator=colander.OneOf([SUITE]))
    ttl = colander.SchemaNode(StrictInt(), validator=ttl_range, missing=None)
    encrypted_message = colander.SchemaNode(Base64Url(), validator=message_size)
    recipients = Recipients()


@colander.deferred
def page_size(node, kw):
    return colander.Range(min=1, max=kw["settings"].max_page_size)


@colander.deferred
def default_page_size(node, kw):
    return kw["settings"].default_page_size


class FetchQuerystring(colander.MappingSchema):
    limit = colander.SchemaNode(QueryInt(), validator=page_size, missing=default_page_size)
    # allow_empty: "after=" is a malformed cursor, not an absent one.
    after = colander.SchemaNode(StrictString(allow_empty=True), validator=cursor, missing=None)


class FetchSchema(colander.MappingSchema):
    querystring = FetchQuerystring()


MAC_KEY_CHARACTERS = (KEY_LENGTH * 4 + 2) // 3  # base64url without padding


class Ack(colander.MappingSchema):
    id = colander.SchemaNode(StrictString(), validator=opaque_id)
    mac_key = colander.SchemaNode(Base64Url(length=KEY_LENGTH), missing=None)

    def deserialize(self, cstruct=colander.null):
        # Up to 500 per request, where colander's walk of the nodes costs more
        # than the checks: a well-formed entry gets the same result directly,
        # anything else goes through the nodes above for their exact error.
        if type(cstruct) is dict:
            message_id, mac_key = cstruct.get("id"), cstruct.get("mac_key")
            if type(message_id) is str and OPAQUE_ID.match(message_id):
                if mac_key is None:
                    return {"id": message_id, "mac_key": None}
                if type(mac_key) is str and len(mac_key) == MAC_KEY_CHARACTERS:
                    try:
                        return {"id": message_id, "mac_key": b64decode(mac_key)}
                    except ValueError:
                        pass
        return super().deserialize(cstruct)


@colander.deferred
def ack_count(node, kw):
    return colander.Length(max=kw["settings"].max_acks_per_request)


class Acks(colander.SequenceSchema):
    ack = Ack()
    validator = ack_count


class AckSchema(colander.MappingSchema):
    acks = Acks()
