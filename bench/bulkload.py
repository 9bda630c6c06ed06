"""Bulk-loading queued copies straight into the database, as the schema expects them.

COPY on PostgreSQL, ``executemany`` in large transactions on SQLite. Every
load keeps the invariants the server relies on: each message has its
``bodies`` row (stored once), each copy is pending (``state`` 0) with its
wrapped key fields, and ``devices.queued`` counts the pending copies.
Primary keys are assigned here and the PostgreSQL sequences moved past them,
so the server must not be taking writes while a load runs.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass

import sqlalchemy

from .servers import Database

SUITE = "fxchat-1"
WRAPPED_KEY_BYTES = 60 + 32 + 32  # encrypted_aes_key, msg_sig, msg_pub_key
# PostgreSQL column types of the binary COPYs below, in their column order.
COPY_TYPES = {
    "users": ["int8", "text", "int8", "int4"],
    "devices": ["int8", "text", "int8", "bytea", "bytea", "int8", "int8", "int4"],
    "messages": ["int8", "text", "int8", "text", "text", "text", "int8", "int8"],
    "bodies": ["int8", "bytea"],
    "copies": ["int8", "int8", "int8", "int2", "int8", "bytea", "bytea", "bytea"],
}


@dataclass(frozen=True)
class Sender:
    user_pk: int
    user_id: str
    device_id: str


def _ids(count: int) -> list[str]:
    """Random 128-bit message ids, like the server's own (tokens.new_id)."""
    raw = os.urandom(16 * count)
    return [
        base64.urlsafe_b64encode(raw[i : i + 16]).rstrip(b"=").decode()
        for i in range(0, len(raw), 16)
    ]


class Loader:
    def __init__(self, database: Database):
        self.database = database
        self.engine = database.engine()
        self.postgresql = database.kind == "postgresql"

    def close(self) -> None:
        self.engine.dispose()

    # -- one transaction per load ----------------------------------------------

    def _transaction(self, tables: tuple[str, ...]):
        """A raw connection in a transaction that keeps the server's writers out.

        Primary keys are assigned from MAX(pk) inside it, so no request still
        in flight may insert meanwhile: EXCLUSIVE table locks on PostgreSQL
        (reads go on), the write lock on SQLite.
        """
        # Requests still in flight from the last load run finish first.
        time.sleep(0.5)
        for attempt in range(5):
            raw = self.engine.raw_connection()
            cursor = raw.cursor()
            try:
                if self.postgresql:
                    cursor.execute(f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE")
                else:
                    cursor.execute("BEGIN IMMEDIATE")
                return raw, cursor
            except Exception:
                # A deadlock with a late request, or a busy SQLite: try again.
                raw.close()
                if attempt == 4:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    def _finish(self, raw, cursor, tables: tuple[str, ...]) -> None:
        if self.postgresql:
            for table in tables:
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'),"
                    f" (SELECT COALESCE(MAX(pk), 1) FROM {table}))"
                )
            raw.commit()
        else:
            cursor.execute("COMMIT")
            # Move the load out of the WAL now, so that no request pays for it.
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.close()
        raw.close()

    def _next_pk(self, cursor, table: str) -> int:
        cursor.execute(f"SELECT COALESCE(MAX(pk), 0) + 1 FROM {table}")
        return cursor.fetchone()[0]

    def _many(self, cursor, sql: str, rows) -> None:
        if self.postgresql:
            raise AssertionError("PostgreSQL loads use COPY")
        cursor.executemany(sql, rows)

    def device_pks(self, device_ids: list[str]) -> list[int]:
        with self.engine.connect() as connection:
            rows = dict(
                connection.execute(
                    sqlalchemy.text(
                        "SELECT device_id, pk FROM devices WHERE device_id IN :ids"
                    ).bindparams(sqlalchemy.bindparam("ids", expanding=True)),
                    {"ids": device_ids},
                ).all()
            )
        return [rows[device_id] for device_id in device_ids]

    def sender(self, device_id: str) -> Sender:
        with self.engine.connect() as connection:
            row = connection.execute(
                sqlalchemy.text(
                    "SELECT u.pk, u.user_id, d.device_id FROM devices d JOIN users u"
                    " ON u.pk = d.user_pk WHERE d.device_id = :device_id"
                ),
                {"device_id": device_id},
            ).one()
        return Sender(*row)

    # -- users and devices ---------------------------------------------------

    def add_devices(self, count: int, *, prefix: str, now_ms: int) -> list[int]:
        """``count`` users with one device each (no usable token); their device pks."""
        tables = ("users", "devices")
        raw, cursor = self._transaction(tables)
        user_pk = self._next_pk(cursor, "users")
        device_pk = self._next_pk(cursor, "devices")
        ids = _ids(count)
        users = [(user_pk + i, f"{prefix}-{i}@bulk.example", now_ms, 0) for i in range(count)]
        devices = [
            (device_pk + i, ids[i], user_pk + i, os.urandom(32), os.urandom(32), now_ms, now_ms, 0)
            for i in range(count)
        ]
        user_columns = "users (pk, user_id, created_at, device_set_version)"
        device_columns = (
            "devices (pk, device_id, user_pk, public_key, token_hash, created_at,"
            " key_updated_at, queued)"
        )
        if self.postgresql:
            self._copy(cursor, user_columns, users)
            self._copy(cursor, device_columns, devices)
        else:
            self._many(cursor, f"INSERT INTO {user_columns} VALUES (?, ?, ?, ?)", users)
            self._many(
                cursor, f"INSERT INTO {device_columns} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", devices
            )
        self._finish(raw, cursor, tables)
        return [device_pk + i for i in range(count)]

    # -- queues --------------------------------------------------------------

    def load_queues(
        self,
        sender: Sender,
        device_pks: list[int],
        *,
        copies_per_device: int,
        fanout: int,
        body_bytes: int,
        sent_at: int,
        expires_at: int,
    ) -> dict:
        """Queue ``copies_per_device`` pending copies on each device.

        Devices are taken ``fanout`` at a time; each message goes to one such
        group, so there are ``len(device_pks) * copies_per_device / fanout``
        messages, each with one body of ``body_bytes``.
        """
        if len(device_pks) % fanout:
            raise ValueError("the device count must be a multiple of the fan-out")
        started = time.monotonic()
        groups = [device_pks[i : i + fanout] for i in range(0, len(device_pks), fanout)]
        message_count = len(groups) * copies_per_device
        body = os.urandom(body_bytes)  # incompressible, like ciphertext
        tables = ("messages", "bodies", "copies", "devices")
        raw, cursor = self._transaction(tables)
        message_pk = self._next_pk(cursor, "messages")
        copy_pk = self._next_pk(cursor, "copies")
        ids = _ids(message_count)
        messages = (
            (
                message_pk + i,
                ids[i],
                sender.user_pk,
                sender.user_id,
                sender.device_id,
                SUITE,
                sent_at,
                expires_at,
            )
            for i in range(message_count)
        )
        bodies = ((message_pk + i, body) for i in range(message_count))

        def copies():
            pk = copy_pk
            keys = memoryview(os.urandom(WRAPPED_KEY_BYTES * message_count * fanout))
            offset = 0
            # Interleaved over the groups, like real traffic: each device's
            # queue is spread over the table rather than in one run.
            for round_ in range(copies_per_device):
                for g, group in enumerate(groups):
                    message = message_pk + round_ * len(groups) + g
                    for device_pk in group:
                        k = keys[offset : offset + WRAPPED_KEY_BYTES]
                        offset += WRAPPED_KEY_BYTES
                        yield (
                            pk,
                            message,
                            device_pk,
                            0,
                            expires_at,
                            bytes(k[:60]),
                            bytes(k[60:92]),
                            bytes(k[92:]),
                        )
                        pk += 1

        message_columns = (
            "messages (pk, message_id, sender_user_pk, sender_user,"
            " sender_device_id, suite, sent_at, expires_at)"
        )
        body_columns = "bodies (message_pk, encrypted_message)"
        copy_columns = (
            "copies (pk, message_pk, device_pk, state, expires_at,"
            " encrypted_aes_key, msg_sig, msg_pub_key)"
        )
        queued = [(copies_per_device, pk) for pk in device_pks]
        if self.postgresql:
            self._copy(cursor, message_columns, messages)
            self._copy(cursor, body_columns, bodies)
            self._copy(cursor, copy_columns, copies())
            cursor.executemany("UPDATE devices SET queued = queued + %s WHERE pk = %s", queued)
        else:
            self._many(
                cursor, f"INSERT INTO {message_columns} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", messages
            )
            self._many(cursor, f"INSERT INTO {body_columns} VALUES (?, ?)", bodies)
            self._many(
                cursor, f"INSERT INTO {copy_columns} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", copies()
            )
            self._many(cursor, "UPDATE devices SET queued = queued + ? WHERE pk = ?", queued)
        self._finish(raw, cursor, ("messages", "copies"))
        loaded = time.monotonic() - started
        if self.postgresql:
            with self.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as connection:
                # What autovacuum would do within a minute of such a load.
                connection.exec_driver_sql("VACUUM ANALYZE messages, bodies, copies, devices")
                # And write it all out now, as SQLite's loads end with a
                # checkpoint: otherwise PostgreSQL flushes the load's pages
                # during whichever figure is measured next (the sends' p99
                # before a purge swung from 4 to 44 ms with it).
                checkpointed = _checkpoint(connection)
        return {
            "messages": message_count,
            "copies": message_count * fanout,
            "seconds": round(time.monotonic() - started, 2),
            "load_seconds": round(loaded, 2),
            **({"checkpointed": checkpointed} if self.postgresql else {}),
        }

    @staticmethod
    def _copy(cursor, columns: str, rows) -> None:
        table = columns.split()[0]
        with cursor.copy(f"COPY {columns} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(COPY_TYPES[table])
            for row in rows:
                copy.write_row(row)


def _checkpoint(connection) -> bool:
    """A PostgreSQL CHECKPOINT, if the bench's role may run one (superuser or pg_checkpoint)."""
    try:
        connection.exec_driver_sql("CHECKPOINT")
    except sqlalchemy.exc.ProgrammingError:  # insufficient privilege
        return False
    return True


def check_invariants(database: Database) -> dict:
    """Counts that must agree after any load: the smoke test checks them."""
    engine = database.engine()
    try:
        with engine.connect() as connection:
            mismatched = connection.exec_driver_sql(
                "SELECT COUNT(*) FROM devices d WHERE d.queued <> (SELECT COUNT(*) FROM copies c"
                " WHERE c.device_pk = d.pk AND c.state = 0)"
            ).scalar()
            bodiless = connection.exec_driver_sql(
                "SELECT COUNT(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM bodies b"
                " WHERE b.message_pk = m.pk) AND EXISTS (SELECT 1 FROM copies c"
                " WHERE c.message_pk = m.pk AND c.state = 0)"
            ).scalar()
            pending = connection.exec_driver_sql(
                "SELECT COUNT(*) FROM copies WHERE state = 0"
            ).scalar()
    finally:
        engine.dispose()
    return {
        "devices_with_wrong_queued": mismatched,
        "pending_messages_without_body": bodiless,
        "pending_copies": pending,
    }
