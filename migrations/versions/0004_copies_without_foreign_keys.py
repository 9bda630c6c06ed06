"""copies: no foreign keys; their only writers take both keys from rows they hold

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 12:50:00

A send to N devices inserts N copies, and PostgreSQL checked each copy's
two foreign keys with a query of its own (a row trigger, FOR KEY SHARE on
the device and on the message): 200 queries for a send to 100 devices,
a third to a half of the time PostgreSQL spent on it (docs/performance.rst,
fan-out). The keys cannot be wrong where copies are written: a send takes
the device keys from the devices it has just locked and the message key
from the message it has just inserted, in the same transaction (the
PL/pgSQL function and fxchat.services.storing); devices are never deleted
(revocation keeps the row), and the purge deletes a message's copies before
the message (fxchat.services.retention), so nothing relied on the cascade.
tests/test_integrity.py checks that every copy still has its message and
device after each flow that writes or deletes them.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On SQLite, batch mode rebuilds the table (SQLite cannot drop a
    # constraint in place).
    with op.batch_alter_table("copies") as batch_op:
        batch_op.drop_constraint("fk_copies_device_pk_devices", type_="foreignkey")
        batch_op.drop_constraint("fk_copies_message_pk_messages", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("copies") as batch_op:
        batch_op.create_foreign_key("fk_copies_device_pk_devices", "devices", ["device_pk"], ["pk"])
        batch_op.create_foreign_key(
            "fk_copies_message_pk_messages", "messages", ["message_pk"], ["pk"], ondelete="CASCADE"
        )
