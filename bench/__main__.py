"""``python -m bench run|report|table``: see bench/README.rst."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from .driver import SCENARIOS
from .servers import ROOT

DEFAULT_RESULTS = ROOT / "bench" / "results" / "latest.json"


def _stop_as_on_ctrl_c(signum, frame):
    """SIGTERM (``timeout``, a CI job cancelled, ``kill``) ends a run as Ctrl-C does.

    Python's default would end the process at once: its servers would keep
    running and its PostgreSQL database would stay. As an interrupt, the
    run's ``finally`` blocks stop the servers and drop the database.
    """
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="measure everything and write the results JSON")
    run.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny run of every scenario (seconds, a few requests): for CI",
    )
    run.add_argument(
        "--databases",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql (default: both)",
    )
    run.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"results JSON (default: {DEFAULT_RESULTS.relative_to(ROOT)}, or none for --smoke)",
    )
    run.add_argument(
        "--raw",
        type=Path,
        default=None,
        help="directory for raw outputs (default: bench/results/raw)",
    )
    run.add_argument("--no-crypto", action="store_true", help="skip the crypto figures")
    run.add_argument(
        "--only",
        default="",
        help="comma-separated scenarios to run (default: all): " + ", ".join(sorted(SCENARIOS)),
    )

    report = commands.add_parser("report", help="write docs/performance.rst and its plot")
    report.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    report.add_argument("--docs", type=Path, default=ROOT / "docs")

    table = commands.add_parser("table", help="print the summary table of a results JSON")
    table.add_argument("--results", type=Path, default=DEFAULT_RESULTS)

    args = parser.parse_args(argv)
    if args.command == "run":
        from . import driver, summary

        signal.signal(signal.SIGTERM, _stop_as_on_ctrl_c)

        plan = driver.SMOKE if args.smoke else driver.FULL
        only = frozenset(args.only.split(",")) if args.only else driver.SCENARIOS
        if only - driver.SCENARIOS:
            parser.error(f"unknown scenarios: {', '.join(sorted(only - driver.SCENARIOS))}")
        output = args.output or (None if args.smoke else DEFAULT_RESULTS)
        results = driver.run(
            plan,
            databases=tuple(args.databases.split(",")),
            output=output,
            raw_root=args.raw,
            crypto=not args.no_crypto,
            only=only,
        )
        print(summary.text_table(results))
        if output is not None:
            print(f"\nresults: {output}")
        return 0
    if args.command == "report":
        from . import report as report_module

        written = report_module.write(json.loads(args.results.read_text()), args.docs)
        for path in written:
            print(f"wrote {path}")
        return 0
    if args.command == "table":
        from . import summary

        print(summary.text_table(json.loads(args.results.read_text())))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
