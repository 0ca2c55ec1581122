"""Command-line entry point: one sub-command per job, each in its own module.

Only the module of the sub-command being run is imported: the daemon's modules (live capture,
metrics server, sinks) cost a quarter of a second to import, which a replay of a small capture
or a ``blocklist check`` should not pay. ``--help`` imports them all to list them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from monitor import __version__

# sub-command name -> module in monitor.cli that defines add_parser(sub)
COMMANDS = {
    "replay": "replay",
    "blocklist": "blocklist_cmd",
    "config": "config_cmd",
    "report": "report_cmd",
    "identities": "identities_cmd",
    "run": "run",
    "top": "top",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="egress-monitor",
        description="Detect access to commercial facial-recognition services in network traffic.",
    )
    parser.add_argument("--version", action="version", version=f"egress-monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(f"monitor.cli.{module}").add_parser(sub)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
        if arg in ("-h", "--help"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen_command(args_list))
    args = parser.parse_args(args_list)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
