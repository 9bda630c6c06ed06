"""Server-chosen ids and tokens."""

import re

from fxchat.tokens import new_id


def test_server_chosen_ids_never_start_like_a_command_line_option():
    ids = [new_id() for _ in range(5000)]  # one in 64 would, drawn freely
    assert not [made for made in ids if made.startswith("-")]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", made) for made in ids)
    assert len(set(ids)) == len(ids)
