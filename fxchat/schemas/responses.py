"""Schemas of the API's responses, for the generated OpenAPI document.

They describe what the views return; the tests fuzz the API against the
document (schemathesis), so a response that drifts from them is caught.
"""

from __future__ import annotations

import colander

from .types import Base64Url, StrictInt, StrictString


def _string(**kw):
    return colander.SchemaNode(StrictString(), **kw)


def _integer(**kw):
    return colander.SchemaNode(StrictInt(), **kw)


def _bytes(length=None, **kw):
    return colander.SchemaNode(Base64Url(length=length), **kw)


class DeviceAddress(colander.MappingSchema):
    user = _string()
    device_id = _string()


class DeviceAddresses(colander.SequenceSchema):
    device = DeviceAddress()


class ErrorDetail(colander.MappingSchema):
    location = _string()
    name = _string()
    description = _string()


class ErrorDetails(colander.SequenceSchema):
    error = ErrorDetail()


class ErrorBody(colander.MappingSchema):
    status = _string(validator=colander.OneOf(["error"]))
    errors = ErrorDetails()
    missing_devices = DeviceAddresses(missing=colander.drop)
    extra_devices = DeviceAddresses(missing=colander.drop)
    full_devices = DeviceAddresses(missing=colander.drop)


class NewDeviceBody(colander.MappingSchema):
    user = _string()
    device_id = _string()
    token = _string()


class DeviceEntry(colander.MappingSchema):
    device_id = _string()
    public_key = _bytes(32)
    created_at = _integer()


class DeviceEntries(colander.SequenceSchema):
    device = DeviceEntry()


class DeviceListBody(colander.MappingSchema):
    user = _string()
    devices = DeviceEntries()


class KeyBody(colander.MappingSchema):
    device_id = _string()
    public_key = _bytes(32)


class SentBody(colander.MappingSchema):
    id = _string()
    sent_at = _integer()
    expires_at = _integer()


class QueuedMessage(colander.MappingSchema):
    id = _string()
    sender = DeviceAddress()
    sent_at = _integer()
    expires_at = _integer()
    suite = _string()
    encrypted_message = _bytes()
    encrypted_aes_key = _bytes(60)
    msg_sig = _bytes(32)
    msg_pub_key = _bytes(32)


class QueuedMessages(colander.SequenceSchema):
    message = QueuedMessage()


class PageBody(colander.MappingSchema):
    messages = QueuedMessages()
    next = _string(missing=colander.drop, description="a cursor, or null on the last page")


class Ids(colander.SequenceSchema):
    id = _string()


class AckBody(colander.MappingSchema):
    acked = Ids()
    unknown = Ids()


class Receipt(colander.MappingSchema):
    user = _string()
    device_id = _string()
    status = _string(validator=colander.OneOf(["pending", "acked", "expired"]))
    acked_at = _integer(missing=colander.drop)
    mac_key = _bytes(32, missing=colander.drop)


class ReceiptList(colander.SequenceSchema):
    receipt = Receipt()


class ReceiptsBody(colander.MappingSchema):
    id = _string()
    receipts = ReceiptList()


class HeartbeatBody(colander.MappingSchema):
    database = _string(validator=colander.OneOf(["ok", "error"]))


class VersionBody(colander.MappingSchema):
    name = _string()
    version = _string()
    commit = _string()


class EmptyBody(colander.MappingSchema):
    pass


class RetryAfter(colander.MappingSchema):
    retry_after = colander.SchemaNode(colander.Int(), name="Retry-After")


class Authenticate(colander.MappingSchema):
    authenticate = colander.SchemaNode(colander.String(), name="WWW-Authenticate")


ERRORS = {
    "400": "Malformed request: the errors name each bad field",
    "401": "No valid bearer token",
    "403": "Forbidden for this device, or registration is closed",
    "404": "Unknown, or not visible to this device",
    "409": "Conflict: the state on the server does not allow it",
    "413": "Request body too large",
    "422": "Idempotency-Key reused for a different request",
    "429": "Too many requests; retry after Retry-After seconds",
    "503": "Database unavailable or busy; retry after Retry-After seconds",
}
ERROR_HEADERS = {"401": Authenticate, "429": RetryAfter, "503": RetryAfter}


def responses(
    status: int,
    body: type[colander.MappingSchema] | None,
    description: str,
    errors: tuple[int, ...] = (),
) -> dict:
    """cornice_swagger ``response_schemas``: the success and each possible error."""
    documented = {str(status): response(body, description)}
    for code in sorted(set(errors) | {429, 503}):
        code = str(code)
        documented[code] = response(ErrorBody, ERRORS[code], ERROR_HEADERS.get(code))
    return documented


def response(body, description, headers=None):
    """One documented response: its body schema, description and headers."""

    class Response(colander.MappingSchema):
        pass

    schema = Response(description=description)
    if body is not None:
        schema.add(body(name="body"))
    if headers is not None:
        schema.add(headers(name="headers"))
    return schema
