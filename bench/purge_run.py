"""``python -m bench.purge_run INI``: one full purge, as ``fxchat-purge INI`` runs it.

It calls :func:`fxchat.purger.run_purge` (the code of ``fxchat-purge`` and of
the server's own purger), and also times each retention step and batch, so
the report can tell where a slow purge spends its time. Prints a progress
line per batch and the report as the last line, all JSON.
"""

from __future__ import annotations

import functools
import json
import sys
import time

from pyramid.paster import bootstrap


def _timed(function, steps: dict, name: str):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        done = function(*args, **kwargs)
        elapsed = time.perf_counter() - started
        step = steps.setdefault(
            name, {"seconds": 0.0, "batches": 0, "rows": 0, "slowest_batch_s": 0.0}
        )
        step["seconds"] += elapsed
        step["batches"] += 1
        if not isinstance(done, int):  # retention.DeletedMessages
            # Rows are messages; their copies still pending are counted apart.
            step["rows"] += done.messages
            step["pending_copies"] = step.get("pending_copies", 0) + done.pending_copies
        else:
            step["rows"] += done
        step["slowest_batch_s"] = max(step["slowest_batch_s"], elapsed)
        # Progress, so that a purge stopped at the time bound still tells its rate.
        print(json.dumps({"progress": steps}), flush=True)
        return done

    return wrapper


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from fxchat.purger import run_purge
    from fxchat.services import retention

    steps: dict = {}
    for name in ("expire_copies", "delete_old_messages", "forget_idempotency_keys"):
        setattr(retention, name, _timed(getattr(retention, name), steps, name))
    with bootstrap(argv[0]) as env:
        started = time.monotonic()
        report = run_purge(env["registry"])
        seconds = time.monotonic() - started
    for step in steps.values():
        step["seconds"] = round(step["seconds"], 3)
        step["slowest_batch_s"] = round(step["slowest_batch_s"], 3)
    print(json.dumps({**report.as_json(), "seconds": round(seconds, 3), "steps": steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
