"""Who is calling: the device behind the bearer token, and the client address."""

from __future__ import annotations

import threading

from pyramid.interfaces import ISecurityPolicy
from pyramid.request import RequestLocalCache
from pyramid.security import Allowed, Denied
from pyramid.tweens import EXCVIEW

from .errors import unauthorized
from .models.prepared import pooled
from .services.accounts import Caller, authenticate
from .tokens import hash_token, looks_like_token

# The permission every authenticated endpoint asks for; finer rules (that
# device only, same user) live in the services, where they are tested.
DEVICE = "device"
# The same, for a request whose own transaction checks that the token still
# names the caller (a send: fxchat.services.storing). Its caller may come from
# the process's memory of recent authentications, without a statement.
SELF_CHECKING_DEVICE = "self-checking device"
# Devices remembered per process: a few megabytes at most.
RECENT_IDENTITIES = 10_000
# Set in the environ of a request whose caller came from memory, unchecked yet.
_FROM_MEMORY = "fxchat.identity_from_memory"


def bearer_token(request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class RecentIdentities:
    """Devices this process authenticated, by token hash: at most ``size``, oldest out first.

    Only ever asked for requests that check the token again themselves, in
    their own transaction: a device revoked since it was remembered is
    refused there, whichever process remembered it.
    """

    def __init__(self, size: int = RECENT_IDENTITIES):
        self.size = size
        self._by_token_hash: dict[bytes, Caller] = {}
        self._lock = threading.Lock()

    def get(self, token_hash: bytes) -> Caller | None:
        return self._by_token_hash.get(token_hash)

    def remember(self, caller: Caller) -> None:
        with self._lock:
            if len(self._by_token_hash) >= self.size:
                # Dictionaries keep their insertion order: the oldest goes.
                del self._by_token_hash[next(iter(self._by_token_hash))]
            self._by_token_hash[caller.token_hash] = caller

    def forget(self, token_hash: bytes) -> None:
        with self._lock:
            self._by_token_hash.pop(token_hash, None)


class BearerTokenSecurityPolicy:
    """Identity is the active device whose token hash matches the bearer token."""

    def __init__(self, recent: RecentIdentities | None = None):
        # Pyramid asks for the identity several times a request (permission,
        # view, logging): look the token up once.
        self.identity_cache = RequestLocalCache(self._load_identity)
        self.recent = recent if recent is not None else RecentIdentities()

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
            self.recent.remember(device)
            request.environ["fxchat.device_id"] = device.device_id
        return device

    def _recent_identity(self, request):
        """A remembered device for the token, else what a lookup finds."""
        token = bearer_token(request)
        if token is None or not looks_like_token(token):
            return None
        device = self.recent.get(hash_token(token))
        if device is None:
            return self._load_identity(request)
        request.environ["fxchat.device_id"] = device.device_id
        request.environ[_FROM_MEMORY] = True
        return device

    def authenticated_userid(self, request):
        device = request.identity
        return None if device is None else device.device_id

    def permits(self, request, context, permission):
        if permission == SELF_CHECKING_DEVICE:
            # Asked before anything else wants the identity, so that
            # request.identity is this one for the rest of the request.
            device = self.identity_cache.get_or_create(request, self._recent_identity)
        elif permission == DEVICE:
            device = request.identity
        else:
            device = None
        if device is not None:
            return Allowed("an active device")
        return Denied("no valid bearer token")

    def remember(self, request, userid, **kw):
        return []

    def forget(self, request, **kw):
        return []


def token_checked(request) -> None:
    """The request's own transaction has checked its token: no re-check needed."""
    request.environ.pop(_FROM_MEMORY, None)


def refused_requests_recheck_tween_factory(handler, registry):
    """401 for a refused request whose caller came from memory and whose token no longer works.

    Such a request checks the token in its own transaction (a send:
    fxchat.services.storing); one refused before it gets there, for any
    reason (an invalid body or header, its rate, an unavailable rate limiter),
    is checked here instead, so that a revoked token gets 401 whatever else is
    wrong with the request (PROTOCOL.md §3). Costs a lookup only then.
    """

    policy = registry.getUtility(ISecurityPolicy)

    def refused_requests_recheck_tween(request):
        response = handler(request)
        if (
            request.environ.pop(_FROM_MEMORY, False)
            and response.status_code >= 400
            and response.status_code != 401
            and policy._load_identity(request) is None
        ):
            forget_recent_identity(request)
            return unauthorized()
        return response

    return refused_requests_recheck_tween


def forget_recent_identity(request) -> None:
    """The request's own check found its token no longer valid: never take it from memory again."""
    device = request.identity
    if device is not None:
        request.registry.getUtility(ISecurityPolicy).recent.forget(device.token_hash)


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
    # Outside the exception views, to see every refusal as a response; inside
    # pyramid_tm and the database errors' tween, which answer a lookup that
    # fails with 503.
    config.add_tween(
        "fxchat.security.refused_requests_recheck_tween_factory",
        over=EXCVIEW,
        under="pyramid_tm.tm_tween_factory",
    )
