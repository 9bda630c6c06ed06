"""PostgreSQL goes away and comes back, behind a TCP proxy the test cuts and restores.

What is proved (PROTOCOL.md §3.7–§3.8): while the database is unreachable,
``/__heartbeat__`` and the API answer 503 quickly (within ``fxchat.db_timeout``
and a margin), the API in its JSON error format with ``Retry-After`` and
without a traceback; sends caught by the cut are answered 201 or 503, never
500, and a 503'd send retried with its Idempotency-Key is stored exactly
once; once the database is back, the same worker processes serve again.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

import pytest
import requests
import sqlalchemy

from .checks import assert_clean_logs, stored_messages
from .devices import TIMEOUT, Envelope, HttpDevice, envelope, register
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

DB_TIMEOUT = 2
# No answer may take longer while the database is cut: db_timeout plus a
# margin for a loaded test machine.
ANSWER_BOUND = DB_TIMEOUT + 2.0
# The heartbeat must report the database back within this after the restore.
RECOVERY_BOUND = 10.0


@pytest.fixture
def proxy(fresh_postgresql_url):
    url = sqlalchemy.engine.make_url(fresh_postgresql_url)
    proxy = TcpProxy((url.host, url.port or 5432))
    proxy.start()
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_server(fresh_postgresql_url, proxy, start_server):
    proxied = (
        sqlalchemy.engine.make_url(fresh_postgresql_url)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )
    return start_server(proxied, workers=2, settings={"fxchat.db_timeout": str(DB_TIMEOUT)})


@dataclass
class StormSend:
    sender: HttpDevice
    key: str
    sent: Envelope
    status: int | None = None
    seconds: float = 0.0
    message_id: str | None = None


def assert_unavailable(response: requests.Response, seconds: float) -> None:
    """A 503 in the API's JSON error format, with Retry-After, soon enough."""
    assert response.status_code == 503, response.text
    assert seconds < ANSWER_BOUND, f"answered after {seconds:.1f} s"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "error"
    assert body["errors"] and all(
        set(error) == {"location", "name", "description"} for error in body["errors"]
    )
    for leak in ("Traceback", "psycopg", "sqlalchemy", "SELECT", "INSERT"):
        assert leak not in response.text


def timed(call, *args, **kwargs):
    started = time.monotonic()
    response = call(*args, **kwargs)
    return response, time.monotonic() - started


def test_database_outage_is_503_and_the_same_workers_recover(
    fresh_postgresql_url, proxy, proxied_server, exchanges
):
    server = proxied_server
    alice = register(server.url, f"alice-{secrets.token_hex(3)}@example.com", exchanges)
    bob = register(server.url, f"bob-{secrets.token_hex(3)}@example.com", exchanges)
    to_bob = {bob.address}
    # Warm every worker's connection pool, so that the cut hits live connections.
    for _ in range(8):
        assert alice.clone().send(envelope(to_bob)).status_code == 201
    assert requests.get(server.url + "/__heartbeat__", timeout=TIMEOUT).status_code == 200
    workers = server.worker_pids()
    assert len(workers) == 2
    # gunicorn may hand all the warm-up sends to one worker: one live
    # connection is enough for the cut to break; the other worker's new
    # connections are refused either way.
    assert proxy.connection_count() >= 1, "the pools hold no connection for the cut to break"

    # Sends keep coming while the database goes away and comes back.
    storm: list[StormSend] = []
    storm_failures: list[BaseException] = []
    stop = threading.Event()

    def send_storm(client: HttpDevice) -> None:
        try:
            send_until_stopped(client)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            storm_failures.append(error)

    def send_until_stopped(client: HttpDevice) -> None:
        while not stop.is_set():
            attempt = StormSend(client, secrets.token_urlsafe(12), envelope(to_bob))
            storm.append(attempt)
            response, attempt.seconds = timed(
                client.send, attempt.sent, idempotency_key=attempt.key
            )
            attempt.status = response.status_code
            if response.status_code == 201:
                attempt.message_id = response.json()["id"]
            else:
                assert_unavailable(response, attempt.seconds)
                time.sleep(0.05)

    storm_threads = [
        threading.Thread(target=send_storm, args=(alice.clone(),), daemon=True) for _ in range(3)
    ]
    for thread in storm_threads:
        thread.start()
    time.sleep(1.0)

    proxy.cut()
    cut_at = time.monotonic()
    for _ in range(4):
        # New connections each time, so that both workers answer some.
        response, seconds = timed(requests.get, server.url + "/__heartbeat__", timeout=TIMEOUT)
        assert response.status_code == 503 and seconds < ANSWER_BOUND, (response, seconds)
        assert_unavailable(*timed(alice.clone().send, envelope(to_bob)))
        assert_unavailable(*timed(bob.clone().fetch))
    time.sleep(max(0.0, cut_at + 3.0 - time.monotonic()))

    proxy.restore()
    restored_at = time.monotonic()
    while time.monotonic() - restored_at < RECOVERY_BOUND:
        if requests.get(server.url + "/__heartbeat__", timeout=TIMEOUT).status_code == 200:
            break
        time.sleep(0.1)
    recovered_in = time.monotonic() - restored_at
    assert recovered_in < RECOVERY_BOUND, "the heartbeat did not recover"
    for _ in range(8):
        response, seconds = timed(alice.clone().send, envelope(to_bob))
        assert response.status_code == 201, response.text
    assert bob.clone().fetch().status_code == 200
    time.sleep(0.5)  # the storm, too, gets answers again
    stop.set()
    for thread in storm_threads:
        thread.join(ANSWER_BOUND + 5)
    assert not any(t.is_alive() for t in storm_threads), "a storm send hung"
    if storm_failures:
        raise storm_failures[0]

    assert server.worker_pids() == workers, "workers were replaced instead of recovering"
    statuses = {a.status for a in storm}
    assert statuses == {201, 503}, f"storm answers: {statuses}"
    slowest = max(a.seconds for a in storm if a.status == 503)
    assert slowest < ANSWER_BOUND

    # A 503'd send may or may not have been stored (the cut may hit its
    # COMMIT); retried with its key, it is stored exactly once.
    for attempt in storm:
        if attempt.status != 201:
            response = attempt.sender.send(attempt.sent, idempotency_key=attempt.key)
            assert response.status_code == 201, response.text
            attempt.message_id = response.json()["id"]
    stored: dict[bytes, str] = {}
    for message in stored_messages(fresh_postgresql_url):
        assert message.body not in stored, "one send stored twice"
        stored[message.body] = message.message_id
    for attempt in storm:
        assert stored.get(attempt.sent.encrypted_message) == attempt.message_id
    queued = {m["id"] for m in bob.clone().fetch_all()}
    assert {a.message_id for a in storm} <= queued

    records = server.log_records()
    assert_clean_logs(server, records=records, allowed_tracebacks={"fxchat.views.operations"})
    assert any(r.get("logger") == "fxchat.database_errors" for r in records)
    print(
        f"\nstorm: {len(storm)} sends, {sum(a.status == 503 for a in storm)} answered 503, "
        f"slowest 503 {slowest:.2f} s; heartbeat back {recovered_in:.2f} s after the restore"
    )


def test_a_lock_held_past_db_timeout_is_a_quick_503(fresh_postgresql_url, start_server, exchanges):
    server = start_server(
        fresh_postgresql_url, workers=2, settings={"fxchat.db_timeout": str(DB_TIMEOUT)}
    )
    alice = register(server.url, f"alice-{secrets.token_hex(3)}@example.com", exchanges)
    bob = register(server.url, f"bob-{secrets.token_hex(3)}@example.com", exchanges)
    engine = sqlalchemy.create_engine(fresh_postgresql_url)
    try:
        with engine.connect() as connection:
            # Another session (a stuck job, a migration) holds bob's device row.
            connection.execute(
                sqlalchemy.text("SELECT pk FROM devices WHERE device_id = :device_id FOR UPDATE"),
                {"device_id": bob.device_id},
            )
            response, seconds = timed(alice.send, envelope({bob.address}))
            connection.rollback()
    finally:
        engine.dispose()
    assert_unavailable(response, seconds)
    assert alice.send(envelope({bob.address})).status_code == 201
    assert_clean_logs(server)
