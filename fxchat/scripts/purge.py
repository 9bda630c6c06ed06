"""``fxchat-purge CONFIG``: run every retention step once, then exit.

For cron or a systemd timer, beside (or instead of) the server's own purger.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pyramid.paster import bootstrap, setup_logging

from ..purger import run_purge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fxchat-purge", description=__doc__.splitlines()[0])
    parser.add_argument("config_uri", help="the server's ini file, e.g. development.ini")
    args = parser.parse_args(argv)
    setup_logging(args.config_uri)
    with bootstrap(args.config_uri) as env:
        started = time.monotonic()
        try:
            report = run_purge(env["registry"])
        except Exception as error:
            print(f"fxchat-purge: purge failed: {error}", file=sys.stderr)
            return 1
        print(json.dumps({**report.as_json(), "seconds": round(time.monotonic() - started, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
