"""Rate limits: per device for sends, fetches and key operations; per address for sign-ups."""

import os
import secrets

import pytest
import redis

from .conftest import b64, register

REDIS_URL = os.environ.get("FXCHAT_TEST_REDIS", "redis://127.0.0.1:6379/15")


def redis_available() -> bool:
    try:
        return redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError:
        return False


@pytest.fixture(params=["memory", "redis"])
def storage_url(request):
    if request.param == "memory":
        return "memory://"
    if not redis_available():
        if os.environ.get("FXCHAT_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis is required (FXCHAT_REQUIRE_REDIS=1) at {REDIS_URL}")
        pytest.skip(f"no Redis at {REDIS_URL}")
    return REDIS_URL


def limited_app(make_app, storage_url, **limits):
    return make_app(
        **{
            "ratelimit.enabled": "true",
            "ratelimit.url": storage_url,
            **{f"ratelimit.{k}": v for k, v in limits.items()},
        }
    )


def assert_too_many(response):
    assert response.status_int == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.content_type == "application/json"
    assert response.json["status"] == "error"
    assert response.json["errors"][0]["name"] == "rate_limit"


def test_a_revoked_device_over_its_rate_is_told_401(make_app, storage_url):
    app = limited_app(make_app, storage_url, send="1/minute")
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    phone = alice.add_device()
    phone.send_to(bob)  # the phone's one send this minute; it is remembered too
    alice.delete(f"/v1/devices/{phone.device_id}")
    refused = phone.post("/v1/messages", phone.envelope(bob), status=401)
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_sends_are_limited_per_device(make_app, storage_url):
    app = limited_app(make_app, storage_url, send="3/minute")
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    for _ in range(3):
        alice.send_to(bob)
    refused = alice.post("/v1/messages", alice.envelope(bob), status=429)
    assert_too_many(refused)
    assert len(bob.inbox()) == 3  # the refused send stored nothing
    # Another device has its own allowance.
    bob.send_to(alice)


def test_fetches_and_acks_are_limited_per_device(make_app, storage_url):
    app = limited_app(make_app, storage_url, fetch="2/minute")
    alice = register(app, "alice@example.com")
    alice.get("/v1/messages")
    alice.post("/v1/messages/ack", {"acks": []}, status=200)
    assert_too_many(alice.get("/v1/messages", status=429))


def test_key_operations_are_limited_per_device(make_app, storage_url):
    app = limited_app(make_app, storage_url, keys="2/minute")
    alice = register(app, "alice@example.com")
    alice.get(f"/v1/users/{alice.user}/devices")
    alice.put(f"/v1/devices/{alice.device_id}/key", {"public_key": b64(os.urandom(32))})
    assert_too_many(alice.get(f"/v1/users/{alice.user}/devices", status=429))


def test_registration_is_limited_per_client_address(make_app, storage_url):
    app = limited_app(make_app, storage_url, register="2/hour")
    address = {"REMOTE_ADDR": f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.7"}

    def sign_up(user, status):
        return app.post_json(
            "/v1/accounts",
            {"user": user, "public_key": b64(os.urandom(32))},
            extra_environ=address,
            status=status,
        )

    sign_up("one@example.com", 201)
    sign_up("two@example.com", 201)
    assert_too_many(sign_up("three@example.com", 429))
    # Another address is not affected.
    app.post_json(
        "/v1/accounts",
        {"user": "four@example.com", "public_key": b64(os.urandom(32))},
        extra_environ={"REMOTE_ADDR": "10.255.255.1"},
        status=201,
    )


def test_forwarded_address_is_trusted_only_from_configured_proxies(make_app):
    app = make_app(
        **{
            "ratelimit.enabled": "true",
            "ratelimit.register": "1/hour",
            "trusted_proxies": "10.0.0.1",
        }
    )

    def sign_up(user, remote, forwarded, status):
        return app.post_json(
            "/v1/accounts",
            {"user": user, "public_key": b64(os.urandom(32))},
            extra_environ={"REMOTE_ADDR": remote},
            headers={"X-Forwarded-For": forwarded},
            status=status,
        )

    # Through the proxy, each forwarded client has its own allowance...
    sign_up("a@example.com", "10.0.0.1", "192.0.2.1", 201)
    sign_up("b@example.com", "10.0.0.1", "192.0.2.2", 201)
    assert_too_many(sign_up("c@example.com", "10.0.0.1", "192.0.2.2", 429))
    # ...but a client cannot pick its address by sending the header itself.
    sign_up("d@example.com", "192.0.2.50", "192.0.2.3", 201)
    assert_too_many(sign_up("e@example.com", "192.0.2.50", "192.0.2.4", 429))


def test_redis_counts_are_shared_between_processes(make_app):
    if not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL}")
    redis.Redis.from_url(REDIS_URL).flushdb()
    first = limited_app(make_app, REDIS_URL, fetch="3/minute")
    second = limited_app(make_app, REDIS_URL, fetch="3/minute")
    alice = register(first, "alice@example.com")
    alice.get("/v1/messages")
    alice.get("/v1/messages")
    alice.app = second  # the same device, served by another worker
    alice.get("/v1/messages")
    assert_too_many(alice.get("/v1/messages", status=429))


def test_unreachable_redis_answers_503_not_500(make_app):
    app = make_app(**{"ratelimit.enabled": "true", "ratelimit.url": "redis://127.0.0.1:1/0"})
    response = app.post_json(
        "/v1/accounts", {"user": "a@example.com", "public_key": b64(os.urandom(32))}, status=503
    )
    assert response.json["status"] == "error"
    assert int(response.headers["Retry-After"]) >= 1


def test_a_retried_request_counts_once(make_app, storage_url, monkeypatch):
    from sqlalchemy.exc import IntegrityError

    from fxchat.services import sending

    app = limited_app(make_app, storage_url, send="2/minute")
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    real_send, attempts = sending.send, []

    def conflicting_once(*args, **kwargs):
        # The first attempt meets a conflict (as with a concurrent twin of
        # the same Idempotency-Key); pyramid_retry runs the request again.
        attempts.append(1)
        if len(attempts) == 1:
            raise IntegrityError("INSERT", {}, Exception("duplicate key"))
        return real_send(*args, **kwargs)

    monkeypatch.setattr(sending, "send", conflicting_once)
    alice.send_to(bob)
    assert len(attempts) == 2
    # Counted once: one more send is still within 2/minute.
    alice.send_to(bob)
    assert_too_many(alice.post("/v1/messages", alice.envelope(bob), status=429))


def test_a_revoked_device_is_told_401_while_the_rate_limiter_is_down(make_app, monkeypatch):
    app = limited_app(make_app, "memory://")
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    phone = alice.add_device()
    phone.send_to(bob)  # remembered by this process
    alice.delete(f"/v1/devices/{phone.device_id}")

    def unavailable(*args, **kwargs):
        raise ConnectionError("rate limit storage down")

    limits = app.app.registry["fxchat.ratelimits"]
    monkeypatch.setattr(limits.limiter, "hit", unavailable)
    refused = phone.post("/v1/messages", phone.envelope(bob), status=401)
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    # A device whose token works is told to come back later.
    alice.post("/v1/messages", alice.envelope(bob), status=503)
