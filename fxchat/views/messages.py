"""Sending, fetching, acknowledging and receipts (PROTOCOL.md §3.2–§3.5)."""

from cornice import Service

from ..encoding import decode_cursor
from ..errors import unauthorized
from ..ratelimit import rate_limited
from ..rendering import json_response
from ..schemas.messages import AckSchema, FetchSchema, SendSchema
from ..schemas.responses import AckBody, PageBody, ReceiptsBody, SentBody, responses
from ..schemas.types import IDEMPOTENCY_KEY, OPAQUE_ID
from ..security import DEVICE, SELF_CHECKING_DEVICE, forget_recent_identity, token_checked
from ..services import inbox, receipts, sending
from . import validation

messages = Service(
    name="messages", path="/v1/messages", description="Send a message; fetch the caller's queue"
)
acks = Service(
    name="acks",
    path="/v1/messages/ack",
    description="Acknowledge messages, disclosing their mac_key",
)
message_receipts = Service(
    name="receipts",
    path="/v1/messages/{id}/receipts",
    description="What became of each copy of a message",
)


def needs_request_transaction(request) -> bool:
    """pyramid_tm's ``tm.activate_hook``: False for a send.

    A send is stored in a transaction of its own (fxchat.services.storing),
    so no request transaction is begun and committed around it; were
    anything in it to use ``request.dbsession``, that would fail loudly
    (pyramid_tm's explicit manager, no transaction begun).
    """
    return not (request.method == "POST" and request.path_info == messages.path)


def idempotency_key(request, **kwargs):
    """Validate the optional Idempotency-Key header."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        request.errors.add(
            "header", "Idempotency-Key", "must be 1 to 64 printable ASCII characters"
        )
    request.idempotency_key = key


@messages.post(
    schema=SendSchema(),
    # The send checks the sender's token again in its own transaction.
    permission=SELF_CHECKING_DEVICE,
    validators=(rate_limited("send"), idempotency_key, validation.body),
    response_schemas=responses(
        201, SentBody, "Stored for every listed device", (400, 401, 409, 413, 422)
    ),
)
def send(request):
    settings = request.registry.fxchat
    try:
        sent = sending.send(
            request.registry["db_engine"],
            request.identity,
            request.validated,
            now=request.now,
            ttl=request.validated["ttl"] or settings.default_ttl,
            max_queued=settings.max_queued_per_device,
            idempotency_key=request.idempotency_key,
            fingerprint=sending.request_fingerprint(request.body),
            idempotency_window=settings.idempotency_window,
        )
    except sending.UnknownSender:
        # Revoked since this process remembered it.
        forget_recent_identity(request)
        raise unauthorized() from None
    finally:
        # Whatever the send's transaction found, it checked the token: a 409
        # or 422 of its own needs no re-check (security.token_checked).
        token_checked(request)
    return json_response(sent.as_json(), status=201)


@messages.get(
    schema=FetchSchema(),
    permission=DEVICE,
    validators=(rate_limited("fetch"), validation.querystring),
    response_schemas=responses(200, PageBody, "The oldest pending messages", (400, 401)),
)
def fetch(request):
    after = request.validated["after"]
    page = inbox.fetch(
        request.dbsession,
        request.identity,
        now=request.now,
        limit=request.validated["limit"],
        after=None if after is None else decode_cursor(after),
    )
    return json_response(page.as_json())


@acks.post(
    schema=AckSchema(),
    permission=DEVICE,
    validators=(rate_limited("fetch"), validation.body),
    response_schemas=responses(200, AckBody, "Acknowledged and unknown ids", (400, 401, 413)),
)
def acknowledge(request):
    acknowledged = inbox.acknowledge(
        request.dbsession, request.identity, request.validated["acks"], now=request.now
    )
    return json_response(acknowledged.as_json())


@message_receipts.get(
    permission=DEVICE,
    validators=(rate_limited("fetch"), validation.path_matches(id=OPAQUE_ID)),
    response_schemas=responses(200, ReceiptsBody, "One receipt per device copy", (401, 404)),
)
def get_receipts(request):
    return receipts.receipts(
        request.dbsession, request.identity, request.matchdict["id"], now=request.now
    )
