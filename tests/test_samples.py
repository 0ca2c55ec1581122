"""Every sample capture replays to exactly its expected events, and those events say what the
generating script intended (written from what it did, not from the sensor's output)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitor.pipeline.engine import EVIDENCE_KINDS

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "update_expected", ROOT / "pcaps" / "update_expected.py"
)
assert _spec is not None and _spec.loader is not None
update_expected = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(update_expected)

CAPTURES = update_expected.sample_captures()
IDS = [str(p.relative_to(ROOT / "pcaps")) for p in CAPTURES]


def test_there_are_real_and_crafted_samples() -> None:
    groups = {p.parent.name for p in CAPTURES}
    assert {"real", "crafted"} <= groups


@pytest.mark.parametrize("capture", CAPTURES, ids=IDS)
def test_replay_gives_exactly_the_expected_events(capture: Path) -> None:
    expected = json.loads(update_expected.expected_path(capture).read_text())
    docs, _ = update_expected.sensor_events(capture)
    assert json.loads(update_expected.render(docs)) == expected


def detection_key(action: str, evidence: str | None, name: str) -> tuple[str, str | None, str]:
    """Vendor access is compared by evidence kind; blind-spot signals by action and name."""
    return (action, evidence if action == "vendor-access" else None, name)


@pytest.mark.parametrize("prefilter", [True, False], ids=["bpf", "no-bpf"])
@pytest.mark.parametrize("capture", CAPTURES, ids=IDS)
def test_events_match_the_generators_intent(capture: Path, prefilter: bool) -> None:
    intent = yaml.safe_load(update_expected.intent_path(capture).read_text())
    docs, counters = update_expected.sensor_events(capture, prefilter=prefilter)
    got = [
        detection_key(d["event"]["action"], d["match"]["evidence"], d["match"]["name"])
        for d in docs
    ]
    want = [
        detection_key(w.get("action", "vendor-access"), w.get("evidence"), w["name"])
        for w in intent.get("detections") or []
    ]
    if prefilter:
        # Documented limits of a stateless kernel filter, listed in the intent with the reason.
        for miss in intent.get("prefilter_misses") or []:
            want.remove(detection_key("vendor-access", miss["evidence"], miss["name"]))
    assert got == [w for w in want if w[1] is None or w[1] in EVIDENCE_KINDS]
    reported = {d["match"]["name"] for d in docs}
    assert not reported & set(intent.get("must_not_match") or [])
    for name, value in (intent.get("counters") or {}).items():
        assert counters.get(name) == value, name


def tshark_ja3(capture: Path) -> set[tuple[str, str]]:
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(capture),
            "-d",
            "tcp.port==8443,tls",
            "-d",
            "tcp.port==4443,tls",
            "-d",
            "tcp.port==3128,http",
            "-o",
            "tcp.reassemble_out_of_order:TRUE",
            "-Y",
            "tls.handshake.type==1",
            "-T",
            "fields",
            "-e",
            "tls.handshake.extensions_server_name",
            "-e",
            "tls.handshake.ja3",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {tuple(line.split("\t")[:2]) for line in out.splitlines() if "\t" in line}


TLS_CAPTURES = [p for p in CAPTURES if "tls" in p.name and p.suffix == ".pcap"]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("capture", TLS_CAPTURES, ids=[p.name for p in TLS_CAPTURES])
def test_ja3_on_events_agrees_with_tshark(capture: Path) -> None:
    expected = json.loads(update_expected.expected_path(capture).read_text())
    ours = {
        (d["tls"]["client"]["server_name"], d["tls"]["client"]["ja3"])
        for d in expected
        if "tls" in d
    }
    assert ours, "a TLS sample without TLS events proves nothing here"
    assert ours <= tshark_ja3(capture)
