"""Fixtures for the client tests: an in-memory relay and clients bound to it."""

import pytest

from fxchat.client import Client, RetryPolicy

from .fake_relay import URL, FakeRelay


@pytest.fixture
def relay():
    return FakeRelay()


@pytest.fixture
def sleeps():
    """The waits the client asked for, instead of waiting."""
    return []


@pytest.fixture
def register(relay, sleeps, tmp_path):
    """register(user, **client_options) -> a Client with a profile in tmp_path."""

    def register(user, *, retries=3, **options):
        return Client.register(
            URL,
            user,
            profile_path=tmp_path / f"{user}-{len(relay.devices)}.json",
            session=relay.session(),
            sleep=sleeps.append,
            retry=RetryPolicy(retries=retries),
            **options,
        )

    return register
