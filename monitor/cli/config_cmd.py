"""``egress-monitor config check``: validate a sensor configuration before deploying it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from monitor.config.sensor import DEFAULT_PATH, check_config


def add_parser(sub: Any) -> None:
    p = sub.add_parser("config", help="work with the sensor configuration file")
    csub = p.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser(
        "check",
        help="validate a config file and the blocklists and approvals it names",
        description="Validate the sensor configuration; errors name the file and line. "
        "Exits 1 on any error.",
    )
    check.add_argument("path", nargs="?", default=str(DEFAULT_PATH), metavar="PATH")
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    return check_config(args.path, sys.stdout)
