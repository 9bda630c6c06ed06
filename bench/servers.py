"""Fresh databases and real server processes on loopback, for the benchmarks.

The servers are the production process model: gunicorn with several worker
processes, each loading the application from a generated PasteDeploy ini
(``egg:fxchat`` or the bare baseline app of :mod:`bench.baseline`).
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import sqlalchemy

ROOT = Path(__file__).resolve().parent.parent
# The deployment example (docs/operations.rst): its gunicorn options are the
# process model measured here.
PRODUCTION_INI = ROOT / "production.ini"
BIN = Path(sys.executable).parent
POSTGRESQL_SERVER = os.environ.get(
    "FXCHAT_BENCH_POSTGRESQL",
    os.environ.get(
        "FXCHAT_TEST_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
)

# Settings of every benchmarked fxchat server: rate limits would turn the
# benchmark into a test of the limiter, and the background purger is
# measured on its own (the purge scenario drives it explicitly).
BENCH_SETTINGS = {
    "fxchat.ratelimit.enabled": "false",
    "fxchat.purge_interval": "0",
}

INI = """\
[app:main]
use = {use}
{settings}

[loggers]
keys = root

[handlers]
keys = file

[formatters]
keys = json

[logger_root]
level = {log_level}
handlers = file

[handler_file]
class = FileHandler
args = ({log!r}, "a")
formatter = json

[formatter_json]
class = fxchat.logs.JsonFormatter
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- databases ---------------------------------------------------------------


class DatabaseUnavailable(Exception):
    pass


@dataclasses.dataclass
class Database:
    """A fresh, migrated database: ``kind`` is ``sqlite`` or ``postgresql``."""

    kind: str
    url: str
    path: Path | None = None  # the SQLite file

    @classmethod
    def create(cls, kind: str, workdir: Path) -> Database:
        if kind == "sqlite":
            path = workdir / "fxchat.sqlite"
            for leftover in workdir.glob("fxchat.sqlite*"):
                leftover.unlink()
            database = cls(kind, f"sqlite:///{path}", path)
        elif kind == "postgresql":
            database = cls(kind, _create_postgresql_database())
        else:
            raise ValueError(f"unknown database kind {kind!r}")
        database.migrate()
        return database

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(ROOT / "migrations"))
        config.cmd_opts = type("opts", (), {"x": [f"url={self.url}"]})()
        config.attributes["configure_logging"] = False
        command.upgrade(config, "head")

    def engine(self, **kw) -> sqlalchemy.Engine:
        if self.kind == "sqlite":
            from fxchat.models import get_engine

            return get_engine({"sqlalchemy.url": self.url})
        return sqlalchemy.create_engine(self.url, **kw)

    def drop(self) -> None:
        if self.kind == "postgresql":
            _drop_postgresql_database(self.url)
        elif self.path is not None:
            for leftover in self.path.parent.glob(self.path.name + "*"):
                leftover.unlink()

    def server_version(self) -> str:
        if self.kind == "sqlite":
            import sqlite3

            return sqlite3.sqlite_version
        engine = self.engine()
        try:
            with engine.connect() as connection:
                return connection.exec_driver_sql("SHOW server_version").scalar()
        finally:
            engine.dispose()


def postgresql_available() -> str | None:
    """None if the benchmark PostgreSQL server answers, else why not."""
    admin = sqlalchemy.create_engine(POSTGRESQL_SERVER, connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        return None
    except sqlalchemy.exc.OperationalError as error:
        return f"no PostgreSQL server at {POSTGRESQL_SERVER} ({error.orig})".strip()
    finally:
        admin.dispose()


def _create_postgresql_database() -> str:
    name = f"fxchat_bench_{secrets.token_hex(6)}"
    admin = sqlalchemy.create_engine(
        POSTGRESQL_SERVER, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as error:
        raise DatabaseUnavailable(str(error.orig)) from None
    finally:
        admin.dispose()
    return postgresql_database_url(name)


def postgresql_database_url(name: str) -> str:
    """The URL of the database ``name`` on the benchmark PostgreSQL server."""
    return (
        sqlalchemy.engine.make_url(POSTGRESQL_SERVER)
        .set(database=name)
        .render_as_string(hide_password=False)
    )


def _drop_postgresql_database(url: str) -> None:
    name = sqlalchemy.engine.make_url(url).database
    admin = sqlalchemy.create_engine(POSTGRESQL_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


# -- servers -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorkerModel:
    """How the server runs: gunicorn, as production.ini's [server:main] configures it."""

    workers: int = 8
    worker_class: str = "gthread"
    threads: int = 1
    timeout: int = 30
    graceful_timeout: int = 30
    keepalive: int = 5
    max_requests: int = 10000
    max_requests_jitter: int = 1000
    logger_class: str = "fxchat.server_logging.ErrorsOnlyLogger"
    # Connection pool per worker, from production.ini's [app:main].
    pool_size: int = 2
    max_overflow: int = 2
    source: str = "defaults"

    @classmethod
    def default(cls) -> WorkerModel:
        """production.ini's model, overridable with FXCHAT_BENCH_WORKERS/_THREADS."""
        model = cls.from_ini(PRODUCTION_INI) if PRODUCTION_INI.exists() else cls()
        overrides = {}
        if os.environ.get("FXCHAT_BENCH_WORKERS"):
            overrides["workers"] = int(os.environ["FXCHAT_BENCH_WORKERS"])
        if os.environ.get("FXCHAT_BENCH_THREADS"):
            overrides["threads"] = int(os.environ["FXCHAT_BENCH_THREADS"])
        if os.environ.get("FXCHAT_BENCH_WORKER_CLASS"):
            overrides["worker_class"] = os.environ["FXCHAT_BENCH_WORKER_CLASS"]
        if overrides:
            model = dataclasses.replace(model, source=model.source + " (overridden)", **overrides)
        return model

    @classmethod
    def from_ini(cls, path: Path) -> WorkerModel:
        parser = configparser.RawConfigParser()
        parser.read(path)
        server = dict(parser.items("server:main")) if parser.has_section("server:main") else {}
        app = dict(parser.items("app:main")) if parser.has_section("app:main") else {}
        values = {}
        for field in dataclasses.fields(cls):
            if field.name in server:
                values[field.name] = type(field.default)(server[field.name])
        for name in ("pool_size", "max_overflow"):
            if f"sqlalchemy.{name}" in app:
                values[name] = int(app[f"sqlalchemy.{name}"])
        return cls(source=path.name, **values)

    def as_json(self) -> dict:
        return {"server": "gunicorn", **dataclasses.asdict(self), "worker_recycling": False}

    def describe(self) -> str:
        threads = f" x {self.threads} threads" if self.worker_class == "gthread" else ""
        return f"gunicorn, {self.workers} {self.worker_class} workers{threads} ({self.source})"

    def app_settings(self) -> dict[str, str]:
        return {
            "sqlalchemy.pool_size": str(self.pool_size),
            "sqlalchemy.max_overflow": str(self.max_overflow),
        }

    def gunicorn_options(self) -> list[str]:
        options = [
            "--workers",
            str(self.workers),
            "--worker-class",
            self.worker_class,
            "--timeout",
            str(self.timeout),
            "--graceful-timeout",
            str(self.graceful_timeout),
            "--keep-alive",
            str(self.keepalive),
            "--logger-class",
            self.logger_class,
            # No --max-requests: replacing a worker every ~10,000 requests costs
            # a re-import of the app, so often at the bare view's rate that it
            # would lower the baseline and flatter every ratio to it.
            "--no-control-socket",
        ]
        if self.worker_class == "gthread":
            options += ["--threads", str(self.threads)]
        return options


class Server:
    """gunicorn serving a generated ini on a free loopback port."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        *,
        use: str,
        settings: dict[str, str],
        model: WorkerModel,
        log_level: str = "INFO",
    ):
        self.workdir = workdir
        self.name = name
        self.model = model
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        self.err = workdir / f"{name}.err"
        self.ini = workdir / f"{name}.ini"
        lines = "\n".join(f"{key} = {value}" for key, value in settings.items())
        self.ini.write_text(
            INI.format(use=use, settings=lines, log=str(self.log), log_level=log_level)
        )
        self.process: subprocess.Popen | None = None
        self.database_url = settings.get("sqlalchemy.url")

    def group_commits(self) -> tuple[int, int] | None:
        """SQLite's group commit so far: (commits, syncs); None without one."""
        from fxchat.models import group_commit, sqlite

        url = self.database_url or ""
        if not url.startswith("sqlite:///"):
            return None
        path = url.removeprefix("sqlite:///")
        if not Path(f"{path}-commits").exists():
            return None
        log = group_commit.commit_log(path, sqlite.writers_lock_file(path))
        return log.started, log.syncs

    @classmethod
    def fxchat(
        cls,
        workdir: Path,
        database: Database,
        model: WorkerModel,
        extra: dict[str, str] | None = None,
    ) -> Server:
        settings = {
            "sqlalchemy.url": database.url,
            **model.app_settings(),
            **BENCH_SETTINGS,
            **(extra or {}),
        }
        return cls(
            workdir, f"fxchat-{database.kind}", use="egg:fxchat", settings=settings, model=model
        )

    @classmethod
    def baseline(cls, workdir: Path, model: WorkerModel) -> Server:
        return cls(workdir, "baseline", use="call:bench.baseline:main", settings={}, model=model)

    @classmethod
    def floor(
        cls, workdir: Path, database: Database, model: WorkerModel, app: str = "main"
    ) -> Server:
        """An app of bench.floor on ``database``: ``main`` (fxchat's send work alone in a
        bare Pyramid view) or ``one_row`` (the least durable write)."""
        settings = {"sqlalchemy.url": database.url, **model.app_settings(), **BENCH_SETTINGS}
        return cls(
            workdir,
            f"floor-{app}-{database.kind}",
            use=f"call:bench.floor:{app}",
            settings=settings,
            model=model,
        )

    def command(self) -> list[str]:
        return [
            str(BIN / "gunicorn"),
            "--paste",
            str(self.ini),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--chdir",
            str(ROOT),
            *self.model.gunicorn_options(),
            "--log-level",
            "warning",
            "--error-logfile",
            str(self.err),
        ]

    def start(self, timeout: float = 30) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self._errors()}")
            try:
                if requests.get(self.url + "/__lbheartbeat__", timeout=5).ok:
                    self._wait_for_workers(deadline)
                    return
            except requests.RequestException:
                pass  # not listening yet, or no worker has loaded the app yet
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {timeout} s:\n{self._errors()}")

    def _wait_for_workers(self, deadline: float) -> None:
        # Every worker imports the app itself; the first answer only proves one.
        while time.monotonic() < deadline and len(self.worker_pids()) < self.model.workers:
            time.sleep(0.1)
        time.sleep(0.5)

    def worker_pids(self) -> list[int]:
        if self.process is None:
            return []
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def _errors(self) -> str:
        try:
            return self.err.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"bench: {name} is not installed (bench/setup.sh installs it)")
    return path
