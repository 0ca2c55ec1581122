"""``egress-monitor replay --evidence-dir``: each event names a pcapng of its flow's packets;
without the option the output is what it always was."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from monitor.capture.pcapfile import read_frames
from monitor.cli.main import main
from monitor.decode.packet import Decoder

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "pcaps" / "real" / "tls_curl.pcap"


def replay(tmp_path: Path, name: str, *extra: str) -> list[dict[str, Any]]:
    out = tmp_path / f"{name}.jsonl"
    assert main(["replay", "-q", "--events", str(out), *extra, str(SAMPLE)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_replay_events_name_their_evidence_and_are_otherwise_unchanged(tmp_path: Path) -> None:
    plain = replay(tmp_path, "plain")
    evidence_dir = tmp_path / "evidence"
    docs = replay(tmp_path, "with", "--evidence-dir", str(evidence_dir))
    assert plain and len(docs) == len(plain)
    for doc, before in zip(docs, plain, strict=True):
        evidence = doc.pop("evidence")
        assert doc.pop("related") == {"hash": [evidence["sha256"]]}
        assert doc == before
        path = Path(evidence["path"])
        assert path.parent == evidence_dir
        assert path.name == doc["event"]["id"] + ".pcapng"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == evidence["sha256"]
        with path.open("rb") as fh:
            assert len(list(read_frames(fh))) == evidence["packets"] > 0
        if doc["match"]["evidence"] == "dns-query":
            assert evidence["packets"] >= 2  # the query and, held to settle, its answer
    assert sorted(p.name for p in evidence_dir.iterdir()) == sorted(
        d["event"]["id"] + ".pcapng" for d in docs
    )


@pytest.mark.parametrize("prefilter", [True, False], ids=["bpf", "no-bpf"])
def test_tls_on_an_unlisted_port_has_evidence_from_its_syn_to_its_hello(
    tmp_path: Path, prefilter: bool
) -> None:
    """Port 4443 is in no list: the engine knows the flow is TLS only once the hello has
    arrived, and then hands over the SYN it kept and every segment of the hello."""
    capture = ROOT / "pcaps" / "crafted" / "tls_nonstandard_port.pcap"
    out = tmp_path / "events.jsonl"
    args = ["replay", "-q", "--events", str(out), "--evidence-dir", str(tmp_path / "ev")]
    assert main([*args, *([] if prefilter else ["--no-prefilter"]), str(capture)]) == 0
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    unlisted = [d for d in docs if d["destination"]["port"] == 4443]
    assert {d["match"]["name"] for d in unlisted} == (
        {"facecheck.id"} if prefilter else {"facecheck.id", "search4faces.com"}
    )
    decoder = Decoder()
    for doc in unlisted:
        evidence = doc["evidence"]
        with Path(evidence["path"]).open("rb") as fh:
            packets = [decoder.decode(ts, lt, data) for ts, lt, data, _ in read_frames(fh)]
        assert all(p is not None and p.dport == 4443 for p in packets)
        hello = b"".join(p.payload for p in packets if p is not None)
        assert doc["match"]["name"].encode() in hello  # the whole hello, split or not
        first = packets[0]
        assert first is not None
        if doc["match"]["name"] == "facecheck.id":  # its SYN is in the capture
            assert first.flags & 0x12 == 0x02 and not first.payload
