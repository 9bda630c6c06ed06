"""Where the send path's time goes: py-spy on the live workers, and a statement count.

``py-spy record --subprocesses`` samples every worker of the running server
while wrk sends; each sample is given to one layer of the stack (the
innermost frame that belongs to a known layer), so the report can say what
share of the server's CPU each layer takes. Separately, in-process (the same
code behind WebTest), the SQL statements of a few sends are counted and the
request thread's CPU per send is timed.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from . import requestcpu

# (layer, pattern on "function (file:line)"), tried on each frame from the
# innermost outwards; the first frame that matches decides the sample.
LAYERS: tuple[tuple[str, re.Pattern], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        (
            "database calls (driver, round trips, lock and fsync waits)",
            r"\((psycopg|psycopg_pool|sqlite3)/"
            r"|(^|\.)(do_execute|do_executemany|do_commit|do_rollback|do_ping|do_begin\w*) \(",
        ),
        ("JSON parse and render", r"\(json/|json_body|\(pyramid/renderers\.py"),
        ("colander validation", r"\(colander/|\(fxchat/schemas/|\(cornice/validators/"),
        ("logging (access log)", r"\(logging/|\(fxchat/logs\.py"),
        ("transaction manager", r"\((transaction|pyramid_tm|zope/sqlalchemy)/"),
        ("SQLAlchemy Core and ORM (statement building, compiling, results)", r"\(sqlalchemy/"),
        (
            "Pyramid, Cornice, WebOb (routing, tweens, views)",
            r"\((pyramid|pyramid_retry|cornice|cornice_swagger|webob|venusian|zope/interface)/",
        ),
        (
            "gunicorn (HTTP parsing, sockets, worker loop)",
            r"\((gunicorn|selectors|socket|concurrent/futures|ssl)[/.]",
        ),
        ("fxchat code (services, views, middleware, security)", r"\(fxchat/"),
    )
)
# Steps of the send path whose inclusive share is worth showing.
FOCUS: tuple[tuple[str, re.Pattern], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        (
            "authentication (accounts.authenticate: devices the worker does not remember)",
            r"^authenticate \(fxchat/services/accounts\.py\)",
        ),
        (
            "request body validation (Cornice + colander)",
            r"^(body \(fxchat/views/validation\.py\)|colander_body_validator)",
        ),
        ("JSON body parsing (WebOb json_body)", r"json_body"),
        ("sending.send (the service, all its SQL)", r"^send \(fxchat/services/sending\.py\)"),
        ("  the send's transaction (storing.attempt_send)", r"^attempt_send "),
        ("  pooled connection out and back (prepared.pooled)", r"^pooled "),
        (
            "  SQLite's write lock, BEGIN IMMEDIATE, COMMIT (sqlite.write_transaction)",
            r"^write_transaction ",
        ),
        ("commit (pyramid_tm -> transaction -> zope.sqlalchemy)", r"^TransactionManager\.commit "),
        (
            "connection checkout (pool, idle ping, SQLite's BEGIN)",
            r"^(_ConnectionFairy\._checkout|Pool\.connect|Connection\._begin_impl) ",
        ),
        ("response rendering (Pyramid JSON renderer)", r"\(pyramid/renderers\.py\)"),
        ("access log line (middleware._log)", r"^RequestMiddleware\._log "),
    )
)


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def start_recording(server_pid: int, output: Path, seconds: float, rate: int = 250):
    """Start py-spy on the server and its workers; returns the process, or None."""
    binary = py_spy()
    if binary is None:
        return None
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(server_pid),
            "--subprocesses",
            "--format",
            "raw",
            "--rate",
            str(rate),
            "--duration",
            str(max(1, round(seconds))),
            "--nonblocking",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _layer(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in LAYERS:
            if pattern.search(frame):
                return name
    return "other (interpreter, standard library)"


def summarize(raw: Path, *, top: int = 15) -> dict:
    """Shares of the on-CPU samples of the request-serving threads, by layer and function."""
    layers, leaves, inclusive = Counter(), Counter(), Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # Only the threads serving requests: skip the arbiter and worker
        # heartbeat loops, which are not on the send path.
        if not any("handle_request" in frame or "handle (" in frame for frame in frames):
            continue
        n = int(count)
        total += n
        layers[_layer(frames)] += n
        leaves[_short(frames[-1])] += n
        short = [_short(frame) for frame in frames]
        for name, pattern in FOCUS:
            if any(pattern.search(frame) for frame in short):
                inclusive[name] += n
    if not total:
        return {"samples": 0}

    def shares(counter: Counter, limit: int | None = None) -> list[dict]:
        return [
            {"name": name, "share": round(n / total, 4)} for name, n in counter.most_common(limit)
        ]

    return {
        "samples": total,
        "layers": shares(layers),
        "self": shares(leaves, top),
        "steps": [{"name": name, "share": round(inclusive[name] / total, 4)} for name, _ in FOCUS],
    }


def _short(frame: str) -> str:
    # "Session.execute (sqlalchemy/orm/session.py:2555)" -> without the line number
    return re.sub(r":\d+\)$", ")", frame)


@contextlib.contextmanager
def _in_process_sender(database_url: str):
    """The app in this process (WebTest, no gunicorn) with a sender and a prepared
    send: ``(engine, send)``, where ``send(key)`` makes one send."""
    import webtest

    from fxchat import crypto, main

    from .population import Device, send_body
    from .servers import BENCH_SETTINGS

    app = webtest.TestApp(main({}, **{"sqlalchemy.url": database_url, **BENCH_SETTINGS}))
    engine = app.app.registry["db_engine"]
    try:
        prefix = secrets.token_hex(4)

        def register(user: str) -> Device:
            public_key = crypto.public_key_bytes(crypto.generate_private_key())
            created = app.post_json(
                "/v1/accounts",
                {
                    "user": f"{user}-{prefix}@bench.example",
                    "public_key": crypto.b64encode(public_key),
                },
            ).json
            return Device(created["user"], created["device_id"], created["token"], public_key)

        sender, recipient = register("in-process-a"), register("in-process-b")
        body = send_body([recipient])
        headers = {"Authorization": f"Bearer {sender.token}", "Content-Type": "application/json"}

        def send(key: str) -> None:
            app.post("/v1/messages", body, headers={**headers, "Idempotency-Key": key}, status=201)

        # A first send, unmeasured: after it the server remembers the sender,
        # as it does every device that keeps sending (fxchat.security).
        send(f"{prefix}-first")
        yield engine, send
    finally:
        engine.dispose()


def count_statements(database_url: str, sends: int = 20) -> dict:
    """SQL statements per send, counted in-process on the same code (WebTest)."""
    from sqlalchemy import event

    from fxchat.models import prepared

    with _in_process_sender(database_url) as (engine, send):
        statements: Counter = Counter()
        transactions: Counter = Counter()

        def count_sql(statement: str) -> None:
            if statement == "COMMIT":  # a send's own transaction (fxchat.models.sqlite)
                transactions["commit"] += 1
                return
            statements[" ".join(statement.split())[:90]] += 1

        def count(conn, cursor, statement, parameters, context, executemany):
            count_sql(statement)

        # Through SQLAlchemy, and straight to the driver (the hot path).
        event.listen(engine, "before_cursor_execute", count)
        prepared.observers.append(count_sql)
        event.listen(engine, "commit", lambda conn: transactions.update(["commit"]))
        for i in range(sends):
            send(f"count-{i}")
        event.remove(engine, "before_cursor_execute", count)
        prepared.observers.remove(count_sql)
        return {
            "sends": sends,
            "statements_per_send": round(sum(statements.values()) / sends, 2),
            "commits_per_send": round(transactions["commit"] / sends, 2),
            "statements": [
                {"sql": sql, "per_send": round(n / sends, 2)} for sql, n in statements.most_common()
            ],
        }


def in_process_cpu_ms(database_url: str, sends: int = 500) -> dict:
    """A send's CPU in the request thread, the access log's ``cpu_ms``, with the
    app called in a loop in this process: no gunicorn, no other process between
    two sends. Beside the same figure from the served runs, it tells how much a
    send's own code costs when nothing else competes for the caches."""
    import logging

    cpu: list[float] = []

    class Collect(logging.Handler):
        def emit(self, record):
            fields = getattr(record, "fields", {})
            if fields.get("status") == 201:
                cpu.append(fields["cpu_ms"])

    access = logging.getLogger(requestcpu.ACCESS_LOGGER)
    handler, level, propagate = Collect(), access.level, access.propagate
    with _in_process_sender(database_url) as (_engine, send):
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
        try:
            for i in range(sends):
                send(f"cpu-{i}")
        finally:
            access.removeHandler(handler)
            access.setLevel(level)
            access.propagate = propagate
    return {"sends": len(cpu), **requestcpu.summarize(cpu)}
