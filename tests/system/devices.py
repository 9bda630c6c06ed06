"""Devices that talk to a real server over HTTP, and the log of every answer they got.

Each :class:`HttpDevice` has its own ``requests.Session``, so one thread
drives one device object; :meth:`HttpDevice.clone` gives another thread the
same credentials on a new session. Envelopes carry random bytes: the server
cannot tell them from real ciphertext, and random bodies identify each send
in the database.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from dataclasses import dataclass, field

import requests

# (connect, read) seconds: long enough for a loaded loopback server, short
# enough that a hung request fails the test instead of stalling it.
TIMEOUT = (5, 30)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    status: int | None  # None: no answer (connection refused, reset, timed out)
    seconds: float
    body: str = ""
    headers: dict = field(default_factory=dict)


class Exchanges:
    """Every request the test made and what came back, from all threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.items: list[Exchange] = []

    def add(self, exchange: Exchange) -> None:
        with self._lock:
            self.items.append(exchange)

    def server_errors(self) -> list[Exchange]:
        return [e for e in self.items if e.status is not None and e.status >= 500]

    def statuses(self) -> dict[int | None, int]:
        counts: dict[int | None, int] = {}
        for e in self.items:
            counts[e.status] = counts.get(e.status, 0) + 1
        return counts


@dataclass(frozen=True)
class Envelope:
    """A send body, byte for byte, and what it says about each recipient."""

    body: bytes
    encrypted_message: bytes
    wrapped_keys: dict[tuple[str, str], bytes]  # (user, device_id) -> encrypted_aes_key

    @property
    def recipients(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.wrapped_keys)


def envelope(recipients, *, ttl: int | None = None) -> Envelope:
    """A well-formed send body for ``recipients``, (user, device_id) pairs."""
    message = os.urandom(48)
    wrapped = {tuple(r): os.urandom(60) for r in recipients}
    body = {
        "suite": "fxchat-1",
        "encrypted_message": b64(message),
        "recipients": [
            {
                "user": u,
                "device_id": d,
                "encrypted_aes_key": b64(k),
                "msg_sig": b64(os.urandom(32)),
                "msg_pub_key": b64(os.urandom(32)),
            }
            for (u, d), k in wrapped.items()
        ],
    }
    if ttl is not None:
        body["ttl"] = ttl
    return Envelope(json.dumps(body).encode(), message, wrapped)


class HttpDevice:
    def __init__(self, base_url: str, user: str, device_id: str, token: str, exchanges: Exchanges):
        self.base_url = base_url
        self.user = user
        self.device_id = device_id
        self.token = token
        self.exchanges = exchanges
        self.session = requests.Session()

    @property
    def address(self) -> tuple[str, str]:
        return self.user, self.device_id

    def clone(self) -> HttpDevice:
        """The same device on a new session, for another thread."""
        return HttpDevice(self.base_url, self.user, self.device_id, self.token, self.exchanges)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict | None = None,
        params: dict | None = None,
        timeout=TIMEOUT,
    ) -> requests.Response:
        """One request; a request that got no answer raises requests.RequestException."""
        all_headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        return call(
            self.session,
            self.exchanges,
            method,
            self.base_url + path,
            data=body,
            headers=all_headers,
            params=params,
            timeout=timeout,
        )

    def add_device(self) -> HttpDevice:
        response = self.request(
            "POST", "/v1/devices", body=json.dumps({"public_key": b64(os.urandom(32))}).encode()
        )
        assert response.status_code == 201, response.text
        created = response.json()
        return HttpDevice(
            self.base_url, created["user"], created["device_id"], created["token"], self.exchanges
        )

    def revoke(self, device_id: str) -> requests.Response:
        return self.request("DELETE", f"/v1/devices/{device_id}")

    def devices_of(self, user: str) -> set[tuple[str, str]]:
        response = self.request("GET", f"/v1/users/{user}/devices")
        assert response.status_code == 200, response.text
        return {(user, d["device_id"]) for d in response.json()["devices"]}

    def send(
        self, sent: Envelope, *, idempotency_key: str | None = None, timeout=TIMEOUT
    ) -> requests.Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request(
            "POST", "/v1/messages", body=sent.body, headers=headers, timeout=timeout
        )

    def fetch(
        self, *, limit: int = 100, after: str | None = None, timeout=TIMEOUT
    ) -> requests.Response:
        params = {"limit": str(limit)} | ({"after": after} if after else {})
        return self.request("GET", "/v1/messages", params=params, timeout=timeout)

    def fetch_all(self, *, limit: int = 200) -> list[dict]:
        """The whole queue, page by page, without acknowledging anything."""
        messages, after = [], None
        while True:
            response = self.fetch(limit=limit, after=after)
            assert response.status_code == 200, response.text
            page = response.json()
            messages.extend(page["messages"])
            after = page["next"]
            if after is None:
                return messages

    def ack(self, message_ids) -> requests.Response:
        body = json.dumps({"acks": [{"id": m} for m in message_ids]}).encode()
        return self.request("POST", "/v1/messages/ack", body=body)

    def receipts(self, message_id: str) -> requests.Response:
        return self.request("GET", f"/v1/messages/{message_id}/receipts")


def call(
    session: requests.Session, exchanges: Exchanges, method: str, url: str, **kwargs
) -> requests.Response:
    """``session.request`` that logs what came back, or that nothing did."""
    started = time.monotonic()
    path = url.split("/", 3)[-1]
    try:
        response = session.request(method, url, **kwargs)
    except requests.RequestException:
        exchanges.add(Exchange(method, "/" + path, None, time.monotonic() - started))
        raise
    exchanges.add(
        Exchange(
            method,
            "/" + path,
            response.status_code,
            time.monotonic() - started,
            body=response.text if response.status_code >= 500 else "",
            headers=dict(response.headers) if response.status_code >= 500 else {},
        )
    )
    return response


def register(base_url: str, user: str, exchanges: Exchanges) -> HttpDevice:
    """A new account: its first device."""
    session = requests.Session()
    response = call(
        session,
        exchanges,
        "POST",
        base_url + "/v1/accounts",
        json={"user": user, "public_key": b64(os.urandom(32))},
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    return HttpDevice(base_url, created["user"], created["device_id"], created["token"], exchanges)
