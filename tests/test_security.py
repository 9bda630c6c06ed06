"""Authentication: the memory of recent identities, and who may take from it."""

import os

from fxchat.models import prepared
from fxchat.security import RecentIdentities
from fxchat.services.accounts import Caller


def caller(n: int) -> Caller:
    return Caller(n, f"device-{n}", 1, "user@example.com", token_hash=os.urandom(32))


def test_recent_identities_keep_the_newest_and_forget_on_demand():
    recent = RecentIdentities(size=3)
    callers = [caller(n) for n in range(5)]
    for remembered in callers:
        recent.remember(remembered)
    assert [recent.get(c.token_hash) for c in callers] == [None, None, *callers[2:]]
    recent.forget(callers[3].token_hash)
    assert recent.get(callers[3].token_hash) is None
    assert recent.get(callers[4].token_hash) == callers[4]


def statements_of(call) -> list[str]:
    seen: list[str] = []
    prepared.observers.append(seen.append)
    try:
        call()
    finally:
        prepared.observers.remove(seen.append)
    return seen


def token_lookups(statements: list[str]) -> int:
    return sum("devices.token_hash =" in sql and "users.user_id" in sql for sql in statements)


def test_a_send_takes_a_recent_identity_and_other_requests_look_the_token_up(alice, bob):
    first = statements_of(lambda: alice.send_to(bob))
    again = statements_of(lambda: alice.send_to(bob))
    fetch = statements_of(lambda: alice.inbox())
    # Once remembered, a send checks the token in its own transaction instead
    # (fxchat.services.storing); other requests look it up every time.
    assert (token_lookups(first), token_lookups(again), token_lookups(fetch)) == (1, 0, 1)


def test_a_send_refused_by_its_own_transaction_needs_no_second_lookup(alice, bob):
    alice.send_to(bob)  # remembered from now on
    bob_laptop = bob.add_device()
    # Listed without Bob's new device: the send's own transaction checks the
    # token and the device set, and answers 409; the token is not looked up again.
    refused = statements_of(lambda: alice.post("/v1/messages", alice.envelope(bob), status=409))
    assert token_lookups(refused) == 0
    alice.send_to(bob, bob_laptop)
