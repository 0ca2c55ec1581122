"""``egress-monitor blocklist check``: validate lists before they reach a sensor."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from monitor.blocklist.loader import check_paths


def add_parser(sub: Any) -> None:
    p = sub.add_parser("blocklist", help="work with blocklists")
    bsub = p.add_subparsers(dest="blocklist_command", required=True)
    check = bsub.add_parser(
        "check",
        help="validate blocklist files; errors name the file and line",
        description="Validate blocklist YAML files or directories of them. Exits 1 on any error.",
    )
    check.add_argument("paths", nargs="+", metavar="PATH")
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    return check_paths(args.paths, sys.stdout)
