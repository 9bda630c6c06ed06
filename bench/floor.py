"""The floor of a send: what a send costs without fxchat's framework layers.

Two apps, each served by the same gunicorn worker model as fxchat and the
baseline, on fxchat's database, answering ``POST /v1/messages``:

* ``main``, the send's own work: find the sender by its bearer token (once
  per worker, as fxchat remembers a device that keeps sending), parse the
  body and validate it with fxchat's schema, store it with fxchat's own
  transaction (``fxchat.services.sending.send``), on SQLite wait until it is
  on disk (``fxchat.models.group_commit``, as fxchat's durability tween
  does), and answer its JSON;
* ``one_row``, the least durable write: parse the body and insert it as one
  row of a table of its own, with fxchat's engine, connections and (on
  SQLite) writers' queue and group commit, and answer.

Nothing of the request around that runs: no Cornice, middleware, tweens,
transaction manager, retry, security policy or access log; a request they
refuse gets a 4xx with a short JSON body, without fxchat's error entries.
Their rates as ratios to the bare view say how near it a send could come
were fxchat's layers free, and what a write of one row reaches. They are
measuring instruments of ``python -m bench run``, not servers: never serve
clients.
"""

from __future__ import annotations

import json
import time

import colander
from pyramid.config import Configurator
from sqlalchemy import LargeBinary, bindparam, text

from fxchat.models import get_engine, group_commit, sqlite
from fxchat.models.prepared import Prepared, pooled
from fxchat.rendering import json_response
from fxchat.schemas.messages import SendSchema
from fxchat.security import bearer_token
from fxchat.services import ServiceError, accounts, sending
from fxchat.settings import load_settings


def _engine(settings: dict):
    fxchat = load_settings(settings)
    engine = get_engine(
        settings, db_timeout=fxchat.db_timeout, sqlite_synchronous=fxchat.sqlite_synchronous
    )
    return fxchat, engine


def _serve(settings: dict, engine, view):
    config = Configurator(settings=settings)
    config.registry["db_engine"] = engine  # for whoever disposes of it (tests)
    config.add_route("send", "/v1/messages", request_method="POST")
    config.add_view(view, route_name="send")
    # The readiness probe of bench.servers.Server.
    config.add_route("lbheartbeat", "/__lbheartbeat__")
    config.add_view(lambda request: {}, route_name="lbheartbeat", renderer="json")
    return config.make_wsgi_app()


def main(global_config, **settings):
    """The send's own work (``use = call:bench.floor:main``)."""
    fxchat, engine = _engine(settings)
    schema = SendSchema().bind(settings=fxchat)
    senders: dict[str, accounts.Caller] = {}

    def sender(request) -> accounts.Caller | None:
        token = bearer_token(request) or ""
        caller = senders.get(token)
        if caller is None:
            with pooled(engine) as connection:
                caller = accounts.authenticate(connection, token)
            if caller is not None:
                senders[token] = caller
        return caller

    def send(request):
        group_commit.forget_this_thread()
        caller = sender(request)
        if caller is None:
            return json_response({"status": "error"}, 401)
        raw = request.body
        try:
            message = schema.deserialize(json.loads(raw))
        except (ValueError, colander.Invalid):
            return json_response({"status": "error"}, 400)
        try:
            sent = sending.send(
                engine,
                caller,
                message,
                now=int(time.time() * 1000),
                ttl=message["ttl"] or fxchat.default_ttl,
                max_queued=fxchat.max_queued_per_device,
                idempotency_key=request.headers.get("Idempotency-Key"),
                fingerprint=sending.request_fingerprint(raw),
                idempotency_window=fxchat.idempotency_window,
            )
        except ServiceError as refused:  # a 409 or 422, as fxchat answers it
            return json_response({"status": "error", "description": str(refused)}, refused.status)
        except sending.UnknownSender:
            senders.pop(bearer_token(request) or "", None)
            return json_response({"status": "error"}, 401)
        # SQLite: answered once the commit is synced, as fxchat answers.
        group_commit.wait_for_this_thread(timeout=fxchat.db_timeout)
        return json_response(sent.as_json(), 201)

    return _serve(settings, engine, send)


ROWS_TABLE = "bench_floor_rows"
_INSERT_ROW = Prepared(
    text(f"INSERT INTO {ROWS_TABLE} (body) VALUES (:body)").bindparams(
        bindparam("body", type_=LargeBinary)
    )
)


def create_rows_table(database_url: str) -> None:
    """The table of ``one_row``: made before its server starts, not by each worker."""
    engine = get_engine({"sqlalchemy.url": database_url})
    columns = {"sqlite": "id INTEGER PRIMARY KEY, body BLOB"}.get(
        engine.dialect.name, "id BIGSERIAL PRIMARY KEY, body BYTEA"
    )
    try:
        with engine.begin() as connection:
            connection.execute(text(f"CREATE TABLE IF NOT EXISTS {ROWS_TABLE} ({columns})"))
    finally:
        engine.dispose()


def one_row(global_config, **settings):
    """The least durable write (``use = call:bench.floor:one_row``), into
    :func:`create_rows_table`'s table."""
    fxchat, engine = _engine(settings)

    def write(request):
        group_commit.forget_this_thread()
        raw = request.body
        try:
            json.loads(raw)
        except ValueError:
            return json_response({"status": "error"}, 400)
        with pooled(engine) as connection:
            if connection.dialect.name == "sqlite":
                with sqlite.write_transaction(connection):
                    _INSERT_ROW.execute_counting(connection, {"body": raw})
            else:
                _INSERT_ROW.execute_counting(connection, {"body": raw})
        group_commit.wait_for_this_thread(timeout=fxchat.db_timeout)
        return json_response({"id": "row"}, 201)

    return _serve(settings, engine, write)
