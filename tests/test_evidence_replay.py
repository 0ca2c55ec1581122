"""``egress-monitor replay --evidence-dir``: each event names a pcapng of its flow's packets;
without the option the output is what it always was."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from monitor.capture.pcapfile import read_frames
from monitor.cli.main import main

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
