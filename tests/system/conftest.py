"""Fixtures of the system tests: fresh databases, real server processes, their answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .. import databases
from ..servers import ServerProcess, postgresql_database
from .devices import Exchanges


@pytest.fixture
def fresh_postgresql_url(request) -> Iterator[str]:
    with postgresql_database(request.config) as url:
        yield url


@pytest.fixture
def fresh_sqlite_url(tmp_path: Path) -> str:
    url = databases.sqlite_url(tmp_path)
    databases.migrate(url)
    return url


@pytest.fixture
def exchanges() -> Exchanges:
    return Exchanges()


@pytest.fixture
def start_server(tmp_path: Path):
    """Start a :class:`ServerProcess`; every one started is stopped at the end of the test."""
    servers: list[ServerProcess] = []

    def start(database_url: str, **options) -> ServerProcess:
        workdir = tmp_path / f"server{len(servers) + 1}"
        workdir.mkdir()
        server = ServerProcess(workdir, database_url, **options)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
