"""Request rates per device and per client address, on the ``limits`` library.

``fxchat.ratelimit.url`` picks the storage: ``memory://`` counts in the
process (one worker, nothing to set up); ``redis://…`` shares the counts
between all the workers of a deployment.
"""

from __future__ import annotations

import logging
import math
import time

import limits
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from .errors import service_unavailable, too_many_requests

logger = logging.getLogger(__name__)

# The rate classes an endpoint can belong to, each with its setting.
CLASSES = ("send", "fetch", "keys", "register")


class RateLimits:
    def __init__(self, settings):
        self.enabled = settings.ratelimit_enabled
        self.items = {
            name: limits.parse(getattr(settings, f"ratelimit_{name}")) for name in CLASSES
        }
        self.storage = storage_from_string(settings.ratelimit_url)
        # The sliding window counter smooths bursts at window edges at the
        # cost of two counters per key: a good trade for a relay.
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)

    def check(self, rate_class: str, identity: str) -> None:
        """Count one request; raise a 429 if the identity is over its rate."""
        if not self.enabled:
            return
        item = self.items[rate_class]
        try:
            allowed = self.limiter.hit(item, rate_class, identity)
        except Exception:
            # The limiter's store (Redis) is down: refuse rather than run
            # unprotected, but say it is temporary.
            logger.warning("rate limit storage unavailable", exc_info=True)
            raise service_unavailable("rate limiting is unavailable", retry_after=5) from None
        if not allowed:
            reset_at = self.limiter.get_window_stats(item, rate_class, identity).reset_time
            raise too_many_requests(math.ceil(reset_at - time.time()))


def rate_limited(rate_class: str):
    """A Cornice validator that counts the request against the caller's rate."""
    assert rate_class in CLASSES

    def validator(request, **kwargs):
        if request.environ.get("retry.attempt", 0) > 0:
            # pyramid_retry runs the request again after a conflict: the client
            # sent it once, and its first attempt was counted.
            return
        if rate_class == "register":
            identity = request.client_address
        else:
            identity = request.identity.device_id
        request.registry["fxchat.ratelimits"].check(rate_class, identity)

    validator.__name__ = f"rate_limited_{rate_class}"
    return validator


def includeme(config) -> None:
    config.registry["fxchat.ratelimits"] = RateLimits(config.registry.fxchat)
