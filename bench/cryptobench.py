"""The ``fxchat-1`` suite's speed, beside the raw X25519 rate of the same library.

Client-side figures (the server never encrypts): ``encrypt`` of a 1 KiB
message for 1 and for 100 devices, ``decrypt``, and one X25519 key
generation and one exchange of ``cryptography``, all in one process, each
timed for a bounded number of operations and a bounded time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MESSAGE_BYTES = 1024


def _calibrate(operation: Callable[[], object], seconds: float, max_ops: int) -> int:
    """How many calls of ``operation`` take about ``seconds``."""
    operation()  # warm up
    n, elapsed = 1, 0.0
    while elapsed < 0.02 and n < max_ops:
        n *= 2
        started = time.perf_counter()
        for _ in range(n):
            operation()
        elapsed = time.perf_counter() - started
    return max(1, min(max_ops, int(n * seconds / elapsed)))


def rates(
    operations: dict[str, Callable[[], object]],
    *,
    seconds: float,
    repeats: int = 15,
    max_ops: int = 100_000,
) -> dict[str, float]:
    """Operations per second of each operation: the best of ``repeats`` rounds.

    Rounds of the different operations are interleaved, so that whatever else
    runs on the machine slows them alike and their ratios stay meaningful.
    """
    sizes = {name: _calibrate(op, seconds / repeats, max_ops) for name, op in operations.items()}
    best = dict.fromkeys(operations, float("inf"))
    for _ in range(repeats):
        for name, operation in operations.items():
            n = sizes[name]
            started = time.perf_counter()
            for _ in range(n):
                operation()
            best[name] = min(best[name], (time.perf_counter() - started) / n)
    return {name: 1.0 / seconds_per_op for name, seconds_per_op in best.items()}


def measure(seconds_per_figure: float = 2.0) -> dict:
    from fxchat import crypto

    message = os.urandom(MESSAGE_BYTES)
    devices = [crypto.generate_private_key() for _ in range(100)]
    addresses = [crypto.DeviceAddress(f"user{i}@bench.example", f"device{i}") for i in range(100)]
    one = {addresses[0]: crypto.public_key_bytes(devices[0])}
    hundred = {
        address: crypto.public_key_bytes(key)
        for address, key in zip(addresses, devices, strict=True)
    }
    envelope = crypto.encrypt(message, one)
    entry = envelope.entries[addresses[0]]
    peer = X25519PrivateKey.generate().public_key()
    key = X25519PrivateKey.generate()

    wrapped = os.urandom(32)
    raw_peer = peer.public_bytes_raw()
    measured = rates(
        {
            "x25519_generate_per_s": X25519PrivateKey.generate,
            "x25519_exchange_per_s": lambda: key.exchange(peer),
            "encrypt_1_device_per_s": lambda: crypto.encrypt(message, one),
            "encrypt_100_devices_per_s": lambda: crypto.encrypt(message, hundred),
            "decrypt_per_s": lambda: crypto.decrypt(devices[0], envelope.encrypted_message, entry),
            # The per-device steps of encrypt beyond the two X25519 operations.
            "load_public_key_per_s": lambda: crypto.load_public_key(raw_peer),
            "public_key_bytes_per_s": lambda: crypto.public_key_bytes(key),
            "aes_gcm_key_wrap_per_s": lambda: AESGCM(wrapped).encrypt(
                os.urandom(12), wrapped, crypto.AAD
            ),
            "hmac_sha256_1kib_per_s": lambda: hmac.new(wrapped, message, hashlib.sha256).digest(),
            "recipient_entry_per_s": lambda: crypto.RecipientEntry(
                entry.encrypted_aes_key, entry.msg_sig, entry.msg_pub_key
            ),
        },
        seconds=seconds_per_figure,
    )
    x25519_us = 1e6 / measured["x25519_generate_per_s"] + 1e6 / measured["x25519_exchange_per_s"]
    # The cost of one more device: the difference between 100 and 1 devices.
    per_device_us = (
        1e6 / measured["encrypt_100_devices_per_s"] - 1e6 / measured["encrypt_1_device_per_s"]
    ) / 99
    return {
        "message_bytes": MESSAGE_BYTES,
        **{name: round(value, 1) for name, value in measured.items()},
        "x25519_generate_plus_exchange_us": round(x25519_us, 2),
        "encrypt_per_device_us": round(per_device_us, 2),
        "per_device_over_x25519": round(per_device_us / x25519_us, 3),
        "components_us": {
            name.removesuffix("_per_s"): round(1e6 / value, 2)
            for name, value in measured.items()
            if not name.startswith(("encrypt", "decrypt"))
        },
    }


def measure_in_subprocess(seconds_per_figure: float = 2.0) -> dict:
    """:func:`measure` in a fresh interpreter, as a client would run it.

    The benchmark driver's own process holds a large heap by then, whose
    garbage collections would slow the allocation-heavy 100-device encrypt.
    """
    out = subprocess.run(
        [sys.executable, "-m", "bench.cryptobench", str(seconds_per_figure)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout)


if __name__ == "__main__":
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    print(json.dumps(measure(seconds), indent=2))
