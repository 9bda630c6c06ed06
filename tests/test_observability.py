"""One JSON access-log line per request, a request id, and never a token or a body in the logs."""

import json
import os

import requests

from .conftest import b64


def test_a_full_scenario_logs_one_json_line_per_request_and_no_secret(live_server):
    url = live_server.url
    http = requests.Session()
    secrets_seen = []
    request_ids = []

    def call(method, path, token=None, **kw):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = http.request(method, url + path, headers=headers, timeout=10, **kw)
        request_ids.append(response.headers["X-Request-Id"])
        return response

    alice = call(
        "POST",
        "/v1/accounts",
        json={"user": "alice@example.com", "public_key": b64(os.urandom(32))},
    ).json()
    bob = call(
        "POST", "/v1/accounts", json={"user": "bob@example.com", "public_key": b64(os.urandom(32))}
    ).json()
    phone = call(
        "POST", "/v1/devices", bob["token"], json={"public_key": b64(os.urandom(32))}
    ).json()
    secrets_seen += [alice["token"], bob["token"], phone["token"]]
    body = b64(os.urandom(64))
    mac_key = b64(os.urandom(32))
    secrets_seen += [body, mac_key]
    recipients = [
        {
            "user": "bob@example.com",
            "device_id": d["device_id"],
            "encrypted_aes_key": b64(os.urandom(60)),
            "msg_sig": b64(os.urandom(32)),
            "msg_pub_key": b64(os.urandom(32)),
        }
        for d in (bob, phone)
    ]
    sent = call(
        "POST",
        "/v1/messages",
        alice["token"],
        json={"suite": "fxchat-1", "encrypted_message": body, "recipients": recipients},
    )
    assert sent.status_code == 201
    call("GET", "/v1/messages", bob["token"])
    call(
        "POST",
        "/v1/messages/ack",
        bob["token"],
        json={"acks": [{"id": sent.json()["id"], "mac_key": mac_key}]},
    )
    call("GET", f"/v1/messages/{sent.json()['id']}/receipts", alice["token"])
    call("DELETE", f"/v1/devices/{phone['device_id']}", bob["token"])
    # Failures are logged too, and a rejected token must not appear either.
    assert call("GET", "/v1/messages", phone["token"]).status_code == 401
    assert call("POST", "/v1/messages", alice["token"], data=b"{not json").status_code == 400
    live_server.stop()

    log = live_server.log.read_text()
    for secret in secrets_seen:
        assert secret not in log
    access = [
        json.loads(line)
        for line in log.splitlines()
        if json.loads(line)["logger"] == "fxchat.access"
    ]
    logged_ids = [line["request_id"] for line in access]
    # One line per request (retries included); the start-up probes log too.
    assert all(logged_ids.count(request_id) == 1 for request_id in request_ids)
    for line in access:
        assert {"method", "route", "status", "duration_ms", "request_id"} <= line.keys()
        assert isinstance(line["duration_ms"], float | int)
        # The request's own CPU in its thread: never more than its wall time.
        assert 0 <= line["cpu_ms"] <= line["duration_ms"] + 0.01
    by_id = {line["request_id"]: line for line in access}
    assert by_id[request_ids[0]]["route"] == "/v1/accounts"
    assert by_id[request_ids[0]]["status"] == 201
    assert by_id[request_ids[-2]]["status"] == 401
    assert "Traceback" not in log


def test_request_id_is_echoed_or_made(app):
    given = app.get("/__lbheartbeat__", headers={"X-Request-Id": "abc-123"})
    assert given.headers["X-Request-Id"] == "abc-123"
    made = app.get("/__lbheartbeat__", headers={"X-Request-Id": "bad id\nwith newline"})
    assert made.headers["X-Request-Id"] != "bad id\nwith newline"
    assert len(made.headers["X-Request-Id"]) == 32


def test_every_response_says_json_and_nosniff(app):
    for path, status in (("/__lbheartbeat__", 200), ("/v1/messages", 401), ("/nowhere", 404)):
        response = app.get(path, status=status)
        assert response.content_type == "application/json"
        assert response.headers.getall("X-Content-Type-Options") == ["nosniff"]


def test_cors_is_off_by_default(app):
    response = app.get("/__lbheartbeat__", headers={"Origin": "https://chat.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = app.options(
        "/v1/messages",
        headers={"Origin": "https://chat.example", "Access-Control-Request-Method": "POST"},
        status="*",
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_cors_allows_configured_origins_only(make_app):
    app = make_app(cors_origins="https://chat.example https://web.example")
    preflight = app.options(
        "/v1/messages",
        headers={
            "Origin": "https://chat.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        status=204,
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://chat.example"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    actual = app.get("/v1/messages", headers={"Origin": "https://web.example"}, status=401)
    assert actual.headers["Access-Control-Allow-Origin"] == "https://web.example"
    assert "Retry-After" in actual.headers["Access-Control-Expose-Headers"]
    other = app.get("/__lbheartbeat__", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
