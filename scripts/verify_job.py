#!/usr/bin/env python3
"""Verify a training job from its audit bundle and a chain endpoint, standalone.

    python scripts/verify_job.py BUNDLE --chain URL [--ledger ADDRESS] [--json]

BUNDLE is a bundle directory or its .tar.gz. Exit status: 0 when every check holds, 1 when
any fails or cannot be made, 2 when the bundle cannot be read or the arguments are wrong.

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
    BundleError,
    ConsortiumError,
    Verdict,
    open_bundle,
    open_chain,
    verify_bundle,
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the audit; returns the exit status (argparse exits 2 itself on bad arguments)."""
    args = parse_args(argv)
    verdict = Verdict()
    failures = []
    try:
        with open_bundle(args.bundle) as bundle:
            chain = open_chain(args.chain)
            try:
                for result in verify_bundle(bundle, chain, ledger=args.ledger):
                    verdict.add(result)
                    if not result.ok:
                        failures.append(result)
                        if not args.json:
                            print(f"{result.status.upper()} {result.name}: {result.message}")
            finally:
                chain.close()
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
    return verdict.exit_code


if __name__ == "__main__":
    sys.exit(main())
