"""QUIC Initial decryption: RFC 9001 / RFC 9369 test vectors, real aioquic and Chromium captures
(checked against Wireshark's decryption of the same packets), the benchmark generator's
independent Initial protector, CRYPTO reassembly in any order, the connection tracker, and
fuzzing."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.protocols.quic import (
    QUIC_V1,
    QUIC_V2,
    CryptoReassembler,
    PacketType,
    QuicDecryptError,
    QuicInitialTracker,
    QuicOutcome,
    QuicOutcomeKind,
    QuicParseError,
    ReassemblyStatus,
    decrypt_client_initial,
    initial_client_keys,
    iter_long_header_packets,
    parse_frames,
    read_varint,
)
from monitor.protocols.tls import parse_client_hello
from tests.quic_initials import crypto_frame, hello_message, protect, split_initials, varint

FIXTURES = Path(__file__).parent / "fixtures" / "quic"
RFC_DCID = bytes.fromhex("8394c8f03e515708")
# RFC 9001 / RFC 9369 A.2: the plaintext CRYPTO frame (the rest of the 1162 bytes is PADDING).
RFC_CRYPTO_FRAME = bytes.fromhex(
    """
    060040f1010000ed0303ebf8fa56f129 39b9584a3896472ec40bb863cfd3e868
    04fe3a47f06a2b69484c000004130113 02010000c000000010000e00000b6578
    616d706c652e636f6dff01000100000a 00080006001d00170018001000070005
    04616c706e0005000501000000000033 00260024001d00209370b2c9caa47fba
    baf4559fedba753de171fa71f50f1ce1 5d43e994ec74d748002b000302030400
    0d0010000e0403050306030203080408 050806002d00020101001c0002400100
    3900320408ffffffffffffffff050480 00ffff07048000ffff08011001048000
    75300901100f088394c8f03e51570806 048000ffff
    """
)
# RFC 9001 A.3 and RFC 9369 A.3: the server's Initial (server keys, DCID empty).
RFC9001_SERVER_INITIAL = bytes.fromhex(
    "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a5816b6394100f37a1c69797554"
    "780bb38cc5a99f5ede4cf73c3ec2493a1839b3dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b"
    "562bfb19fb84022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc42158407dd074ee"
)
RFC9369_SERVER_INITIAL = bytes.fromhex(
    "dc6b3343cf0008f067a5502a4262b5004075d92faaf16f05d8a4398c47089698baeea26b91eb761d9b89237bbf"
    "87263017915358230035f7fd3945d88965cf17f9af6e16886c61bfc703106fbaf3cb4cfa52382dd16a393e4275"
    "7507698075b2c984c707f0a0812d8cd5a6881eaf21ceda98f4bd23f6fe1a3e2c43edd9ce7ca84bed8521e2e140"
)
RFC9001_RETRY = bytes.fromhex(
    "ff000000010008f067a5502a4262b5746f6b656e04a265ba2eff4d829058fb3f0f2496ba"
)
RFC9369_RETRY = bytes.fromhex(
    "cf6b3343cf0008f067a5502a4262b5746f6b656ec8646ce8bfe33952d955543665dcc7b6"
)
CLIENT, SERVER = (b"\x0a\x00\x00\x05", 50000), (b"\xc0\x00\x02\x01", 443)


def rfc_packet(name: str) -> bytes:
    return bytes.fromhex("".join((FIXTURES / name).read_text().split()))


def feed_client(tracker: QuicInitialTracker, datagrams: list[bytes], ts: int = 0) -> list:
    outcomes = []
    for i, d in enumerate(datagrams):
        outcomes += tracker.feed(ts + i, *CLIENT, *SERVER, d)
    return outcomes


def hellos(outcomes: list[QuicOutcome]) -> list[QuicOutcome]:
    return [o for o in outcomes if o.kind is QuicOutcomeKind.HELLO]


# --- RFC 9001 / RFC 9369 Appendix A ---------------------------------------------------------------


def test_rfc9001_client_initial_keys_match_appendix_a1() -> None:
    keys = initial_client_keys(RFC_DCID, QUIC_V1)
    assert keys.key.hex() == "1f369613dd76d5467730efcbe3b1a22d"
    assert keys.iv.hex() == "fa044b2f42a3fd3b46fb255c"
    assert keys.hp.hex() == "9f50449e04a0e810283a1e9933adedd2"


def test_rfc9369_client_initial_keys_match_appendix_a1() -> None:
    keys = initial_client_keys(RFC_DCID, QUIC_V2)
    assert keys.key.hex() == "8b1a0bc121284290a29e0971b5cd045d"
    assert keys.iv.hex() == "91f73e2351d8fa91660e909f"
    assert keys.hp.hex() == "45b95e15235d6f45a6b19cbcb0294ba9"


@pytest.mark.parametrize(
    ("fixture", "version"),
    [("rfc9001_a2_client_initial.hex", QUIC_V1), ("rfc9369_a2_client_initial.hex", QUIC_V2)],
)
def test_rfc_client_initial_decrypts_to_the_example_com_hello(fixture: str, version: int) -> None:
    packet = rfc_packet(fixture)
    assert len(packet) == 1200
    [header] = iter_long_header_packets(packet)
    assert (header.packet_type, header.version, header.dcid, header.scid) == (
        PacketType.INITIAL,
        version,
        RFC_DCID,
        b"",
    )
    assert header.pn_offset == 18 and header.packet == packet
    initial = decrypt_client_initial(packet, initial_client_keys(RFC_DCID, version))
    assert (initial.version, initial.dcid, initial.scid) == (version, RFC_DCID, b"")
    assert (initial.token_length, initial.packet_number) == (0, 2)
    assert len(initial.payload) == 1162
    assert initial.payload == RFC_CRYPTO_FRAME + bytes(1162 - len(RFC_CRYPTO_FRAME))
    [(offset, data)] = parse_frames(initial.payload)
    assert offset == 0 and len(data) == 0xF1
    reassembler = CryptoReassembler()
    assert reassembler.add(offset, data) is ReassemblyStatus.DONE
    hello = parse_client_hello(reassembler.hello() or b"")
    assert hello.server_name == "example.com"
    assert hello.alpn == ("alpn",)


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_rfc_client_initial_reports_its_hello_through_the_tracker(version: int) -> None:
    name = "rfc9001" if version == QUIC_V1 else "rfc9369"
    tracker = QuicInitialTracker()
    [outcome] = feed_client(tracker, [rfc_packet(f"{name}_a2_client_initial.hex")])
    assert outcome.kind is QuicOutcomeKind.HELLO
    assert outcome.hello is not None and outcome.hello.server_name == "example.com"
    assert (outcome.version, outcome.dcid, outcome.initial_packets) == (version, RFC_DCID, 1)


@pytest.mark.parametrize(
    ("packet", "version"), [(RFC9001_SERVER_INITIAL, QUIC_V1), (RFC9369_SERVER_INITIAL, QUIC_V2)]
)
def test_server_initial_does_not_authenticate_under_client_keys(
    packet: bytes, version: int
) -> None:
    [header] = iter_long_header_packets(packet)
    assert header.packet_type is PacketType.INITIAL
    assert (header.dcid, header.scid) == (b"", bytes.fromhex("f067a5502a4262b5"))
    for dcid in (b"", RFC_DCID):
        with pytest.raises(QuicDecryptError):
            decrypt_client_initial(packet, initial_client_keys(dcid, version))


@pytest.mark.parametrize(
    ("packet", "version"), [(RFC9001_RETRY, QUIC_V1), (RFC9369_RETRY, QUIC_V2)]
)
def test_retry_is_recognised_by_version_specific_type_bits(packet: bytes, version: int) -> None:
    [header] = iter_long_header_packets(packet)
    assert (header.packet_type, header.version) == (PacketType.RETRY, version)
    assert header.scid == bytes.fromhex("f067a5502a4262b5")
    assert header.packet == packet


def test_keys_are_refused_for_versions_without_a_published_salt() -> None:
    with pytest.raises(QuicParseError):
        initial_client_keys(RFC_DCID, 0xFF00001D)


def test_decrypt_rejects_keys_of_the_other_version() -> None:
    with pytest.raises(QuicParseError):
        decrypt_client_initial(
            rfc_packet("rfc9001_a2_client_initial.hex"), initial_client_keys(RFC_DCID, QUIC_V2)
        )


# --- the benchmark generator's independent protector ----------------------------------------------


def load_generator() -> ModuleType:
    path = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "make_mixed_pcap.py"
    if not path.exists():
        pytest.skip(f"{path} not present")
    spec = importlib.util.spec_from_file_location("make_mixed_pcap", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_mixed_pcap", module)
    spec.loader.exec_module(module)
    return module


def generator_flow(gen: ModuleType, seed: int, chaos: bool) -> Iterator[tuple[str, bytes, object]]:
    """The generator's QUIC flow at packet level: client Initials carrying the hello, the
    server's Initial + Handshake, then the client's ACK Initial addressed to the server's CID."""
    rng = random.Random(seed)
    dcid, srv_cid = rng.randbytes(8), rng.randbytes(8)
    scid = rng.randbytes(8) if seed % 2 else b""
    hello, _ = gen.client_hello(
        rng, rng.randbytes, "app.clearview.ai", "chrome" if chaos else "firefox", quic_scid=scid
    )
    cprot, sprot = gen.InitialProtector(dcid), gen.InitialProtector(dcid, server=True)
    payloads = gen.crypto_payloads(rng, hello, chaos=chaos)
    for pn, frames in enumerate(payloads):
        yield "c", gen.initial_packet(cprot, dcid, scid, pn, frames, 1250), (hello, len(payloads))
    first = gen.initial_packet(sprot, scid, srv_cid, 0, b"\x02\x00\x00\x00\x00", 0)
    yield "s", first + gen.long_header(2, scid, srv_cid, 80, 0, 2)[:-2] + bytes(80), None
    ack = gen.initial_packet(cprot, srv_cid, scid, len(payloads), b"\x02\x00\x00\x00\x00", 1150)
    yield "c", ack + gen.long_header(2, srv_cid, scid, 80, 0, 2)[:-2] + bytes(80), None
    yield "c", bytes([0x40 | 5]) + srv_cid + bytes(60), None  # 1-RTT


@pytest.mark.parametrize("chaos", [True, False])
@pytest.mark.parametrize("with_server", [True, False])
def test_generator_flows_report_each_hello_once_without_decrypt_failures(
    chaos: bool, with_server: bool
) -> None:
    gen = load_generator()
    gen.selftest()  # its own RFC 9001 check, so it is a trustworthy oracle
    tracker = QuicInitialTracker()
    for seed in range(1, 25):
        expected: tuple[bytes, int] | None = None
        client_port = 40000 + seed
        outcomes = []
        for i, (direction, datagram, truth) in enumerate(generator_flow(gen, seed, chaos)):
            expected = expected or truth  # type: ignore[assignment]
            if direction == "c":
                outcomes += tracker.feed(
                    seed * 10**9 + i, "10.0.0.5", client_port, "ip", 443, datagram
                )
            elif with_server:
                outcomes += tracker.feed(
                    seed * 10**9 + i, "ip", 443, "10.0.0.5", client_port, datagram
                )
        assert expected is not None
        hello, n_initials = expected
        [outcome] = hellos(outcomes)
        assert outcome.hello is not None
        assert outcome.hello.server_name == "app.clearview.ai"
        assert outcome.hello.handshake_length == len(hello)
        assert outcome.initial_packets == n_initials
    assert tracker.stats.decrypt_failures == 0
    assert tracker.stats.malformed == 0
    assert tracker.stats.hellos == 24
    assert tracker.stats.late_initials == 24  # the ACK Initials, mapped back and skipped


def test_generator_chrome_hellos_really_arrive_shuffled() -> None:
    gen = load_generator()
    rng = random.Random(7)
    hello, _ = gen.client_hello(rng, rng.randbytes, "app.clearview.ai", "chrome", quic_scid=b"")
    payloads = gen.crypto_payloads(rng, hello, chaos=True)
    offsets = [off for p in payloads for off, _ in parse_frames(p)]
    assert len(payloads) > 1 and offsets != sorted(offsets)


# --- real captures --------------------------------------------------------------------------------

CAPTURES = sorted(p.stem for p in FIXTURES.glob("*.json") if p.stem != "version_negotiation")


def load_capture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def replay(fixture: dict, with_server: bool = True) -> tuple[QuicInitialTracker, list]:
    tracker = QuicInitialTracker()
    client = ("127.0.0.1", fixture["client_port"])
    server = ("127.0.0.1", fixture["server_port"])
    outcomes = []
    for d in fixture["datagrams"]:
        ts = d["t_us"] * 1000
        data = bytes.fromhex(d["hex"])
        if d["dir"] == "c":
            outcomes += tracker.feed(ts, *client, *server, data)
        elif with_server:
            outcomes += tracker.feed(ts, *server, *client, data)
    return tracker, outcomes


def test_real_captures_are_present() -> None:
    assert {"aioquic_v1", "aioquic_v2", "aioquic_multi_initial", "aioquic_retry"} <= set(CAPTURES)


@pytest.mark.parametrize("with_server", [True, False])
@pytest.mark.parametrize("name", CAPTURES)
def test_real_client_hello_matches_wireshark(name: str, with_server: bool) -> None:
    fixture = load_capture(name)
    truth = fixture["wireshark"]
    tracker, outcomes = replay(fixture, with_server)
    [outcome] = hellos(outcomes)
    assert outcome.hello is not None
    assert [outcome.hello.server_name] == truth["server_name"] == ["app.clearview.ai"]
    assert list(outcome.hello.alpn) == truth["alpn"]
    assert outcome.initial_packets == truth["client_initials_until_hello"]
    assert outcome.version == (QUIC_V2 if name == "aioquic_v2" else QUIC_V1)
    stats = tracker.stats
    assert (stats.decrypt_failures, stats.malformed, stats.hellos) == (0, 0, 1)
    replies = sum(d["dir"] == "s" and int(d["hex"][:2], 16) >= 0x80 for d in fixture["datagrams"])
    assert stats.server_datagrams == (replies if with_server else 0)  # long-header replies


def test_real_aioquic_hello_spans_several_initials() -> None:
    _, outcomes = replay(load_capture("aioquic_multi_initial"))
    [outcome] = hellos(outcomes)
    assert outcome.initial_packets == 3
    assert outcome.hello is not None and outcome.hello.alpn[-1] == "h3"
    assert outcome.hello.handshake_length > 2400


def test_real_retry_connection_reports_one_hello_either_way() -> None:
    fixture = load_capture("aioquic_retry")
    _, both = replay(fixture)
    tracker, client_only = replay(fixture, with_server=False)
    assert len(hellos(both)) == len(hellos(client_only)) == 1
    assert tracker.stats.repeated_hellos == 1  # the post-Retry copy, recognised by its random


def test_real_chromium_hello_is_shuffled_across_initials() -> None:
    if "chromium" not in CAPTURES:
        pytest.skip("no Chromium capture")
    fixture = load_capture("chromium")
    first = bytes.fromhex(fixture["datagrams"][0]["hex"])
    [header] = iter_long_header_packets(first)
    initial = decrypt_client_initial(first, initial_client_keys(header.dcid, header.version))
    offsets = [offset for offset, _ in parse_frames(initial.payload)]
    assert len(offsets) > 3 and offsets != sorted(offsets)
    _, outcomes = replay(fixture)
    [outcome] = hellos(outcomes)
    assert outcome.initial_packets >= 2
    assert outcome.hello is not None and outcome.hello.server_name == "app.clearview.ai"


def test_real_version_negotiation_is_reported_not_raised() -> None:
    fixture = load_capture("version_negotiation")
    probe, answer = (bytes.fromhex(d["hex"]) for d in fixture["datagrams"])
    tracker = QuicInitialTracker()
    [unknown] = tracker.feed(0, "c", fixture["client_port"], "s", 443, probe)
    assert unknown.kind is QuicOutcomeKind.UNKNOWN_VERSION and unknown.version == 0x1A2A3A4A
    [vn] = tracker.feed(1, "s", 443, "c", fixture["client_port"], answer)
    assert vn.kind is QuicOutcomeKind.VERSION_NEGOTIATION
    assert {QUIC_V1, QUIC_V2} <= set(vn.versions)
    assert vn.dcid == unknown.scid and vn.scid == unknown.dcid
    assert (tracker.stats.unknown_versions, tracker.stats.version_negotiation) == (1, 1)
    assert len(tracker) == 0


# --- long headers and coalescing ------------------------------------------------------------------


def test_coalesced_initial_and_zero_rtt_are_both_walked_and_short_header_stops() -> None:
    keys = initial_client_keys(RFC_DCID, QUIC_V1)
    initial = protect(keys, RFC_DCID, crypto_frame(0, hello_message()[:300]), size=None)
    zero_rtt = (
        bytes([0xD0]) + b"\x00\x00\x00\x01\x08" + RFC_DCID + b"\x00" + b"\x40\x14" + bytes(20)
    )
    short = bytes([0x41]) + RFC_DCID + bytes(30)
    packets = list(iter_long_header_packets(initial + zero_rtt + short))
    assert [p.packet_type for p in packets] == [PacketType.INITIAL, PacketType.ZERO_RTT]
    assert packets[0].packet == initial and packets[1].packet == zero_rtt


def test_zero_bytes_after_a_packet_end_the_datagram_quietly() -> None:
    packet = rfc_packet("rfc9001_a2_client_initial.hex")
    assert len(list(iter_long_header_packets(packet + bytes(300)))) == 1
    assert len(list(iter_long_header_packets(packet + b"\xc0garbage"))) == 1


def test_first_packet_overrunning_the_datagram_raises() -> None:
    packet = rfc_packet("rfc9001_a2_client_initial.hex")
    with pytest.raises(QuicParseError):
        list(iter_long_header_packets(packet[:1000]))


def test_short_header_datagram_yields_nothing() -> None:
    assert list(iter_long_header_packets(b"\x41" + bytes(40))) == []
    assert list(iter_long_header_packets(b"")) == []


def test_v1_connection_ids_longer_than_20_bytes_are_rejected() -> None:
    with pytest.raises(QuicParseError):
        list(iter_long_header_packets(b"\xc0\x00\x00\x00\x01\x15" + bytes(40)))


def test_unknown_version_takes_the_rest_of_the_datagram() -> None:
    datagram = b"\xc0\x1a\x2a\x3a\x4a\x1e" + bytes(30) + b"\x00" + bytes(100)
    [header] = iter_long_header_packets(datagram)
    assert header.packet_type is PacketType.UNKNOWN_VERSION and header.dcid == bytes(30)


@pytest.mark.parametrize(
    ("data", "value", "end"),
    [
        (b"\x25", 37, 1),
        (b"\x7b\xbd", 15293, 2),
        (b"\x9d\x7f\x3e\x7d", 494878333, 4),
        (b"\xc2\x19\x7c\x5e\xff\x14\xe8\x8c", 151288809941952652, 8),
        (b"\x40\x25", 37, 2),  # RFC 9000 A.1: non-minimal encodings decode to the same value
    ],
)
def test_varints_decode_as_in_rfc9000_appendix_a1(data: bytes, value: int, end: int) -> None:
    assert read_varint(data) == (value, end)


def test_truncated_varint_raises() -> None:
    with pytest.raises(QuicParseError):
        read_varint(b"\x80\x00")


# --- packet numbers and header protection ---------------------------------------------------------


@pytest.mark.parametrize("pn_len", [1, 2, 3, 4])
def test_every_packet_number_length_decrypts(pn_len: int) -> None:
    keys = initial_client_keys(RFC_DCID, QUIC_V1)
    packet = protect(keys, RFC_DCID, b"\x01", pn=5, pn_len=pn_len)
    initial = decrypt_client_initial(packet, keys)
    assert initial.packet_number == 5
    assert parse_frames(initial.payload) == []


def test_truncated_packet_number_is_recovered_from_the_largest_seen() -> None:
    keys = initial_client_keys(RFC_DCID, QUIC_V1)
    packet = protect(keys, RFC_DCID, b"\x01", pn=300, pn_len=1)  # 300 sent as 0x2c
    with pytest.raises(QuicDecryptError):
        decrypt_client_initial(packet, keys)
    assert decrypt_client_initial(packet, keys, largest_pn=290).packet_number == 300


def test_token_is_skipped_and_its_length_reported() -> None:
    keys = initial_client_keys(RFC_DCID, QUIC_V1)
    packet = protect(keys, RFC_DCID, b"\x01", token=b"retry-token-bytes")
    initial = decrypt_client_initial(packet, keys)
    assert initial.token_length == 17


def test_packet_too_short_for_the_sample_is_a_parse_error_not_a_crash() -> None:
    keys = initial_client_keys(RFC_DCID, QUIC_V1)
    packet = b"\xc0\x00\x00\x00\x01\x08" + RFC_DCID + b"\x00\x00\x05" + bytes(5)
    with pytest.raises(QuicParseError):
        decrypt_client_initial(packet, keys)


# --- frames ---------------------------------------------------------------------------------------


def test_all_frame_types_allowed_in_initial_are_skipped_around_crypto() -> None:
    ack = b"\x02" + varint(10) + varint(3) + varint(1) + varint(2) + varint(1) + varint(1)
    ack_ecn = b"\x03" + varint(5) + varint(0) + varint(0) + varint(5) + b"\x01\x02\x03"
    close = b"\x1c" + varint(0x0A) + varint(0x06) + varint(3) + b"bye"
    payload = (
        b"\x00\x00\x01"
        + crypto_frame(100, b"later")
        + ack
        + ack_ecn
        + b"\x01"
        + crypto_frame(0, b"first")
        + close
        + bytes(900)
    )
    assert parse_frames(payload) == [(100, b"later"), (0, b"first")]


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # RFC 9000 12.4: a packet with no frames is a protocol violation
        b"\x08\x00\x01x",  # STREAM: forbidden in Initial
        b"\x1d\x00\x00\x00",  # application CONNECTION_CLOSE: forbidden in Initial
        b"\x40\x06\x00\x01x",  # CRYPTO with a two-byte frame type encoding
        b"\x06\x00\x05abc",  # CRYPTO overruns the payload
        b"\x06\xff\xff\xff\xff\xff\xff\xff\xff\x01x",  # beyond the largest stream offset
        b"\x02\x05\x00\x00\x06",  # ACK range below 0
        b"\x02\x05\x00\x01\x00\x04\x00",  # second ACK range below 0
        b"\x02\x05\x00\xbf\xff\xff\xff\x00",  # 2**30 ranges promised, none present
        b"\x03\x05\x00\x00\x00\x01\x02",  # ECN counts truncated
        b"\x1c\x00\x00\x05ab",  # reason phrase overruns
    ],
)
def test_malformed_or_forbidden_frames_raise(payload: bytes) -> None:
    with pytest.raises(QuicParseError):
        parse_frames(payload)


def test_padding_only_payload_has_no_crypto() -> None:
    assert parse_frames(bytes(3000)) == []
    assert parse_frames(b"\x00" * 9 + crypto_frame(0, b"x") + bytes(9)) == [(0, b"x")]


# --- reassembly -----------------------------------------------------------------------------------


def test_reassembler_returns_hello_only_once_contiguous() -> None:
    hello = hello_message()
    r = CryptoReassembler()
    assert r.add(1000, hello[1000:]) is ReassemblyStatus.NEED_MORE
    assert r.hello() is None and r.contiguous == 0
    assert r.add(0, hello[:500]) is ReassemblyStatus.NEED_MORE
    assert r.contiguous == 500
    assert r.add(400, hello[400:1100]) is ReassemblyStatus.DONE
    assert r.hello() == hello


def test_reassembler_keeps_the_first_bytes_received_for_an_offset() -> None:
    hello = hello_message()
    r = CryptoReassembler()
    r.add(0, hello[:100])
    forged = bytearray(hello)
    forged[50:60] = b"X" * 10
    r.add(0, bytes(forged))
    assert r.hello() == hello


def test_reassembler_ignores_data_after_the_hello() -> None:
    hello = hello_message()
    r = CryptoReassembler(max_bytes=len(hello))
    r.add(0, hello[:10])  # the header: from now on the hello's end is known
    assert r.add(10, hello[10:] + b"second hello after HRR") is ReassemblyStatus.DONE
    assert r.hello() == hello and r.buffered == len(hello)


def test_reassembler_is_too_large_past_max_bytes_and_frees_memory() -> None:
    r = CryptoReassembler(max_bytes=1000)
    r.add(0, b"\x01\x00")
    assert r.add(990, bytes(20)) is ReassemblyStatus.TOO_LARGE
    assert r.buffered == 0 and r.hello() is None
    assert r.add(0, bytes(10)) is ReassemblyStatus.TOO_LARGE


def test_reassembler_is_too_large_when_the_header_announces_more() -> None:
    r = CryptoReassembler(max_bytes=1000)
    assert r.add(0, b"\x01\x00\x10\x00") is ReassemblyStatus.TOO_LARGE


def test_reassembler_rejects_a_stream_not_starting_with_client_hello() -> None:
    r = CryptoReassembler()
    r.add(2, b"\x00\x10")
    with pytest.raises(QuicParseError):
        r.add(0, b"\x02\x00")


# --- the tracker ----------------------------------------------------------------------------------


def test_tracker_reports_a_multi_initial_hello_once_and_skips_retransmissions() -> None:
    dcid = bytes.fromhex("1122334455667788")
    keys = initial_client_keys(dcid, QUIC_V1)
    packets = split_initials(hello_message(), keys, dcid, random.Random(3))
    tracker = QuicInitialTracker()
    outcomes = feed_client(tracker, packets + packets)
    [outcome] = hellos(outcomes)
    assert outcome.initial_packets == len(packets) > 1
    assert outcome.first_ts == 0
    assert tracker.stats.late_initials == len(packets)
    assert tracker.stats.decrypted == len(packets)


def test_tracker_reports_v2_hellos() -> None:
    dcid = bytes.fromhex("a1a2a3a4a5a6a7a8")
    keys = initial_client_keys(dcid, QUIC_V2)
    packets = split_initials(hello_message("pimeyes.com"), keys, dcid, random.Random(5))
    [outcome] = hellos(feed_client(QuicInitialTracker(), packets))
    assert outcome.version == QUIC_V2
    assert outcome.hello is not None and outcome.hello.server_name == "pimeyes.com"


def test_tracker_counts_garbage_initials_as_decrypt_failures_without_state() -> None:
    datagram = b"\xc0\x00\x00\x00\x01\x08" + bytes(8) + b"\x00\x00\x44\xd0" + bytes(1232)
    tracker = QuicInitialTracker()
    [outcome] = tracker.feed(0, *CLIENT, *SERVER, datagram)
    assert outcome.kind is QuicOutcomeKind.DECRYPT_FAILED
    assert tracker.stats.decrypt_failures == 1 and len(tracker) == 0


def test_tracker_labels_short_headers_and_non_quic_as_not_initial() -> None:
    tracker = QuicInitialTracker()
    for datagram in (b"\x41" + bytes(40), b"", b"\x17\xfe\xfd" + bytes(20)):
        [outcome] = tracker.feed(0, *CLIENT, *SERVER, datagram)
        assert outcome.kind is QuicOutcomeKind.NOT_INITIAL
    assert tracker.stats.not_initial == 3


def test_tracker_reports_broken_long_headers_as_malformed() -> None:
    tracker = QuicInitialTracker()
    [outcome] = tracker.feed(0, *CLIENT, *SERVER, b"\xc0\x00\x00\x00\x01\x08\x01")
    assert outcome.kind is QuicOutcomeKind.MALFORMED
    assert tracker.stats.malformed == 1


def test_tracker_drops_a_connection_whose_initial_carries_a_forbidden_frame() -> None:
    dcid = bytes(8)
    keys = initial_client_keys(dcid, QUIC_V1)
    tracker = QuicInitialTracker()
    first = protect(keys, dcid, crypto_frame(0, hello_message()[:200]), pn=0)
    bad = protect(keys, dcid, b"\x08\x00\x01x", pn=1)
    assert feed_client(tracker, [first]) == []
    [outcome] = feed_client(tracker, [bad])
    assert outcome.kind is QuicOutcomeKind.MALFORMED
    assert outcome.dcid == dcid and outcome.initial_packets == 2
    assert feed_client(tracker, [first]) == []  # dropped: later Initials are skipped
    assert tracker.stats.late_initials == 1


def test_tracker_reports_an_oversized_hello_as_too_large() -> None:
    dcid = bytes(8)
    keys = initial_client_keys(dcid, QUIC_V1)
    tracker = QuicInitialTracker(max_hello_bytes=1000)
    [outcome] = feed_client(tracker, [protect(keys, dcid, crypto_frame(0, hello_message()[:300]))])
    assert outcome.kind is QuicOutcomeKind.TOO_LARGE
    assert tracker.stats.too_large == 1


def test_tracker_reports_a_broken_client_hello_as_malformed() -> None:
    dcid = bytes(8)
    keys = initial_client_keys(dcid, QUIC_V1)
    bad_hello = b"\x01\x00\x00\x05" + b"\x03\x03\x00\x00\x00"
    [outcome] = feed_client(QuicInitialTracker(), [protect(keys, dcid, crypto_frame(0, bad_hello))])
    assert outcome.kind is QuicOutcomeKind.MALFORMED


def test_tracker_evicts_least_recently_used_connections() -> None:
    tracker = QuicInitialTracker(max_connections=2)
    for i in range(3):
        dcid = bytes([i]) * 8
        keys = initial_client_keys(dcid, QUIC_V1)
        feed_client(tracker, [protect(keys, dcid, crypto_frame(0, hello_message()[:100]))], ts=i)
    assert len(tracker) == 2
    assert tracker.stats.evicted_lru == 1 and tracker.stats.connections == 2


def test_tracker_forgets_idle_connections() -> None:
    tracker = QuicInitialTracker(idle_timeout_ns=10**9)
    dcid = bytes(8)
    keys = initial_client_keys(dcid, QUIC_V1)
    feed_client(tracker, [protect(keys, dcid, crypto_frame(0, hello_message()[:100]))], ts=0)
    assert len(tracker) == 1
    tracker.feed(2 * 10**9, *CLIENT, *SERVER, b"\x41" + bytes(30))
    assert len(tracker) == 0 and tracker.stats.evicted_idle == 1


def test_tracker_keeps_connections_of_different_clients_apart() -> None:
    dcid = bytes(8)
    keys = initial_client_keys(dcid, QUIC_V1)
    hello = hello_message()
    tracker = QuicInitialTracker()
    half = len(hello) // 2
    a1 = protect(keys, dcid, crypto_frame(0, hello[:half]), pn=0)
    a2 = protect(keys, dcid, crypto_frame(half, hello[half:]), pn=1)
    out = tracker.feed(0, "10.0.0.1", 1111, *SERVER, a1)
    out += tracker.feed(1, "10.0.0.2", 2222, *SERVER, a1)
    out += tracker.feed(2, "10.0.0.1", 1111, *SERVER, a2)
    assert len(hellos(out)) == 1 and len(tracker) == 2


def retry_packet(version: int, dcid: bytes, scid: bytes, token: bytes) -> bytes:
    type_bits = 3 if version == QUIC_V1 else 0
    head = bytes([0xC0 | type_bits << 4]) + version.to_bytes(4, "big")
    return head + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid + token + bytes(16)


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
@pytest.mark.parametrize("new_hello", [False, True])
def test_retry_in_the_middle_of_a_hello_restarts_its_reassembly(
    version: int, new_hello: bool
) -> None:
    """The server's Retry after the first of several Initials: the client starts over under
    keys from the Retry's CID, with the same hello (Chromium) or a fresh one (aioquic)."""
    odcid, scid, retry_cid = b"\x01" * 8, b"\x02" * 8, b"\x03" * 8
    rng = random.Random(11)
    first_hello = hello_message(sni="facecheck.id")
    before = split_initials(first_hello, initial_client_keys(odcid, version), odcid, rng)
    after_hello = hello_message(sni="facecheck.id", sni_last=False) if new_hello else first_hello
    retry_keys = initial_client_keys(retry_cid, version)
    after = [
        protect(retry_keys, retry_cid, crypto_frame(0, after_hello[:900]), pn=5, token=b"tok"),
        protect(retry_keys, retry_cid, crypto_frame(900, after_hello[900:]), pn=6, token=b"tok"),
    ]
    assert [h.packet_type for h in iter_long_header_packets(before[0])] == [PacketType.INITIAL]
    tracker = QuicInitialTracker()
    outcomes = tracker.feed(0, *CLIENT, *SERVER, before[0])
    outcomes += tracker.feed(1, *SERVER, *CLIENT, retry_packet(version, scid, retry_cid, b"tok"))
    for i, datagram in enumerate(after, 2):
        outcomes += tracker.feed(i, *CLIENT, *SERVER, datagram)
    [outcome] = hellos(outcomes)
    assert outcome.hello == parse_client_hello(after_hello)
    assert outcome.dcid == odcid and outcome.initial_packets == 3
    assert tracker.stats.decrypt_failures == 0 and len(tracker) == 1


# --- property tests -------------------------------------------------------------------------------

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RFC_V1 = rfc_packet("rfc9001_a2_client_initial.hex")
RFC_KEYS = initial_client_keys(RFC_DCID, QUIC_V1)


@PROPERTY
@given(st.binary(max_size=1500))
def test_random_bytes_raise_only_quic_parse_errors(data: bytes) -> None:
    for call in (
        lambda: list(iter_long_header_packets(data)),
        lambda: decrypt_client_initial(data, RFC_KEYS),
        lambda: parse_frames(data),
        lambda: read_varint(data),
    ):
        with contextlib.suppress(QuicParseError):
            call()


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        choice = draw(st.integers(0, 2))
        pos = draw(st.integers(0, len(data) - 1)) if data else 0
        if choice == 0 and data:
            data[pos] = draw(st.integers(0, 255))
        elif choice == 1:
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@PROPERTY
@given(mutated(RFC_V1))
def test_mutated_initials_raise_only_quic_parse_errors(packet: bytes) -> None:
    try:
        for header in iter_long_header_packets(packet):
            if header.packet_type is PacketType.INITIAL:
                decrypt_client_initial(header.packet, RFC_KEYS)
    except QuicParseError:
        pass
    tracker = QuicInitialTracker()
    for outcome in tracker.feed(0, *CLIENT, *SERVER, packet):
        assert isinstance(outcome, QuicOutcome)


PLAINTEXT = RFC_CRYPTO_FRAME + bytes(900)


@PROPERTY
@given(mutated(PLAINTEXT))
def test_mutated_plaintext_under_valid_protection_never_escapes(payload: bytes) -> None:
    """Authentic packets with broken frames or hellos reach the frame and TLS parsers."""
    with contextlib.suppress(QuicParseError):
        parse_frames(payload)
    tracker = QuicInitialTracker()
    packet = protect(RFC_KEYS, RFC_DCID, payload, pn=0, size=None)
    outcomes = tracker.feed(0, *CLIENT, *SERVER, packet)
    assert all(o.kind is not QuicOutcomeKind.DECRYPT_FAILED for o in outcomes)


@PROPERTY
@given(st.lists(st.binary(min_size=1, max_size=1400), max_size=8), st.randoms())
def test_tracker_feed_never_raises(datagrams: list[bytes], rnd: random.Random) -> None:
    tracker = QuicInitialTracker(max_connections=3)
    version_prefixes = (b"\xc0\x00\x00\x00\x01", b"\xd0\x6b\x33\x43\xcf", b"\x80\x00\x00\x00\x00")
    for i, data in enumerate(datagrams):
        if rnd.random() < 0.5:
            data = rnd.choice(version_prefixes) + data
        src, dst = (CLIENT, SERVER) if rnd.random() < 0.7 else (SERVER, CLIENT)
        for outcome in tracker.feed(i, *src, *dst, data):
            assert isinstance(outcome, QuicOutcome)
    assert len(tracker) <= 3


HELLO = hello_message()


@PROPERTY
@given(st.data())
def test_crypto_pieces_in_any_order_split_and_overlap_rebuild_the_same_hello(
    data: st.DataObject,
) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(1, len(HELLO) - 1), max_size=30)))
    bounds = [0, *cuts, len(HELLO)]
    pieces = []
    for a, b in itertools.pairwise(bounds):
        grow = data.draw(st.integers(0, 50))  # overlap into the neighbours
        pieces.append((max(0, a - grow), min(len(HELLO), b + grow)))
    pieces += data.draw(st.lists(st.sampled_from(pieces), max_size=5))  # repeats
    order = data.draw(st.permutations(pieces))
    r = CryptoReassembler()
    for a, b in order:
        r.add(a, HELLO[a:b])
        assert r.buffered <= len(HELLO)
    assert r.hello() == HELLO
    # The same through the tracker, several pieces per protected Initial.
    dcid = bytes(8)
    keys = initial_client_keys(dcid, QUIC_V1)
    per = data.draw(st.integers(1, 6))
    packets = [
        protect(
            keys,
            dcid,
            b"\x01".join(crypto_frame(a, HELLO[a:b]) for a, b in order[i : i + per]),
            pn=n,
        )
        for n, i in enumerate(range(0, len(order), per))
    ]
    [outcome] = hellos(feed_client(QuicInitialTracker(), packets))
    assert outcome.hello == parse_client_hello(HELLO)


@PROPERTY
@given(
    st.integers(16, 4096),
    st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 3000)), max_size=40),
)
def test_reassembler_never_holds_more_than_max_bytes(
    max_bytes: int, adds: list[tuple[int, int]]
) -> None:
    r = CryptoReassembler(max_bytes=max_bytes)
    for offset, length in adds:
        chunk = bytes([1]) + bytes(length) if offset == 0 else b"\x07" * length
        try:
            r.add(offset, chunk)
        except QuicParseError:
            break
        assert r.buffered <= max_bytes
