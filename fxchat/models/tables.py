"""The models' tables, for the statements that go through them (Core).

The hot paths (send, fetch, acknowledge, purge) select and write columns of
these tables rather than ORM entities: the ORM's machinery (entity-aware
selects, identity map, bulk operations row by row) costs more there than
the SQL does. The ORM models stay the one definition of the schema.
"""

from __future__ import annotations

from sqlalchemy import SmallInteger, literal_column

from .accounts import Device, User
from .messages import Body, Copy, CopyState, IdempotencyKey, Message

USERS = User.__table__
DEVICES = Device.__table__
MESSAGES = Message.__table__
BODIES = Body.__table__
COPIES = Copy.__table__
IDEMPOTENCY_KEYS = IdempotencyKey.__table__

# "state = 0" written into the statement, not bound: the queue's indexes are
# partial (WHERE state = 0), and a plan made for any value of a parameter
# (PostgreSQL's generic plans, SQLite's) could not use them.
PENDING = literal_column(str(CopyState.PENDING.value), SmallInteger)
