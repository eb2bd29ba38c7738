#!/usr/bin/env python3
"""Verify a training job from its audit bundle and a chain endpoint, standalone.

    python scripts/verify_job.py BUNDLE --chain URL [--ledger ADDRESS] [--json] [--report FILE]

BUNDLE is a bundle directory or its .tar.gz. Exit status: 0 when every check holds, 1 when
any fails or cannot be made, 2 when the bundle cannot be read or the arguments are wrong
(including a ``--report`` file that cannot be written: refused before the audit). The report,
as ``consortium audit --report`` writes it, never changes the verdict or the exit status.

This script imports nothing but the public API of :mod:`consortium.audit`, so an auditor can
read it in one sitting and check that the verdict depends on nothing the coordinator wrote
other than the bundle it hands over.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from consortium.audit import (
    AuditBundle,
    AuditReport,
    BundleError,
    CheckResult,
    ConsortiumError,
    Verdict,
    check_report_path,
    open_bundle,
    open_chain,
    verify_bundle,
    write_report,
)

EXIT_USAGE = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="verify_job.py",
        description="Verify a training job from its audit bundle and the chain.",
    )
    parser.add_argument("bundle", type=Path, help="bundle directory or .tar.gz")
    parser.add_argument("--chain", required=True, metavar="URL", help="JSON-RPC endpoint")
    parser.add_argument("--ledger", metavar="ADDRESS", help="TrainingLedger address to trust")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.add_argument(
        "--report", type=Path, metavar="FILE", help="also write the audit as an HTML page"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the audit; returns the exit status (argparse exits 2 itself on bad arguments)."""
    args = parse_args(argv)
    try:
        if args.report is not None:
            check_report_path(args.report)  # a report that cannot be written fails first
        with open_bundle(args.bundle) as bundle:
            verdict, failures, page = audit(bundle, args)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConsortiumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        payload = {**verdict.to_json(), "failures": [r.to_json() for r in failures]}
        print(json.dumps(payload, indent=2))
    else:
        print(verdict.describe())
    if page is not None:
        try:
            write_report(args.report, page)
        except OSError as exc:
            print(f"error: cannot write the report to {args.report}: {exc}", file=sys.stderr)
    return verdict.exit_code


def audit(
    bundle: AuditBundle, args: argparse.Namespace
) -> tuple[Verdict, list[CheckResult], str | None]:
    """The verdict, the results that did not hold (printed as they come, unless --json) and,
    with --report, the report's page, rendered while the chain is still open."""
    verdict = Verdict()
    failures: list[CheckResult] = []
    report = None if args.report is None else AuditReport(bundle, ledger=args.ledger)
    chain = open_chain(args.chain)
    try:
        for result in verify_bundle(bundle, chain, ledger=args.ledger):
            verdict.add(result)
            if report is not None:
                report.add(result)
            if not result.ok:
                failures.append(result)
                if not args.json:
                    print(f"{result.status.upper()} {result.name}: {result.message}")
        if report is None:
            return verdict, failures, None
        try:
            return verdict, failures, report.render(chain)
        except Exception as exc:
            # Deliberately broad, as in `consortium audit`: whatever goes wrong in a plot or a
            # log scan, the verdict already reached must still be printed and decide the exit.
            print(f"error: the report could not be generated: {exc}", file=sys.stderr)
            return verdict, failures, None
    finally:
        chain.close()


if __name__ == "__main__":
    sys.exit(main())
