def test_send_fetch_ack(alice, bob):
    message_id = alice.send_to(bob)
    [item] = bob.inbox()
    assert item["id"] == message_id
    assert bob.ack(message_id) == {"acked": [message_id], "unknown": []}
    assert bob.inbox() == []
