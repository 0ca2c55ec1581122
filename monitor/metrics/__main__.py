"""``python -m monitor.metrics hash-password``: make the stored hash for metrics basic auth.

Reads the password from the terminal (or one line of stdin when piped) so it never appears in
the shell history or the process list, and prints an ``scrypt$...`` string for the config.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from monitor.metrics.auth import hash_password


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitor.metrics")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hash-password", help="print an scrypt hash of a password read from stdin")
    parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("metrics password: ")
        if getpass.getpass("again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    sys.exit(main())
