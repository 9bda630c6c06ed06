"""An in-memory stand-in for the relay, reached through a ``requests`` adapter.

It follows PROTOCOL.md §3 closely enough to drive the client library, and
lets a test inject what a real network does: refused connections, answers
lost after the server acted, 429 and 503. It checks little; the real server
is exercised by tests/client/test_end_to_end.py.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import MaxRetryError, NewConnectionError

from fxchat.tokens import new_id

URL = "http://relay.test"
DAY_MS = 24 * 3600 * 1000


@dataclass
class FakeDevice:
    user: str
    device_id: str
    public_key: str
    created_at: int
    queue: list[dict] = field(default_factory=list)


@dataclass
class Fault:
    """What goes wrong with the next request that ``applies`` to."""

    kind: str  # "refused", "lost_answer" or "status"
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    applies: Callable[[str, str], bool] = lambda method, path: True


class FakeRelay:
    def __init__(self) -> None:
        self.devices: dict[tuple[str, str], FakeDevice] = {}
        self.tokens: dict[str, tuple[str, str]] = {}
        self.sent: dict[str, dict] = {}
        self.idempotency: dict[tuple[tuple[str, str], str], tuple[bytes, dict]] = {}
        self.requests: list[requests.PreparedRequest] = []
        self.faults: list[Fault] = []
        self.now = 1_700_000_000_000
        # Called with the sender before a send is checked, to change devices meanwhile.
        self.before_send: Callable[[tuple[str, str]], None] | None = None

    # -- test helpers ------------------------------------------------------

    def session(self) -> requests.Session:
        session = requests.sessions.Session()  # unaffected by tests patching requests.Session
        session.mount(URL, FakeAdapter(self))
        return session

    def fail(self, kind: str, *, times: int = 1, status: int = 0, **options) -> None:
        self.faults += [Fault(kind, status, **options) for _ in range(times)]

    def add_device(self, user: str, public_key: str) -> tuple[str, str]:
        """Create a device directly; returns (device_id, token)."""
        # Ids as the real server makes them: never with a leading "-", which
        # the CLI would take for an option.
        device_id = new_id()
        token = secrets.token_urlsafe(16)
        self.devices[(user, device_id)] = FakeDevice(user, device_id, public_key, self.now)
        self.tokens[token] = (user, device_id)
        return device_id, token

    def requests_to(self, method: str, path: str) -> list[requests.PreparedRequest]:
        return [r for r in self.requests if r.method == method and urlsplit(r.url).path == path]

    # -- the protocol ------------------------------------------------------

    def handle(self, request: requests.PreparedRequest) -> tuple[int, dict, object]:
        url = urlsplit(request.url)
        path, query = url.path, parse_qs(url.query)
        body = json.loads(request.body) if request.body else None
        method = request.method
        if method == "POST" and path == "/v1/accounts":
            if any(user == body["user"] for user, _ in self.devices):
                return _error(409, "user", "user exists")
            return self._created(body["user"], body["public_key"])
        caller = self.tokens.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
        if caller is None:
            return _error(401, "Authorization", "a valid bearer token is required")
        if method == "POST" and path == "/v1/devices":
            return self._created(caller[0], body["public_key"])
        if match := re.fullmatch(r"/v1/users/([^/]+)/devices", path):
            return self._list_devices(unquote(match[1]))
        if method == "PUT" and (match := re.fullmatch(r"/v1/devices/([^/]+)/key", path)):
            self.devices[caller].public_key = body["public_key"]
            return 200, {}, {"device_id": caller[1], "public_key": body["public_key"]}
        if method == "DELETE" and (match := re.fullmatch(r"/v1/devices/([^/]+)", path)):
            del self.devices[(caller[0], unquote(match[1]))]
            self.tokens = {t: d for t, d in self.tokens.items() if d in self.devices}
            return 204, {}, None
        if method == "POST" and path == "/v1/messages":
            return self._send(caller, request)
        if method == "GET" and path == "/v1/messages":
            return self._fetch(caller, query)
        if method == "POST" and path == "/v1/messages/ack":
            return self._ack(caller, body["acks"])
        if match := re.fullmatch(r"/v1/messages/([^/]+)/receipts", path):
            return self._receipts(caller, unquote(match[1]))
        return _error(404, "path", "not found")

    def _created(self, user: str, public_key: str) -> tuple[int, dict, object]:
        device_id, token = self.add_device(user, public_key)
        return 201, {}, {"user": user, "device_id": device_id, "token": token}

    def _list_devices(self, user: str) -> tuple[int, dict, object]:
        devices = [d for (u, _), d in self.devices.items() if u == user]
        if not devices:
            return _error(404, "user", f"unknown user {user}")
        return (
            200,
            {},
            {
                "user": user,
                "devices": [
                    {
                        "device_id": d.device_id,
                        "public_key": d.public_key,
                        "created_at": d.created_at,
                    }
                    for d in devices
                ],
            },
        )

    def _send(self, caller, request) -> tuple[int, dict, object]:
        key = request.headers.get("Idempotency-Key")
        if key is not None and (caller, key) in self.idempotency:
            earlier_body, answer = self.idempotency[(caller, key)]
            if earlier_body != request.body:
                return _error(422, "Idempotency-Key", "used for a different request")
            return 201, {}, answer
        if self.before_send is not None:
            self.before_send(caller)
        message = json.loads(request.body)
        listed = {(r["user"], r["device_id"]) for r in message["recipients"]}
        users = {user for user, _ in listed}
        current = {k for k in self.devices if k[0] in users and k != caller}
        if listed != current:
            return (
                409,
                {},
                {
                    "status": "error",
                    "errors": [{"location": "body", "name": "recipients", "description": "stale"}],
                    "missing_devices": [{"user": u, "device_id": d} for u, d in current - listed],
                    "extra_devices": [{"user": u, "device_id": d} for u, d in listed - current],
                },
            )
        message_id = new_id()
        expires_at = self.now + message.get("ttl", 7 * 86400) * 1000
        answer = {"id": message_id, "sent_at": self.now, "expires_at": expires_at}
        self.sent[message_id] = {"sender": caller, "receipts": {}}
        for r in message["recipients"]:
            address = (r["user"], r["device_id"])
            self.sent[message_id]["receipts"][address] = {"status": "pending"}
            self.devices[address].queue.append(
                {
                    "id": message_id,
                    "sender": {"user": caller[0], "device_id": caller[1]},
                    "sent_at": self.now,
                    "expires_at": expires_at,
                    "suite": message["suite"],
                    "encrypted_message": message["encrypted_message"],
                    **{k: r[k] for k in ("encrypted_aes_key", "msg_sig", "msg_pub_key")},
                }
            )
        if key is not None:
            self.idempotency[(caller, key)] = (request.body, answer)
        self.now += 1000
        return 201, {}, answer

    def _fetch(self, caller, query) -> tuple[int, dict, object]:
        queue = self.devices[caller].queue
        limit = int(query.get("limit", ["100"])[0])
        start = int(query["after"][0]) if "after" in query else 0
        page = queue[start : start + limit]
        more = start + limit < len(queue)
        return 200, {}, {"messages": page, "next": str(start + limit) if more else None}

    def _ack(self, caller, acks) -> tuple[int, dict, object]:
        device = self.devices[caller]
        acked, unknown = [], []
        for ack in acks:
            copies = [c for c in device.queue if c["id"] == ack["id"]]
            if not copies:
                unknown.append(ack["id"])
                continue
            device.queue.remove(copies[0])
            receipt = {"status": "acked", "acked_at": self.now}
            if "mac_key" in ack:
                receipt["mac_key"] = ack["mac_key"]
            self.sent[ack["id"]]["receipts"][caller] = receipt
            acked.append(ack["id"])
        return 200, {}, {"acked": acked, "unknown": unknown}

    def _receipts(self, caller, message_id) -> tuple[int, dict, object]:
        sent = self.sent.get(message_id)
        if sent is None or sent["sender"][0] != caller[0]:
            return _error(404, "id", "no such message")
        receipts = [
            {"user": u, "device_id": d, **receipt} for (u, d), receipt in sent["receipts"].items()
        ]
        return 200, {}, {"id": message_id, "receipts": receipts}


class FakeAdapter(BaseAdapter):
    def __init__(self, relay: FakeRelay) -> None:
        super().__init__()
        self.relay = relay

    def send(self, request, **kwargs) -> requests.Response:
        relay = self.relay
        relay.requests.append(request)
        path = urlsplit(request.url).path
        fault = next((f for f in relay.faults if f.applies(request.method, path)), None)
        if fault is not None:
            relay.faults.remove(fault)
        if fault is not None and fault.kind == "refused":
            reason = NewConnectionError(None, "Failed to establish a new connection")
            raise requests.ConnectionError(MaxRetryError(None, request.url, reason))
        if fault is not None and fault.kind == "status":
            status, headers, body = _error(fault.status, "server", "try later")
            headers = {**headers, **fault.headers}
        else:
            status, headers, body = relay.handle(request)
        if fault is not None and fault.kind == "lost_answer":
            raise requests.ReadTimeout("the answer was lost")
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict(headers)
        response._content = b"" if body is None else json.dumps(body).encode()
        response.url = request.url
        response.request = request
        response.reason = "fake"
        return response

    def close(self) -> None:
        pass


def _error(status: int, name: str, description: str) -> tuple[int, dict, object]:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    body = {
        "status": "error",
        "errors": [{"location": "body", "name": name, "description": description}],
    }
    return status, headers, body
