"""``egress-monitor run``: the live sensor on mirror interfaces.

``run --config /etc/egress-monitor/config.yaml`` is what the systemd unit and the container
start; ``run --interface eth1`` is the quick start with no file (shipped blocklists, events on
standard output, no metrics endpoint). ``--console`` shows the live view of ``top`` on the
terminal instead of the JSON stream (other configured sinks still get every event).

Exit codes: 0 after SIGTERM/SIGINT (everything pending flushed), 2 for a configuration,
blocklist or approvals error, 1 when the system refuses (no such interface, no privilege, the
metrics port is taken).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from monitor.cli import top
from monitor.config.sensor import DEFAULT_PATH, SensorConfig, SensorConfigError, load_config
from monitor.pipeline.sensor import Sensor, SensorStartError

log = logging.getLogger("monitor.sensor")

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the live sensor on mirror interfaces",
        description="Capture on mirror (SPAN/TAP) interfaces and write an event for every "
        "vendor access, alerts for unsanctioned use, and (with a metrics section) a Prometheus "
        "endpoint. SIGHUP reloads the blocklists and approvals; SIGTERM stops after flushing.",
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        help=f"sensor configuration (default {DEFAULT_PATH} unless --interface is given)",
    )
    p.add_argument(
        "--interface",
        "-i",
        action="append",
        metavar="IFACE",
        help="capture on this interface (repeatable); replaces the file's interfaces",
    )
    p.add_argument(
        "--blocklist",
        action="append",
        metavar="PATH",
        help="blocklist file or directory (repeatable); replaces the file's blocklists",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where spools, the identity database and the status file go; replaces the "
        "file's state_dir (default /var/lib/egress-monitor)",
    )
    p.add_argument(
        "--console",
        action="store_true",
        help="show a live view on the terminal instead of JSON events on stdout",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="default info",
    )
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> SensorConfig:
    if args.config is None and args.interface:
        config = SensorConfig(path="<command line>", interfaces=tuple(args.interface))
    else:
        config = load_config(args.config or DEFAULT_PATH, for_run=not args.interface)
        if args.interface:
            config = dataclasses.replace(config, interfaces=tuple(args.interface))
    if args.blocklist:
        config = dataclasses.replace(config, blocklists=tuple(args.blocklist))
    if args.state_dir:
        config = dataclasses.replace(config, state_dir=os.path.abspath(args.state_dir))
    return config


def _logging(level: str, console: Console | None) -> Callable[[], None]:
    """Send the daemon's log to stderr (journald) or above the live view; returns an undo for
    callers that run the command in-process (tests)."""
    handler: logging.Handler
    if console is not None:
        # Log lines scroll above the live view instead of tearing it.
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

    def undo() -> None:
        root.handlers[:] = saved
        root.setLevel(saved_level)

    return undo


def run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except SensorConfigError as exc:
        print(f"egress-monitor: {exc}", file=sys.stderr)
        return 2
    console = Console(stderr=True) if args.console else None
    undo_logging = _logging(args.log_level, console)
    try:
        return _run(config, console)
    finally:
        undo_logging()


def _run(config: SensorConfig, console: Console | None) -> int:
    sensor = Sensor(config, console=console is not None)
    restore_signals = sensor.install_signal_handlers()
    try:
        return _serve(sensor, console)
    finally:
        restore_signals()


def _serve(sensor: Sensor, console: Console | None) -> int:
    try:
        sensor.start()
    except SensorStartError as exc:
        log.error("%s", exc)
        sensor.close()
        return exc.exit_code
    view: threading.Thread | None = None
    if console is not None:
        stop = threading.Event()

        def show() -> None:
            top.watch(
                top.InProcess(sensor.status),
                console,
                stop=lambda: sensor.stopping or stop.is_set(),
                wait=stop.wait,
            )

        view = threading.Thread(target=show, name="console", daemon=True)
        view.start()
    try:
        return sensor.run()
    finally:
        if view is not None:
            stop.set()
            view.join(timeout=5)
