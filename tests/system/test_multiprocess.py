"""Several gunicorn workers on one PostgreSQL database, driven by concurrent clients.

What is proved (PROTOCOL.md §3.2–§3.4), with real processes and real races:
queues hold exactly what was sent minus what was acknowledged, a send is
stored for exactly the device set of one instant or refused with 409, an
Idempotency-Key sent by many clients at once stores one message, and no
answer is a 5xx (conflicts between workers are retried by the server).
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from dataclasses import dataclass

import pytest

from ..servers import ServerProcess, postgresql_database, read_log
from .checks import (
    assert_clean_logs,
    assert_no_server_errors,
    pending_copies_of_revoked_devices,
    queue_counter_mismatches,
    stored_messages,
)
from .concurrency import run_concurrently
from .devices import Envelope, HttpDevice, envelope, register, unb64

pytestmark = pytest.mark.slow

WORKERS = 3
THREADS = 4
# Device additions and revocations per churned user in the race test.
CHURN_OPERATIONS = 40


@pytest.fixture(scope="module")
def relay(request, tmp_path_factory):
    """One gunicorn server (3 workers × 4 threads) on a fresh PostgreSQL database."""
    with postgresql_database(request.config) as url:
        server = ServerProcess(
            tmp_path_factory.mktemp("relay"), url, workers=WORKERS, threads=THREADS
        )
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def relay_checked(relay, exchanges):
    """The relay; afterwards: no 5xx, no error in the log, no worker lost or replaced."""
    workers = relay.worker_pids()
    assert len(workers) == WORKERS
    offset = relay.log.stat().st_size
    yield relay
    assert_no_server_errors(exchanges)
    assert_clean_logs(relay, records=read_log(relay.log, offset))
    assert relay.worker_pids() == workers, "a worker died or was replaced during the test"


def unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}@example.com"


@dataclass(frozen=True)
class SentMessage:
    message_id: str
    sender: tuple[str, str]
    sent: Envelope


def test_queues_hold_exactly_what_was_sent_minus_what_was_acked(relay_checked, exchanges):
    relay = relay_checked
    rounds = 40
    firsts = [register(relay.url, unique(f"u{i}"), exchanges) for i in range(3)]
    devices = [d for first in firsts for d in (first, first.add_device())]
    addresses_of = {f.user: {d.address for d in devices if d.user == f.user} for f in firsts}
    lock = threading.Lock()
    sent: list[SentMessage] = []  # in each sender's send order
    acked: dict[tuple[str, str], set[str]] = {d.address: set() for d in devices}

    def drive(device: HttpDevice, seed: int) -> None:
        rng = random.Random(seed)
        my_acked = acked[device.address]
        for _ in range(rounds):
            if rng.random() < 0.5:
                users = rng.sample(
                    [u for u in addresses_of if u != device.user], k=rng.randint(1, 2)
                )
                if rng.random() < 0.3:
                    users.append(device.user)  # also to the sender's other device
                recipients = set().union(*(addresses_of[u] for u in users)) - {device.address}
                message = envelope(recipients)
                response = device.send(message)
                assert response.status_code == 201, response.text
                with lock:
                    sent.append(SentMessage(response.json()["id"], device.address, message))
            else:
                response = device.fetch(limit=rng.choice([3, 10, 50]))
                assert response.status_code == 200, response.text
                served = [m["id"] for m in response.json()["messages"]]
                assert len(served) == len(set(served)), "a page served a message twice"
                again = my_acked.intersection(served)
                assert not again, f"acknowledged copies served again: {again}"
                to_ack = rng.sample(served, k=(len(served) + 1) // 2)
                # An id acknowledged before must come back as unknown.
                repeated = rng.sample(sorted(my_acked), k=min(1, len(my_acked)))
                response = device.ack(to_ack + repeated)
                assert response.status_code == 200, response.text
                assert sorted(response.json()["acked"]) == sorted(to_ack)
                assert response.json()["unknown"] == repeated
                my_acked.update(to_ack)

    started = time.monotonic()
    run_concurrently([lambda d=d, i=i: drive(d, i) for i, d in enumerate(devices)])
    storm = time.monotonic() - started

    by_id = {m.message_id: m for m in sent}
    assert len(by_id) == len(sent), "two sends were answered with the same id"
    for device in devices:
        queue = device.fetch_all(limit=7)  # small pages: the cursor is exercised too
        ids = [m["id"] for m in queue]
        expected = {m.message_id for m in sent if device.address in m.sent.recipients}
        assert len(ids) == len(set(ids)), f"{device.address}: a message is queued twice"
        assert set(ids) == expected - acked[device.address], (
            f"{device.address}: missing {sorted(expected - acked[device.address] - set(ids))},"
            f" unexpected {sorted(set(ids) - expected)},"
            f" acked yet served {sorted(set(ids) & acked[device.address])}"
        )
        for item in queue:
            message = by_id[item["id"]]
            assert (item["sender"]["user"], item["sender"]["device_id"]) == message.sender
            assert unb64(item["encrypted_message"]) == message.sent.encrypted_message
            assert unb64(item["encrypted_aes_key"]) == message.sent.wrapped_keys[device.address]
        # Receive order: one sender's messages, sent one after another, arrive in order.
        for sender in {m.sender for m in sent}:
            order = [m.message_id for m in sent if m.sender == sender]
            in_queue = [i for i in ids if by_id[i].sender == sender]
            assert in_queue == [i for i in order if i in set(in_queue)]
    assert not queue_counter_mismatches(relay.database_url)
    print(
        f"\n{len(sent)} sends, {sum(map(len, acked.values()))} acks by {len(devices)} devices "
        f"in {storm:.1f} s; answers: {exchanges.statuses()}"
    )


@dataclass(frozen=True)
class DeviceSetChange:
    started: float
    ended: float
    devices_after: frozenset[tuple[str, str]]


class Churn:
    """One thread adding and revoking a user's devices, recording every device set."""

    def __init__(self, first: HttpDevice, operations: int, seed: int):
        self.first = first  # never revoked: it makes the changes
        self.operations = operations
        self.rng = random.Random(seed)
        self.devices = {first.address: first}
        self.revoked: dict[tuple[str, str], HttpDevice] = {}
        self.history = [DeviceSetChange(float("-inf"), float("-inf"), frozenset(self.devices))]
        self.done = threading.Event()

    def run(self) -> None:
        try:
            for _ in range(self.operations):
                others = [a for a in self.devices if a != self.first.address]
                started = time.monotonic()
                if not others or (len(others) < 3 and self.rng.random() < 0.5):
                    new = self.first.add_device()
                    self.devices[new.address] = new
                else:
                    victim = self.rng.choice(others)
                    response = self.first.revoke(victim[1])
                    assert response.status_code == 204, response.text
                    self.revoked[victim] = self.devices.pop(victim)
                self.history.append(
                    DeviceSetChange(started, time.monotonic(), frozenset(self.devices))
                )
                time.sleep(self.rng.uniform(0, 0.02))
        finally:
            self.done.set()

    def possible_sets(self, started: float, ended: float) -> list[frozenset]:
        """The device sets a request made between these instants may have seen.

        Changes that ended before it started had happened; changes that
        started after it ended had not; those in between may go either way.
        """
        low = max(k for k, c in enumerate(self.history) if c.ended < started)
        high = max(k for k, c in enumerate(self.history) if c.started <= ended)
        return [c.devices_after for c in self.history[low : high + 1]]


@dataclass(frozen=True)
class SendAttempt:
    started: float
    ended: float
    sent: Envelope
    status: int
    answer: dict


def test_send_is_stored_for_the_device_set_of_one_instant(relay_checked, exchanges):
    relay = relay_checked
    churns = [
        Churn(register(relay.url, unique(f"r{i}"), exchanges), operations=CHURN_OPERATIONS, seed=i)
        for i in range(2)
    ]
    sender_first = register(relay.url, unique("s"), exchanges)
    senders = [sender_first, sender_first.add_device(), sender_first.add_device()]
    lock = threading.Lock()
    attempts: list[SendAttempt] = []

    def send_while_churning(sender: HttpDevice) -> None:
        known = set().union(*(sender.devices_of(c.first.user) for c in churns))
        sends, deadline = 0, time.monotonic() + 40
        while sends < 10 or not all(c.done.is_set() for c in churns):
            assert time.monotonic() < deadline, "the churn did not end in time"
            message = envelope(known)
            started = time.monotonic()
            response = sender.send(message)
            ended = time.monotonic()
            sends += 1
            assert response.status_code in (201, 409), response.text
            with lock:
                attempts.append(
                    SendAttempt(started, ended, message, response.status_code, response.json())
                )
            if response.status_code == 409:
                answer = response.json()
                known -= {(d["user"], d["device_id"]) for d in answer["extra_devices"]}
                known |= {(d["user"], d["device_id"]) for d in answer["missing_devices"]}

    run_concurrently(
        [c.run for c in churns] + [lambda s=s: send_while_churning(s) for s in senders]
    )

    stored = [a for a in attempts if a.status == 201]
    refused = [a for a in attempts if a.status == 409]
    assert stored and refused, f"{len(stored)} stored, {len(refused)} refused: no race seen"
    revoked = set().union(*(c.revoked.keys() for c in churns))
    for attempt in attempts:
        for churn in churns:
            user = churn.first.user
            listed = frozenset(a for a in attempt.sent.recipients if a[0] == user)
            possible = churn.possible_sets(attempt.started, attempt.ended)
            if attempt.status == 201:
                assert listed in possible, (
                    f"201 for {sorted(listed)}, never {user}'s device set while the send ran"
                )
            else:
                missing = {(d["user"], d["device_id"]) for d in attempt.answer["missing_devices"]}
                extra = {(d["user"], d["device_id"]) for d in attempt.answer["extra_devices"]}
                seen = (listed - extra) | {a for a in missing if a[0] == user}
                assert seen in possible, f"409 names {user} devices {sorted(seen)}: never a set"
        if attempt.status == 201:
            # Copies of devices revoked since are dropped with their queues.
            receipts = senders[0].receipts(attempt.answer["id"])
            assert receipts.status_code == 200, receipts.text
            devices = {(r["user"], r["device_id"]) for r in receipts.json()["receipts"]}
            assert devices == attempt.sent.recipients - revoked, (
                f"copies kept for revoked devices {sorted(devices & revoked)}: the send stored "
                "them after the revocation had dropped the devices' queues"
            )
            assert {r["status"] for r in receipts.json()["receipts"]} <= {"pending"}
    for churn in churns:
        for address, device in churn.devices.items():
            queued = {m["id"] for m in device.fetch_all()}
            expected = {a.answer["id"] for a in stored if address in a.sent.recipients}
            assert queued == expected, f"{address}: missing {sorted(expected - queued)}"
        for gone in churn.revoked.values():
            assert gone.fetch().status_code == 401, "a revoked device's token still works"
    assert not pending_copies_of_revoked_devices(relay.database_url)
    assert not queue_counter_mismatches(relay.database_url)
    print(
        f"\n{len(stored)} sends stored, {len(refused)} refused (409) while "
        f"{sum(len(c.history) - 1 for c in churns)} device changes ran"
    )


def test_one_idempotency_key_sent_at_once_stores_one_message(relay_checked, exchanges):
    relay = relay_checked
    twins, rounds = 8, 4
    sender = register(relay.url, unique("idem"), exchanges)
    recipient = register(relay.url, unique("rcpt"), exchanges)
    recipients = [recipient, recipient.add_device()]
    clients = [sender.clone() for _ in range(twins)]
    barrier = threading.Barrier(twins)
    answers: list[list[tuple[int, str]]] = [[] for _ in range(rounds)]
    messages = [envelope({r.address for r in recipients}) for _ in range(rounds)]
    keys = [secrets.token_urlsafe(16) for _ in range(rounds)]

    def send_twin(client: HttpDevice) -> None:
        for n in range(rounds):
            barrier.wait(timeout=30)
            response = client.send(messages[n], idempotency_key=keys[n])
            answers[n].append((response.status_code, response.text))

    run_concurrently([lambda c=c: send_twin(c) for c in clients])

    ids = []
    for n in range(rounds):
        statuses = sorted(status for status, _ in answers[n])
        assert statuses == [201] * twins, answers[n]
        round_ids = {json.loads(text)["id"] for _, text in answers[n]}
        assert len(round_ids) == 1, f"one key, several messages: {round_ids}"
        ids.extend(round_ids)
    for device in recipients:
        assert sorted(m["id"] for m in device.fetch_all()) == sorted(ids)
    from_sender = [m for m in stored_messages(relay.database_url) if m.sender == sender.address]
    assert sorted(m.message_id for m in from_sender) == sorted(ids)
    assert not queue_counter_mismatches(relay.database_url)
