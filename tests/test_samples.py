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


@pytest.mark.parametrize("capture", CAPTURES, ids=IDS)
def test_two_process_replay_gives_the_same_events_and_counters(capture: Path) -> None:
    """DNS answers and QUIC parsed in a forked worker (monitor.pipeline.parallel, the default
    for large files) change nothing: same events in the same order, attribution and
    ip-resolved included, and the same counters as one process."""
    expected = json.loads(update_expected.expected_path(capture).read_text())
    _, one = update_expected.sensor_events(capture, workers=1)
    docs, two = update_expected.sensor_events(capture, workers=2)
    assert json.loads(update_expected.render(docs)) == expected
    assert two == one


def detection_key(action: str, evidence: str | None, name: str) -> tuple[str, str | None, str]:
    """Vendor access is compared by evidence kind; blind-spot signals by action and name."""
    return (action, evidence if action == "vendor-access" else None, name)


def normal_mac(mac: str) -> str:
    """ECS writes 02-00-00-98-00-01, intents and DHCP 02:00:00:98:00:01."""
    return mac.strip().lower().replace("-", ":")


def who(doc: dict) -> dict:
    """The attribution of an event in the intent's terms: ip, mac, domain, user (None when
    the event names none), and whether it is resolver-only."""
    source = doc["source"]
    user = source.get("user") or {}
    return {
        "ip": source["ip"],
        "mac": normal_mac(source["mac"]) if "mac" in source else None,
        "domain": source.get("domain"),
        "user": user.get("name"),
        "resolver-only": bool(doc.get("attribution", {}).get("resolver_only")),
    }


def wanted_who(entry: dict) -> dict:
    """What the intent says about whose a detection is; only the keys it gives are checked
    (a ``source`` key with a null value means the event must name none)."""
    source = entry.get("source") or {}
    want = {k: source[k] for k in ("ip", "mac", "domain", "user") if k in source}
    if want.get("mac") is not None:
        want["mac"] = normal_mac(want["mac"])
    if source:
        want["resolver-only"] = entry.get("attribution") == "resolver-only"
    return want


@pytest.mark.parametrize("prefilter", [True, False], ids=["bpf", "no-bpf"])
@pytest.mark.parametrize("capture", CAPTURES, ids=IDS)
def test_events_match_the_generators_intent(capture: Path, prefilter: bool) -> None:
    intent = yaml.safe_load(update_expected.intent_path(capture).read_text())
    docs, counters = update_expected.sensor_events(capture, prefilter=prefilter)
    got = [
        detection_key(d["event"]["action"], d["match"]["evidence"], d["match"]["name"])
        for d in docs
    ]
    entries = [
        (detection_key(w.get("action", "vendor-access"), w.get("evidence"), w["name"]), w)
        for w in intent.get("detections") or []
    ]
    if prefilter:
        # Documented limits of a stateless kernel filter, listed in the intent with the reason.
        for miss in intent.get("prefilter_misses") or []:
            key = detection_key("vendor-access", miss["evidence"], miss["name"])
            entries.remove(next(e for e in entries if e[0] == key))
    entries = [e for e in entries if e[0][1] is None or e[0][1] in EVIDENCE_KINDS]
    assert got == [key for key, _ in entries]
    # Whose each detection is: the workstation and user that held the address at that moment.
    for doc, (key, entry) in zip(docs, entries, strict=True):
        want = wanted_who(entry)
        have = who(doc)
        assert {k: have[k] for k in want} == want, (key, doc["@timestamp"])
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
