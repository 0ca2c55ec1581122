"""The command line as an operator uses it: exit codes, where output goes, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from monitor.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "pcaps" / "real" / "tls_curl.pcap"


def test_replay_writes_events_to_a_file_and_a_summary_to_stderr(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "events.jsonl"
    assert main(["replay", "--events", str(out), str(SAMPLE)]) == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert events and all(e["event"]["action"] == "vendor-access" for e in events)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Vendor access detected" in captured.err


def test_python_dash_m_monitor_replays_to_stdout() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "replay", "-q", "--events", "-", str(SAMPLE)],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = json.loads(SAMPLE.with_name("tls_curl.expected.json").read_text())
    assert [json.loads(line) for line in proc.stdout.splitlines()] == expected
    assert proc.stderr == ""


def test_replay_of_a_missing_file_is_a_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["replay", str(tmp_path / "nope.pcap")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_broken_blocklist_names_file_and_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'list: x\nversion: "1"\nvendors:\n  - id: v\n    name: V\n    category: face-search\n'
        "    severity: extreme\n    references: [https://v.example/]\n"
        "    indicators: [{domain: v.example}]\n"
    )
    assert main(["blocklist", "check", str(bad)]) == 1
    assert f"{bad}:7:" in capsys.readouterr().out
    assert main(["replay", "--blocklist", str(bad), str(SAMPLE)]) == 2
    assert f"{bad}:7:" in capsys.readouterr().err


def test_config_check_accepts_a_good_config_and_names_the_line_of_a_bad_one(
    tmp_path: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("interfaces: [eth1]\n")
    assert main(["config", "check", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("interfaces: [eth1]\nports:\n  tls: [443, 70000]\n")
    assert main(["config", "check", str(bad)]) == 1
    assert f"{bad}:3:" in capsys.readouterr().out
