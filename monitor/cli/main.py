"""Command-line entry point: one sub-command per job, each in its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from monitor import __version__
from monitor.cli import blocklist_cmd, config_cmd, identities_cmd, replay, report_cmd, run, top


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="egress-monitor",
        description="Detect access to commercial facial-recognition services in network traffic.",
    )
    parser.add_argument("--version", action="version", version=f"egress-monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    replay.add_parser(sub)
    blocklist_cmd.add_parser(sub)
    config_cmd.add_parser(sub)
    report_cmd.add_parser(sub)
    identities_cmd.add_parser(sub)
    run.add_parser(sub)
    top.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
