"""WebTest tests of the relay's HTTP API (PROTOCOL.md §1, §3), mirroring fxchat/views."""
