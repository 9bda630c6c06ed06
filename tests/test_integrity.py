"""Every copy keeps its message and its device, without foreign keys to say so.

``copies`` carries no foreign keys (migration 0004: on PostgreSQL they cost
a query per copy of every send); the code that writes and deletes copies
keeps the references whole instead. These tests walk every flow that does,
through the API and the purge, and look for a copy that lost either.
"""

from sqlalchemy import select

from fxchat import purger
from fxchat.models import Body, Copy, Device, Message

from .api.checks import NOTHING_STORED, count, stored_counts

DAY_MS = 86_400_000


def _missing(parent, key):
    """No row of ``parent`` has the primary key that ``key`` holds."""
    return ~select(parent.pk).where(parent.pk == key).exists()


def orphans(app) -> dict:
    """Copies whose message or device is gone, and bodies whose message is."""
    return {
        "copies without message": count(app, "copies", _missing(Message, Copy.message_pk)),
        "copies without device": count(app, "copies", _missing(Device, Copy.device_pk)),
        "bodies without message": count(app, "bodies", _missing(Message, Body.message_pk)),
    }


NONE = {"copies without message": 0, "copies without device": 0, "bodies without message": 0}


def test_no_copy_loses_its_message_or_device_through_send_ack_revoke_and_purge(
    app, clock, alice, bob, carol
):
    bobs_phone = bob.add_device()
    first = alice.send_to(bob, bobs_phone, carol)
    second = alice.send_to(bob, bobs_phone, carol, ttl=60)
    assert count(app, "copies") == 6
    assert orphans(app) == NONE

    bob.ack(first, second, mac_key=b"k" * 32)
    assert orphans(app) == NONE

    # A revoked device keeps its row: its pending copies stay its receipts.
    bob.delete(f"/v1/devices/{bobs_phone.device_id}")
    assert orphans(app) == NONE

    # Past expiry: the purge expires what is pending and drops unneeded bodies.
    clock.advance(3 * 86_400)
    report = purger.run_purge(app.app.registry, now=int(clock.now * 1000), wait=lambda s: None)
    assert report.expired_copies > 0
    assert orphans(app) == NONE

    # Past the receipt retention: messages go, and every copy with them.
    later = int(clock.now * 1000) + 30 * DAY_MS
    report = purger.run_purge(app.app.registry, now=later, wait=lambda s: None)
    assert report.deleted_messages == 2
    assert stored_counts(app) == NOTHING_STORED
    assert orphans(app) == NONE


def test_the_orphan_check_sees_a_copy_whose_message_is_gone(app, alice, bob):
    # The check above must be able to fail: delete a message behind the
    # purge's back (nothing cascades any more) and it reports the copy.
    alice.send_to(bob)
    with app.app.registry["db_engine"].begin() as connection:
        connection.execute(Body.__table__.delete())
        connection.execute(Message.__table__.delete())
    assert orphans(app)["copies without message"] == 1
