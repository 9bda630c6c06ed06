"""SIGKILL in the middle of a send storm, then a restart on the same database.

What is proved (PROTOCOL.md §3.2, "all or nothing"): every send answered
201 survives the crash and is fetchable by every recipient device; every
message in the database is whole (its body, exactly the listed copies with
their wrapped keys, a queue counter in step); a send that got no answer is
either whole or absent, and retrying it with its Idempotency-Key after the
restart stores it exactly once.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from dataclasses import dataclass

import pytest
import requests

from .checks import (
    assert_clean_logs,
    assert_no_server_errors,
    queue_counter_mismatches,
    stored_messages,
)
from .concurrency import run_concurrently
from .devices import Envelope, HttpDevice, envelope, register, unb64

pytestmark = pytest.mark.slow

SENDERS = 4
# The server is killed once this many sends were answered 201 (or after
# KILL_AFTER_SECONDS), so that sends are in flight when it dies.
KILL_AFTER_STORED = 40
KILL_AFTER_SECONDS = 15


@dataclass
class Attempt:
    sender: HttpDevice
    key: str
    sent: Envelope
    message_id: str | None = None  # set when answered 201


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request) -> tuple[str, str]:
    return request.param, request.getfixturevalue(f"fresh_{request.param}_url")


def test_sigkill_loses_no_answered_send_and_leaves_no_partial_one(
    database, start_server, exchanges
):
    kind, url = database
    # SQLite: one waitress process, as `make serve` runs it; PostgreSQL: gunicorn workers.
    server = start_server(url, runner="pserve" if kind == "sqlite" else "gunicorn", workers=2)
    recipients = []
    for n in range(2):
        first = register(server.url, f"r{n}-{secrets.token_hex(3)}@example.com", exchanges)
        recipients += [first, first.add_device()]
    users = sorted({r.user for r in recipients})
    senders = [
        register(server.url, f"s{n}-{secrets.token_hex(3)}@example.com", exchanges)
        for n in range(SENDERS)
    ]
    attempts: list[Attempt] = []
    lock = threading.Lock()
    stored = threading.Semaphore(0)

    def storm(sender: HttpDevice, seed: int) -> None:
        rng = random.Random(seed)
        while True:
            to = rng.sample(users, k=rng.randint(1, 2))
            attempt = Attempt(
                sender,
                secrets.token_urlsafe(12),
                envelope({r.address for r in recipients if r.user in to}),
            )
            with lock:
                attempts.append(attempt)
            try:
                response = sender.send(attempt.sent, idempotency_key=attempt.key)
            except requests.RequestException:
                return  # the server is gone: this send has no answer
            assert response.status_code == 201, response.text
            attempt.message_id = response.json()["id"]
            stored.release()

    threads = [
        threading.Thread(target=storm, args=(s, n), daemon=True) for n, s in enumerate(senders)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + KILL_AFTER_SECONDS
    for _ in range(KILL_AFTER_STORED):
        if not stored.acquire(timeout=max(0.0, deadline - time.monotonic())):
            break
    server.kill()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads)
    answered = [a for a in attempts if a.message_id is not None]
    unanswered = [a for a in attempts if a.message_id is None]
    assert len(answered) >= 10, f"only {len(answered)} sends stored before the kill"

    server.start()
    # New sessions: the old ones' connections died with the server.
    recipients = [r.clone() for r in recipients]

    # Every answered send is in every recipient's queue, intact.
    queues = {r.address: {m["id"]: m for m in r.fetch_all()} for r in recipients}
    for attempt in answered:
        for address in attempt.sent.recipients:
            item = queues[address].get(attempt.message_id)
            assert item is not None, f"201'd {attempt.message_id} lost for {address}"
            assert unb64(item["encrypted_message"]) == attempt.sent.encrypted_message
            assert unb64(item["encrypted_aes_key"]) == attempt.sent.wrapped_keys[address]

    # Every stored message is whole, and belongs to exactly one attempt.
    survivors = check_whole(url, attempts)
    for attempt in answered:
        assert survivors.get(attempt.key) == attempt.message_id

    # Retried with their keys, the unanswered sends are stored exactly once.
    def retry(batch: list[Attempt]) -> None:
        for attempt in batch:
            response = attempt.sender.clone().send(attempt.sent, idempotency_key=attempt.key)
            assert response.status_code == 201, response.text
            first_id = survivors.get(attempt.key)
            assert first_id in (None, response.json()["id"]), "a stored send was stored again"
            attempt.message_id = response.json()["id"]

    run_concurrently([lambda b=unanswered[n::SENDERS]: retry(b) for n in range(SENDERS)])
    assert set(check_whole(url, attempts)) == {a.key for a in attempts}
    for r in recipients:
        expected = {a.message_id for a in attempts if r.address in a.sent.recipients}
        assert {m["id"] for m in r.fetch_all()} == expected

    assert_no_server_errors(exchanges)
    for log in server.logs:
        assert_clean_logs(server, records=server.log_records([log]))
    print(
        f"\n{kind}: {len(answered)} sends answered before SIGKILL, {len(unanswered)} not "
        f"({sum(a.key in survivors for a in unanswered)} of those had been stored)"
    )


def check_whole(database_url: str, attempts: list[Attempt]) -> dict[str, str]:
    """Check every stored message against the attempt it came from; {key: message_id}."""
    by_body = {a.sent.encrypted_message: a for a in attempts}
    found: dict[str, str] = {}
    for message in stored_messages(database_url):
        assert message.body is not None, f"{message.message_id}: a message without its body"
        attempt = by_body.get(message.body)
        assert attempt is not None, f"{message.message_id}: a body no client sent"
        assert attempt.key not in found, f"one send stored twice: {message.message_id}"
        found[attempt.key] = message.message_id
        assert message.sender == attempt.sender.address
        assert set(message.copies) == attempt.sent.recipients, (
            f"{message.message_id}: copies for {sorted(message.copies)},"
            f" sent to {sorted(attempt.sent.recipients)}"
        )
        for address, copy in message.copies.items():
            assert copy.state == 0
            assert copy.encrypted_aes_key == attempt.sent.wrapped_keys[address]
    assert not queue_counter_mismatches(database_url)
    return found
