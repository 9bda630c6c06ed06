"""What the server knows of the crypto suite: its name and the wire sizes.

The server never encrypts or decrypts; it only checks that the fields have
the sizes ``fxchat-1`` gives them (PROTOCOL.md §2).
"""

SUITE = "fxchat-1"
PUBLIC_KEY_BYTES = 32
ENCRYPTED_AES_KEY_BYTES = 60
MSG_SIG_BYTES = 32
MAC_KEY_BYTES = 32
