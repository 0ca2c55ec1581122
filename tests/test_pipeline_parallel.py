"""Two-process replay (DNS answers and QUIC in a forked worker): the same events and counters
as one process across file boundaries, whatever the worker's pace, and a worker that fails or
dies is an error, never a hang or a silently shorter report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.blocklist.loader import load_blocklists, shipped_blocklist_dir
from monitor.events.ecs import to_ecs
from monitor.pipeline import parallel
from monitor.pipeline import replay as replay_module
from monitor.pipeline.detection import Detection
from monitor.pipeline.engine import EngineConfig
from monitor.pipeline.replay import prefilter_for, replay_files
from tests.test_samples import CAPTURES, ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("tcpdump") is None
    or not parallel.split_possible(CAPTURES, EngineConfig(), force=True),
    reason="needs tcpdump, fork and two cores",
)


def replay(paths: list[Path], workers: int) -> tuple[list[str], dict[str, int], list[str]]:
    matcher = load_blocklists([shipped_blocklist_dir()])
    lines: list[str] = []

    def emit(d: Detection) -> None:
        lines.append(json.dumps(to_ecs(d), sort_keys=True))

    config = EngineConfig()
    engine, stats = replay_files(
        paths, matcher, emit, config, prefilter_for(config), workers=workers
    )
    counters = engine.counters()
    counters["replay_frames"] = stats.frames
    counters["replay_bytes"] = stats.bytes
    return lines, counters, stats.warnings


def test_all_samples_in_one_replay_give_the_same_events_and_counters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many files in one run: the worker's messages stay with their file, state carries over
    from file to file as in one process, and a file libpcap refuses (the pcapng whose two
    interfaces have different link types) is read whole by the main process."""
    one = replay(CAPTURES, workers=1)
    splits: list[int] = []
    real_split = replay_module.replay_split

    def counted(*args: Any) -> None:
        splits.append(1)
        real_split(*args)

    monkeypatch.setattr(replay_module, "replay_split", counted)
    two = replay(CAPTURES, workers=2)
    assert splits == [1], "the two-process path was not taken"
    assert two[0] == one[0]
    assert two[1] == one[1]
    assert two[2] == one[2]
    assert len(one[0]) > 50
    assert any("two_interfaces" in w and "reading all packets" in w for w in two[2])


def test_a_worker_reporting_after_every_packet_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With progress after each packet the main process applies the worker's detections and
    learned addresses between its own packets (not at file ends): still the same result."""
    monkeypatch.setattr(parallel, "MARK_EVERY", 1)
    one = replay(CAPTURES, workers=1)
    assert replay(CAPTURES, workers=2)[:2] == one[:2]


def _fail_in_worker(self: Any, ts: int, linktype: int, data: bytes) -> None:
    raise RuntimeError("parser exploded in the worker")


def test_an_exception_in_the_worker_is_raised_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Patched on the worker's engine class only: the main process's engine is unaffected.
    monkeypatch.setattr(parallel._WorkerEngine, "process", _fail_in_worker)
    with pytest.raises(parallel.WorkerFailed, match="parser exploded in the worker"):
        replay(CAPTURES, workers=2)
    assert _no_children()


def _die_in_worker(self: Any, ts: int, linktype: int, data: bytes) -> None:
    os._exit(3)


def test_a_worker_that_dies_is_an_error_not_a_short_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parallel._WorkerEngine, "process", _die_in_worker)
    with pytest.raises(parallel.WorkerFailed, match="stopped without finishing"):
        replay(CAPTURES, workers=2)
    assert _no_children()


def _no_children() -> bool:
    """No child of this process is left behind (the worker and its tcpdump are reaped)."""
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return pid == 0 and not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text()


def test_two_processes_only_where_they_pay(tmp_path: Path) -> None:
    small = CAPTURES[:3]
    config = EngineConfig()
    assert not parallel.split_possible(small, config)
    assert parallel.split_possible(small, config, force=True) == ((os.cpu_count() or 1) > 1)
    no_dns = EngineConfig(dns_ports=frozenset())
    assert not parallel.split_possible(small, no_dns, force=True)
    big = tmp_path / "big.pcap"
    with big.open("wb") as f:
        f.truncate(parallel.SPLIT_MIN_BYTES)
    assert parallel.split_possible([big], config) == ((os.cpu_count() or 1) > 1)


def test_cli_workers_option_gives_the_same_events_file(tmp_path: Path) -> None:
    outs = []
    for workers in ("1", "2"):
        events = tmp_path / f"events-{workers}.jsonl"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "monitor",
                "replay",
                "--quiet",
                "--workers",
                workers,
                "--events",
                str(events),
                str(ROOT / "pcaps"),
            ],
            check=True,
            cwd=tmp_path,
        )
        outs.append(events.read_text())
    assert outs[0] == outs[1]
    assert outs[0].count("\n") > 50
