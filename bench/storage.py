"""Bytes a database holds per table, indexes included, to price each device copy."""

from __future__ import annotations

import sqlalchemy

from .servers import Database

TABLES = ("messages", "bodies", "copies", "idempotency_keys")


def table_bytes(database: Database) -> dict[str, int]:
    """Each table's size on disk with its indexes (and TOAST on PostgreSQL)."""
    engine = database.engine()
    try:
        with engine.connect() as connection:
            if database.kind == "postgresql":
                rows = connection.execute(
                    sqlalchemy.text(
                        "SELECT relname, pg_total_relation_size(oid) FROM pg_class"
                        " WHERE relname IN :tables AND relkind = 'r'"
                    ).bindparams(sqlalchemy.bindparam("tables", expanding=True)),
                    {"tables": list(TABLES)},
                ).all()
                return {name: int(size) for name, size in rows}
            owner = dict(
                connection.exec_driver_sql(
                    "SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"
                ).all()
            )
            sizes = dict.fromkeys(TABLES, 0)
            for name, size in connection.exec_driver_sql(
                "SELECT name, pgsize FROM dbstat WHERE aggregate = 1"
            ).all():
                table = owner.get(name, name)
                if table in sizes:
                    sizes[table] += int(size)
            return sizes
    finally:
        engine.dispose()


def growth(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {table: after.get(table, 0) - before.get(table, 0) for table in TABLES}
