#!/usr/bin/env python3
"""Write (or --check) NAME.expected.json beside every sample capture under pcaps/.

The expected events are the sensor's own output, so they are only committed after a person
has compared them with NAME.intent.yaml, which the generating script wrote from what it did;
tests/test_samples.py checks both. Run from the repository root:

    python pcaps/update_expected.py           # rewrite all expected files
    python pcaps/update_expected.py --check   # exit 1 if any differs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from monitor.attribution.inventory import load_inventory
from monitor.attribution.store import IdentityStore
from monitor.blocklist.loader import load_blocklists, shipped_blocklist_dir
from monitor.capture.files import CAPTURE_SUFFIXES
from monitor.events.ecs import to_ecs
from monitor.pipeline.detection import Detection
from monitor.pipeline.engine import EngineConfig
from monitor.pipeline.identity import IdentityTap, read_lease_file
from monitor.pipeline.replay import prefilter_for, replay_files

ROOT = Path(__file__).resolve().parent


def sample_captures(root: Path = ROOT) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in CAPTURE_SUFFIXES and p.is_file())


def expected_path(capture: Path) -> Path:
    return capture.with_name(capture.stem + ".expected.json")


def intent_path(capture: Path) -> Path:
    return capture.with_name(capture.stem + ".intent.yaml")


def sensor_config(capture: Path) -> dict[str, Any]:
    """The intent's ``sensor_config``: what the sensor must be told for this capture
    (``resolvers``; ``inventory`` and ``leases`` paths relative to the capture)."""
    path = intent_path(capture)
    if not path.exists():
        return {}
    intent = yaml.safe_load(path.read_text()) or {}
    return intent.get("sensor_config") or {}


def identity_for(capture: Path) -> IdentityTap:
    """An in-memory identity store set up as the capture's intent says (as ``replay`` does
    with ``--resolver``, ``--inventory`` and ``--leases``)."""
    cfg = sensor_config(capture)
    store = IdentityStore(":memory:")
    if cfg.get("inventory"):
        store.set_inventory(load_inventory(capture.parent / cfg["inventory"]))
    tap = IdentityTap(store, cfg.get("resolvers") or ())
    for source in cfg.get("leases") or ():
        path = str(capture.parent / source["path"])
        leases = read_lease_file(source["format"], path, [])
        tap.load_leases(leases, os.stat(path).st_mtime_ns)
    return tap


def sensor_events(
    capture: Path, prefilter: bool = True, workers: int | None = None
) -> tuple[list[dict], dict[str, int]]:
    """Events and counters of one capture, replayed alone with the shipped blocklist and the
    capture's sensor_config (``workers`` as replay_files takes it)."""
    matcher = load_blocklists([shipped_blocklist_dir()])
    docs: list[dict] = []

    def emit(d: Detection) -> None:
        docs.append(to_ecs(d))

    config = EngineConfig()
    identity = identity_for(capture)
    try:
        engine, _ = replay_files(
            [capture],
            matcher,
            emit,
            config,
            prefilter_for(config) if prefilter else None,
            identity=identity,
            workers=workers,
        )
    finally:
        identity.store.close()
    return docs, engine.counters()


def render(docs: list[dict]) -> str:
    return json.dumps(docs, indent=1, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    status = 0
    for capture in sample_captures():
        docs, _ = sensor_events(capture)
        out = expected_path(capture)
        text = render(docs)
        if args.check:
            if not out.exists() or out.read_text() != text:
                print(f"DIFFERS {out.relative_to(ROOT)}")
                status = 1
        elif not out.exists() or out.read_text() != text:
            out.write_text(text)
            print(f"wrote {out.relative_to(ROOT)} ({len(docs)} events)")
    return status


if __name__ == "__main__":
    sys.exit(main())
