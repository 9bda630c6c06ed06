"""Who is calling: the device behind the bearer token, and the client address."""

from __future__ import annotations

from pyramid.request import RequestLocalCache
from pyramid.security import Allowed, Denied

from .models.prepared import pooled
from .services.accounts import authenticate

# The permission every authenticated endpoint asks for; finer rules (that
# device only, same user) live in the services, where they are tested.
DEVICE = "device"


def bearer_token(request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class BearerTokenSecurityPolicy:
    """Identity is the active device whose token hash matches the bearer token."""

    def __init__(self):
        # Pyramid asks for the identity several times a request (permission,
        # view, logging): look the token up once.
        self.identity_cache = RequestLocalCache(self._load_identity)

    def identity(self, request):
        return self.identity_cache.get_or_create(request)

    def _load_identity(self, request):
        token = bearer_token(request)
        if token is None:
            return None
        # One statement on a pooled connection in autocommit, outside the
        # request's transaction: no BEGIN or COMMIT round trips for it, and on
        # SQLite no write lock held while the request is validated.
        with pooled(request.registry["db_engine"]) as connection:
            device = authenticate(connection, token)
        if device is not None:
            request.environ["fxchat.device_id"] = device.device_id
        return device

    def authenticated_userid(self, request):
        device = request.identity
        return None if device is None else device.device_id

    def permits(self, request, context, permission):
        if permission == DEVICE and request.identity is not None:
            return Allowed("an active device")
        return Denied("no valid bearer token")

    def remember(self, request, userid, **kw):
        return []

    def forget(self, request, **kw):
        return []


def client_address(request) -> str:
    """The client's address, trusting X-Forwarded-For only from our own proxies."""
    address = request.remote_addr or "unknown"
    trusted = request.registry.fxchat.trusted_proxies
    if address in trusted:
        forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",")]
        # The right-most address not added by a trusted proxy is the client.
        for candidate in reversed([a for a in forwarded if a]):
            if candidate not in trusted:
                return candidate
    return address


def includeme(config) -> None:
    config.set_security_policy(BearerTokenSecurityPolicy())
    config.add_request_method(client_address, reify=True)
