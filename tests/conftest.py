"""Fixtures: the app on SQLite and on PostgreSQL, devices that talk to it, a live server."""

from __future__ import annotations

import base64
import os

import pytest
import webtest

from fxchat import main
from fxchat.models import get_engine

from . import databases
from .servers import ServerProcess, postgresql_database

# Rate limits and the background purger are tested on their own; elsewhere
# they would only make tests depend on timing.
TEST_SETTINGS = {
    "fxchat.ratelimit.enabled": "false",
    "fxchat.purge_interval": "0",
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pytest_addoption(parser):
    parser.addoption(
        "--sqlite-only", action="store_true", help="run the database tests on SQLite only"
    )


@pytest.fixture(scope="session")
def postgresql_url(request):
    """A fresh PostgreSQL database for this run, dropped at its end."""
    with postgresql_database(request.config) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory):
    url = databases.sqlite_url(tmp_path_factory.mktemp("sqlite"))
    databases.migrate(url)
    return url


def _database_params(config):
    if config.getoption("--sqlite-only"):
        return ["sqlite"]
    return ["sqlite", "postgresql"]


def pytest_generate_tests(metafunc):
    if "database_url" in metafunc.fixturenames:
        metafunc.parametrize("database_kind", _database_params(metafunc.config), scope="session")


@pytest.fixture(scope="session")
def database_url(request, database_kind):
    """The URL of a migrated test database: SQLite, then PostgreSQL."""
    return request.getfixturevalue(f"{database_kind}_url")


@pytest.fixture(scope="session")
def _engines():
    engines = {}
    yield engines
    for engine in engines.values():
        engine.dispose()


def empty_database(url: str, engines: dict) -> str:
    """Empty the tables of the test database at ``url`` (its engine kept in ``engines``)."""
    engine = engines.get(url)
    if engine is None:
        engine = engines[url] = get_engine({"sqlalchemy.url": url})
    databases.empty_tables(engine)
    return url


@pytest.fixture
def clean_database(database_url, _engines):
    return empty_database(database_url, _engines)


@pytest.fixture
def make_app(clean_database):
    """Build a TestApp on the test database with extra settings."""
    apps = []

    def make(**settings) -> webtest.TestApp:
        merged = {
            "sqlalchemy.url": clean_database,
            **TEST_SETTINGS,
            **{f"fxchat.{k}": str(v) for k, v in settings.items()},
        }
        app = webtest.TestApp(main({}, **merged))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.app.registry["fxchat.purger"].stop()
        app.app.registry["db_engine"].dispose()


@pytest.fixture
def app(make_app):
    return make_app()


class Clock:
    """A settable clock for the app: ``clock.advance(seconds)``."""

    def __init__(self, start: float):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(app):
    clock = Clock(1_800_000_000.0)
    app.app.registry["fxchat.clock"] = clock
    return clock


class Device:
    """A device as the tests see it: its ids, its token, and calls made with it."""

    def __init__(self, app, user, device_id, token, public_key):
        self.app, self.user, self.device_id, self.token = app, user, device_id, token
        self.public_key = public_key

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def address(self) -> dict:
        return {"user": self.user, "device_id": self.device_id}

    def get(self, path, status=200, **kw):
        return self.app.get(path, headers=self.headers, status=status, **kw)

    def post(self, path, body, status=None, headers=None, **kw):
        return self.app.post_json(
            path, body, headers={**self.headers, **(headers or {})}, status=status, **kw
        )

    def put(self, path, body, status=200, **kw):
        return self.app.put_json(path, body, headers=self.headers, status=status, **kw)

    def delete(self, path, status=204, **kw):
        return self.app.delete(path, headers=self.headers, status=status, **kw)

    def add_device(self, name=None) -> Device:
        public_key = os.urandom(32)
        body = {"public_key": b64(public_key)} | ({"name": name} if name else {})
        created = self.post("/v1/devices", body, status=201).json
        return Device(self.app, created["user"], created["device_id"], created["token"], public_key)

    def envelope(self, *devices: Device, message: bytes | None = None, ttl=None) -> dict:
        """A well-formed send body for ``devices`` (random bytes: the server can't tell)."""
        body = {
            "suite": "fxchat-1",
            "encrypted_message": b64(message if message is not None else os.urandom(60)),
            "recipients": [
                {
                    **d.address,
                    "encrypted_aes_key": b64(os.urandom(60)),
                    "msg_sig": b64(os.urandom(32)),
                    "msg_pub_key": b64(os.urandom(32)),
                }
                for d in devices
            ],
        }
        if ttl is not None:
            body["ttl"] = ttl
        return body

    def send_to(self, *devices: Device, **kw) -> str:
        return self.post("/v1/messages", self.envelope(*devices, **kw), status=201).json["id"]

    def inbox(self, **params) -> list[dict]:
        return self.get("/v1/messages", params=params).json["messages"]

    def ack(self, *message_ids, mac_key: bytes | None = None) -> dict:
        acks = [{"id": m} | ({"mac_key": b64(mac_key)} if mac_key else {}) for m in message_ids]
        return self.post("/v1/messages/ack", {"acks": acks}, status=200).json


def register(app, user: str) -> Device:
    public_key = os.urandom(32)
    created = app.post_json(
        "/v1/accounts", {"user": user, "public_key": b64(public_key)}, status=201
    ).json
    return Device(app, created["user"], created["device_id"], created["token"], public_key)


@pytest.fixture
def alice(app):
    return register(app, "alice@example.com")


@pytest.fixture
def bob(app):
    return register(app, "bob@example.com")


@pytest.fixture
def carol(app):
    return register(app, "15551234567")


@pytest.fixture
def live_server(tmp_path):
    """A real server process (pserve + waitress) on a fresh SQLite database."""
    url = databases.sqlite_url(tmp_path)
    databases.migrate(url)
    server = ServerProcess(tmp_path, url, runner="pserve")
    server.start()
    yield server
    server.stop()
