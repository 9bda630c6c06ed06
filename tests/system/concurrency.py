"""Running client threads against a server, and failing the test when one of them fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def run_concurrently(tasks: list[Callable[[], None]], *, timeout: float = 45) -> None:
    """Run each task in its own thread; raise the first failure, or if one outlives ``timeout``."""
    failures: list[BaseException] = []

    def guarded(task):
        try:
            task()
        except BaseException as error:  # noqa: BLE001 - reported in the main thread
            failures.append(error)

    threads = [threading.Thread(target=guarded, args=(task,), daemon=True) for task in tasks]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if failures:
        raise failures[0]
    stuck = sum(thread.is_alive() for thread in threads)
    assert not stuck, f"{stuck} client threads still running after {timeout} s"
