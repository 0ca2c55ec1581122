"""Behaviour of the NTLMSSP parser and its HTTP / SMB2 locators (monitor.protocols.ntlm).

Oracles: Wireshark's dissection stored with every real exchange in tests/fixtures/ntlm (curl's
NTLM over HTTP and through a proxy, Samba's smbclient over SMB3; see capture.py there), the
example messages of MS-NLMP section 4.2, and impacket, which builds NTLMSSP, SPNEGO and SMB2
messages for the cases no real client here sends. impacket is a test-only dependency.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from impacket import ntlm as impacket_ntlm
from impacket import smb3structs, spnego

from monitor.protocols.ntlm import (
    MAX_HTTP_TOKEN,
    NEGOTIATE_ANONYMOUS,
    NEGOTIATE_OEM,
    NEGOTIATE_UNICODE,
    NEGOTIATE_VERSION,
    NTLMSSP_AUTHENTICATE,
    NTLMSSP_CHALLENGE,
    NTLMSSP_NEGOTIATE,
    NTLMSSP_SIGNATURE,
    NtlmMessage,
    NtlmParseError,
    find_ntlmssp_in_http,
    find_ntlmssp_in_smb2,
    parse_ntlmssp,
)

FIXTURES = Path(__file__).parent / "fixtures" / "ntlm"
REAL = sorted(p.stem for p in FIXTURES.glob("*.json") if p.stem != "ms_nlmp_examples")
SPEC = {
    k: bytes.fromhex(v)
    for k, v in json.loads((FIXTURES / "ms_nlmp_examples.json").read_text())["messages"].items()
}
NTLMSSP_MECH = spnego.TypesMech["NTLMSSP - Microsoft NTLM Security Support Provider"]
KERBEROS_MECH = spnego.TypesMech["MS KRB5 - Microsoft Kerberos 5"]

# --- fixtures ---------------------------------------------------------------------------------


def real_packets(name: str) -> list[dict[str, Any]]:
    return json.loads((FIXTURES / f"{name}.json").read_text())["packets"]


def locate(name: str, payload: bytes) -> bytes | None:
    return (
        find_ntlmssp_in_smb2(payload) if name.startswith("smb2") else find_ntlmssp_in_http(payload)
    )


def real_messages(name: str) -> list[NtlmMessage]:
    out = []
    for pkt in real_packets(name):
        found = locate(name, bytes.fromhex(pkt["payload"]))
        assert found is not None
        out.append(parse_ntlmssp(found))
    return out


ALL_REAL_TOKENS = [
    locate(name, bytes.fromhex(pkt["payload"])) for name in REAL for pkt in real_packets(name)
]
ALL_REAL_PAYLOADS = [bytes.fromhex(pkt["payload"]) for name in REAL for pkt in real_packets(name)]


def ws_text(values: list[str]) -> str | None:
    """Wireshark writes an empty security buffer as NULL."""
    if not values:
        return None
    return "" if values[0] == "NULL" else values[0]


# --- builders ---------------------------------------------------------------------------------


def authenticate(
    user: str = "alice",
    domain: str = "EGRESS",
    workstation: str = "WS01",
    unicode: bool = True,
    version: bool = False,
    nt_len: int = 24,
) -> bytes:
    """An AUTHENTICATE built by impacket (with VERSION it adds the 16-byte MIC, as Windows does)."""
    msg = impacket_ntlm.NTLMAuthChallengeResponse()
    encode = (lambda s: s.encode("utf-16-le")) if unicode else (lambda s: s.encode("latin-1"))
    msg["flags"] = (
        (NEGOTIATE_UNICODE if unicode else NEGOTIATE_OEM)
        | impacket_ntlm.NTLMSSP_NEGOTIATE_NTLM
        | (NEGOTIATE_VERSION if version else 0)
    )
    if version:
        msg["Version"] = struct.pack("<BBHxxxB", 10, 0, 19045, 15)
        msg["MIC"] = b"\x11" * 16
    msg["user_name"] = encode(user)
    msg["domain_name"] = encode(domain)
    msg["host_name"] = encode(workstation)
    msg["lanman"] = b"\x00" * 24
    msg["ntlm"] = b"\x01" * nt_len
    msg["session_key"] = b""
    return msg.getData()


def negotiate(domain: str = "", workstation: str = "") -> bytes:
    msg = impacket_ntlm.NTLMAuthNegotiate()
    msg["flags"] = NEGOTIATE_UNICODE | impacket_ntlm.NTLMSSP_NEGOTIATE_NTLM
    msg["host_name"] = workstation.encode("ascii")
    msg["domain_name"] = domain.encode("ascii")
    return msg.getData()


def spnego_init(token: bytes, mech: bytes = NTLMSSP_MECH) -> bytes:
    init = spnego.SPNEGO_NegTokenInit()
    init["MechTypes"] = [mech]
    init["MechToken"] = token
    return init.getData()


def spnego_resp(token: bytes) -> bytes:
    resp = spnego.SPNEGO_NegTokenResp()
    resp["ResponseToken"] = token
    return resp.getData()


def http_head(*fields: str, line: str = "GET / HTTP/1.1", eol: str = "\r\n") -> bytes:
    return (eol.join((line, "Host: intranet.example", *fields)) + eol + eol).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def smb2_session_setup(blob: bytes, response: bool = False, nbss: bool = True) -> bytes:
    """An SMB2 SESSION_SETUP request (or response) built by impacket, with its NBSS header."""
    packet = smb3structs.SMB2Packet()
    packet["Command"] = smb3structs.SMB2_SESSION_SETUP
    if response:
        packet["Flags"] = smb3structs.SMB2_FLAGS_SERVER_TO_REDIR
        body = smb3structs.SMB2SessionSetup_Response()
        body["SecurityBufferOffset"] = 64 + 8  # impacket leaves it 0 unless told
    else:
        body = smb3structs.SMB2SessionSetup()
    body["SecurityBufferLength"] = len(blob)
    body["Buffer"] = blob
    packet["Data"] = body
    data = packet.getData()
    return (struct.pack(">I", len(data)) if nbss else b"") + data


def with_u32(msg: bytes, at: int, value: int) -> bytes:
    return msg[:at] + struct.pack("<I", value) + msg[at + 4 :]


def with_secbuf(msg: bytes, at: int, length: int, offset: int) -> bytes:
    return msg[:at] + struct.pack("<HHI", length, length, offset) + msg[at + 8 :]


# --- real traffic -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL)
def test_real_exchanges_read_as_wireshark_reads_them(name: str) -> None:
    for pkt in real_packets(name):
        ws = pkt["wireshark"]
        found = locate(name, bytes.fromhex(pkt["payload"]))
        assert found is not None and found.startswith(NTLMSSP_SIGNATURE)
        msg = parse_ntlmssp(found)
        assert msg.message_type == int(ws["message_type"][0], 16)
        assert msg.flags == int(ws["flags"][0], 16)
        if msg.message_type == NTLMSSP_AUTHENTICATE:
            assert msg.user_name == ws_text(ws["user_name"])
            assert msg.domain_name == ws_text(ws["domain_name"])
            assert msg.workstation == ws_text(ws["workstation"])
        elif msg.message_type == NTLMSSP_NEGOTIATE:
            # Wireshark prints the buffers even when the flags say they were not supplied.
            assert msg.domain_name in (None, ws_text(ws["negotiate_domain"]))
            assert msg.workstation in (None, ws_text(ws["negotiate_workstation"]))
        else:
            assert msg.target_name == ws_text(ws["target_name"])
        if ws["version_major"]:
            assert msg.os_version == (
                int(ws["version_major"][0]),
                int(ws["version_minor"][0]),
                int(ws["version_build"][0]),
            )
        else:
            assert msg.os_version is None


@pytest.mark.parametrize("name", ["http_curl_unicode", "http_curl_proxy"])
def test_curl_ntlm_logon_names_domain_user_and_workstation(name: str) -> None:
    neg, chal, auth = real_messages(name)
    assert (neg.message_type, chal.message_type, auth.message_type) == (1, 2, 3)
    assert chal.target_name == "EGRESS"
    assert auth.is_unicode
    assert auth.identity == "EGRESS\\alice"
    assert auth.workstation == "WORKSTATION"  # curl sends this fixed name, not the host's
    assert auth.ntlm_version == 2 and not auth.is_anonymous


def test_proxy_logon_is_found_in_proxy_authorization() -> None:
    first = bytes.fromhex(real_packets("http_curl_proxy")[-1]["payload"])
    assert b"Proxy-Authorization: NTLM " in first
    assert b"\nAuthorization:" not in first


def test_oem_logon_without_domain_is_read_as_oem() -> None:
    *_, auth = real_messages("http_curl_oem")
    assert not auth.is_unicode
    assert (auth.user_name, auth.domain_name, auth.workstation) == ("alice", "", "WORKSTATION")
    assert auth.identity == "alice"


def test_gss_api_negotiate_logon_is_unwrapped_from_spnego() -> None:
    packets = real_packets("http_curl_negotiate")
    assert all(b" Negotiate " in bytes.fromhex(p["payload"]) for p in packets)
    neg, chal, auth = real_messages("http_curl_negotiate")
    assert neg.os_version == (6, 2, 0) and chal.target_name == "EGRESS"
    assert auth.identity == "EGRESS\\alice"
    assert auth.workstation == "WS02"
    assert auth.lm_response_length == 0 and auth.ntlm_version == 2


def test_smbclient_session_setup_names_the_workstation_and_its_os_version() -> None:
    neg, chal, auth = real_messages("smb2_smbclient")
    assert neg.message_type == NTLMSSP_NEGOTIATE and chal.message_type == NTLMSSP_CHALLENGE
    assert auth.identity == "EGRESS\\alice"
    assert auth.workstation == "WS01"
    assert auth.os_version == (6, 1, 0)
    assert auth.ntlm_version == 2


# --- the MS-NLMP examples ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "ntlm_version", "flags"),
    [
        ("4.2.2.3_authenticate_ntlmv1", 1, 0xE2808235),
        ("4.2.4.3_authenticate_ntlmv2", 2, 0xE2888235),
    ],
)
def test_spec_authenticate_examples(key: str, ntlm_version: int, flags: int) -> None:
    msg = parse_ntlmssp(SPEC[key])
    assert (msg.user_name, msg.domain_name, msg.workstation) == ("User", "Domain", "COMPUTER")
    assert msg.flags == flags and msg.is_unicode
    assert msg.os_version == (5, 1, 2600)
    assert msg.ntlm_version == ntlm_version
    assert msg.lm_response_length == 24


@pytest.mark.parametrize("key", ["4.2.2.2_challenge_ntlmv1", "4.2.4.2_challenge_ntlmv2"])
def test_spec_challenge_examples(key: str) -> None:
    msg = parse_ntlmssp(SPEC[key])
    assert msg.message_type == NTLMSSP_CHALLENGE
    assert msg.target_name == "Server"
    assert msg.os_version == (6, 0, 6000)


# --- impacket-built messages ------------------------------------------------------------------


names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\\"), max_size=40
).filter(lambda s: s.isprintable())


@settings(max_examples=200)
@given(names, names, names, st.booleans())
def test_unicode_fields_round_trip_through_impacket(
    user: str, domain: str, workstation: str, version: bool
) -> None:
    msg = parse_ntlmssp(authenticate(user, domain, workstation, version=version))
    assert (msg.user_name, msg.domain_name, msg.workstation) == (user, domain, workstation)
    assert msg.os_version == ((10, 0, 19045) if version else None)


@settings(max_examples=200)
@given(*[st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)] * 3)
def test_oem_fields_round_trip_through_impacket(user: str, domain: str, workstation: str) -> None:
    msg = parse_ntlmssp(authenticate(user, domain, workstation, unicode=False))
    expect = [s.replace("\\", "\\x5c") for s in (user, domain, workstation)]
    assert [msg.user_name, msg.domain_name, msg.workstation] == expect


def test_oem_bytes_outside_ascii_are_escaped_not_guessed() -> None:
    msg = parse_ntlmssp(authenticate("j\xfcrgen", unicode=False))
    assert msg.user_name == "j\\xfcrgen"


def test_unicode_backslash_and_lone_surrogate_are_escaped_reversibly() -> None:
    raw = authenticate("ab", "EGRESS")
    raw = raw.replace("ab".encode("utf-16-le"), b"\\\x00\x00\xd8")
    msg = parse_ntlmssp(raw)
    assert msg.user_name == "\\u005c\\ud800"
    msg.user_name.encode("utf-8")


def test_negotiate_with_supplied_domain_and_workstation() -> None:
    msg = parse_ntlmssp(negotiate("EGRESS", "WS01"))
    assert msg.message_type == NTLMSSP_NEGOTIATE
    assert (msg.domain_name, msg.workstation) == ("EGRESS", "WS01")


def test_negotiate_without_supplied_names_names_nobody() -> None:
    msg = parse_ntlmssp(negotiate())
    assert (msg.domain_name, msg.workstation, msg.user_name) == (None, None, None)
    assert msg.identity is None


def test_short_negotiate_with_flags_only_is_accepted() -> None:
    msg = parse_ntlmssp(NTLMSSP_SIGNATURE + struct.pack("<II", 1, NEGOTIATE_UNICODE))
    assert msg.message_type == NTLMSSP_NEGOTIATE and msg.workstation is None


def test_empty_user_is_anonymous() -> None:
    msg = parse_ntlmssp(authenticate("", "", "WS01", nt_len=0))
    assert msg.is_anonymous and msg.identity is None and msg.ntlm_version is None
    assert msg.workstation == "WS01"


def test_anonymous_flag_alone_does_not_hide_a_named_user() -> None:
    raw = with_u32(authenticate(), 60, NEGOTIATE_UNICODE | NEGOTIATE_ANONYMOUS)
    assert not parse_ntlmssp(raw).is_anonymous


def test_version_is_ignored_when_the_payload_starts_where_it_would_be() -> None:
    raw = with_u32(authenticate(), 60, NEGOTIATE_UNICODE | NEGOTIATE_VERSION)
    msg = parse_ntlmssp(raw)  # payload begins at 64: no room for a Version field
    assert msg.os_version is None and msg.user_name == "alice"


def test_message_is_found_behind_leading_bytes_and_ignores_trailing_ones() -> None:
    raw = authenticate()
    assert parse_ntlmssp(b"\x60\x82junk" + raw + b"\xa3\x00mic") == parse_ntlmssp(raw)
    assert parse_ntlmssp(memoryview(raw)) == parse_ntlmssp(bytearray(raw)) == parse_ntlmssp(raw)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: m[:63], "shorter than its fixed fields"),
        (lambda m: with_secbuf(m, 36, 10, len(m) - 4), "run past the message"),
        (lambda m: with_secbuf(m, 36, 0xFFFF, 0xFFFFFFFF), "run past the message"),
        (lambda m: with_secbuf(m, 36, 4, 8), "fixed header"),
        (lambda m: with_secbuf(m, 36, 3, 64), "odd length"),
        (lambda m: with_u32(m, 8, 4), "unknown MessageType"),
        (lambda m: m[:10], "truncated"),
        (lambda m: m.replace(NTLMSSP_SIGNATURE, b"NTLMSSP\x01"), "no NTLMSSP signature"),
    ],
)
def test_malformed_messages_raise(mutate: Any, reason: str) -> None:
    with pytest.raises(NtlmParseError, match=reason):
        parse_ntlmssp(mutate(authenticate()))


def test_malformed_challenge_and_negotiate_raise() -> None:
    challenge = SPEC["4.2.4.2_challenge_ntlmv2"]
    with pytest.raises(NtlmParseError, match="TargetInfo"):
        parse_ntlmssp(with_secbuf(challenge, 40, 0x24, 0x1000))
    with pytest.raises(NtlmParseError, match="shorter"):
        parse_ntlmssp(challenge[:31])
    with pytest.raises(NtlmParseError, match="Workstation"):
        parse_ntlmssp(with_secbuf(negotiate("D", "W"), 24, 8, 200))
    with pytest.raises(NtlmParseError, match="shorter"):
        parse_ntlmssp(NTLMSSP_SIGNATURE + struct.pack("<I", 1) + b"\x00")


# --- HTTP -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Authorization: NTLM {}",
        "authorization:   ntlm   {}  ",
        "Proxy-Authorization: NTLM {}",
        "WWW-Authenticate: NTLM {}",
        "Proxy-Authenticate: NTLM {}",
    ],
)
def test_ntlm_header_forms_are_found(header: str) -> None:
    raw = authenticate()
    assert find_ntlmssp_in_http(http_head(header.format(b64(raw)))) == raw


def test_negotiate_header_with_spnego_wrapped_ntlm_is_unwrapped() -> None:
    raw = authenticate("carol")
    for token in (spnego_init(negotiate("EGRESS", "WS9")), spnego_resp(raw)):
        found = find_ntlmssp_in_http(http_head(f"Authorization: Negotiate {b64(token)}"))
        assert found is not None
        assert parse_ntlmssp(found) == parse_ntlmssp(token)
    found = find_ntlmssp_in_http(http_head(f"Authorization: Negotiate {b64(spnego_resp(raw))}"))
    assert found is not None and parse_ntlmssp(found).identity == "EGRESS\\carol"


def test_negotiate_header_carrying_kerberos_is_not_ntlm() -> None:
    token = spnego_init(b"\x6e\x03\x30\x01\x00", KERBEROS_MECH)
    assert find_ntlmssp_in_http(http_head(f"Authorization: Negotiate {b64(token)}")) is None


def test_bare_lf_heads_and_later_headers_are_searched() -> None:
    raw = authenticate()
    head = http_head("Accept: */*", f"Authorization: NTLM {b64(raw)}", eol="\n")
    assert find_ntlmssp_in_http(head) == raw


def test_first_header_with_ntlmssp_wins() -> None:
    a, b = authenticate("first"), authenticate("second")
    head = http_head(
        "WWW-Authenticate: NTLM", f"Authorization: NTLM {b64(a)}", f"Authorization: NTLM {b64(b)}"
    )
    assert find_ntlmssp_in_http(head) == a


@pytest.mark.parametrize(
    "header",
    [
        "Authorization: Basic YWxpY2U6cHc=",
        "Authorization: NTLM",
        "Authorization: NTLM not*base64",
        "Authorization: NTLM TlRMTVNTUAADAAA",  # padding missing: strict base64 refuses it
        "Authorization: NTLM " + b64(b"not ntlm at all"),
        "Cookie: NTLM " + b64(NTLMSSP_SIGNATURE),
        "X-Authorization: NTLM " + b64(NTLMSSP_SIGNATURE),
        "Authorization: NTLM " + "A" * (MAX_HTTP_TOKEN + 4),
    ],
)
def test_heads_without_a_usable_ntlm_token_give_none(header: str) -> None:
    assert find_ntlmssp_in_http(http_head(header)) is None


# --- SMB2 -------------------------------------------------------------------------------------


def test_impacket_session_setup_request_and_response_are_unwrapped() -> None:
    raw = authenticate("dave", "CORP", "WS77")
    found = find_ntlmssp_in_smb2(smb2_session_setup(spnego_resp(raw)))
    assert found is not None and parse_ntlmssp(found).identity == "CORP\\dave"
    chal = SPEC["4.2.4.2_challenge_ntlmv2"]
    found = find_ntlmssp_in_smb2(smb2_session_setup(spnego_resp(chal), response=True))
    assert found is not None and parse_ntlmssp(found).target_name == "Server"


def test_smb2_without_netbios_header_is_accepted() -> None:
    raw = authenticate()
    assert find_ntlmssp_in_smb2(smb2_session_setup(spnego_resp(raw), nbss=False)) == raw


def test_real_session_setup_cut_short_gives_none() -> None:
    pkt = real_packets("smb2_smbclient")[-1]
    payload = bytes.fromhex(pkt["payload"])
    assert find_ntlmssp_in_smb2(payload) is not None
    assert find_ntlmssp_in_smb2(payload[:-1]) is None


def test_security_buffer_beyond_the_netbios_length_gives_none() -> None:
    payload = bytearray(smb2_session_setup(spnego_resp(authenticate())))
    payload[1:4] = (len(payload) - 5).to_bytes(3, "big")
    assert find_ntlmssp_in_smb2(bytes(payload)) is None


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00\x00\x00",
        b"\x85\x00\x00\x00",  # NetBIOS keep-alive
        b"\x00\x00\x00\x40\xffSMB" + bytes(60),  # SMB1
        b"\x00\x00\x00\x40\xfdSMB" + bytes(60),  # SMB3 transform (encrypted)
    ],
)
def test_non_smb2_payloads_give_none(payload: bytes) -> None:
    assert find_ntlmssp_in_smb2(payload) is None


def test_other_smb2_commands_give_none() -> None:
    payload = bytearray(smb2_session_setup(spnego_resp(authenticate())))
    payload[4 + 12] = 0x03  # TREE_CONNECT
    assert find_ntlmssp_in_smb2(bytes(payload)) is None


# --- fuzzing ----------------------------------------------------------------------------------


def _parse_or_parse_error(data: bytes) -> None:
    try:
        msg = parse_ntlmssp(data)
    except NtlmParseError:
        return
    for text in (msg.user_name, msg.domain_name, msg.workstation, msg.target_name, msg.identity):
        if text is not None:
            text.encode("utf-8")  # always loggable
    _ = (msg.is_anonymous, msg.ntlm_version, msg.is_unicode)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_parse_error(data: bytes) -> None:
    _parse_or_parse_error(data)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([1, 2, 3, 4]), st.binary(max_size=200))
def test_random_bodies_behind_a_signature_only_ever_raise_parse_error(
    message_type: int, body: bytes
) -> None:
    _parse_or_parse_error(NTLMSSP_SIGNATURE + struct.pack("<I", message_type) + body)


def _mutate(draw: st.DrawFn, data: bytearray) -> bytes:
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(("flip", "set", "cut", "insert", "delete")))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from((0x00, 0x01, 0x40, 0x7F, 0x80, 0xD8, 0xFF)))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos]
    return bytes(data)


@st.composite
def mutated_tokens(draw: st.DrawFn) -> bytes:
    sources = [t for t in ALL_REAL_TOKENS if t] + list(SPEC.values()) + [authenticate(version=True)]
    return _mutate(draw, bytearray(draw(st.sampled_from(sources))))


@st.composite
def mutated_payloads(draw: st.DrawFn) -> bytes:
    return _mutate(draw, bytearray(draw(st.sampled_from(ALL_REAL_PAYLOADS))))


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_tokens())
def test_mutated_real_and_spec_messages_only_ever_raise_parse_error(data: bytes) -> None:
    _parse_or_parse_error(data)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_payloads())
def test_locators_never_raise_on_mutated_real_payloads(data: bytes) -> None:
    for found in (find_ntlmssp_in_http(data), find_ntlmssp_in_smb2(data)):
        if found is not None:
            assert found.startswith(NTLMSSP_SIGNATURE)
            _parse_or_parse_error(found)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_locators_never_raise_on_random_bytes(data: bytes) -> None:
    found = find_ntlmssp_in_http(b"Authorization: NTLM " + base64.b64encode(data))
    assert found == (data[data.find(NTLMSSP_SIGNATURE) :] if NTLMSSP_SIGNATURE in data else None)
    find_ntlmssp_in_http(data)
    find_ntlmssp_in_smb2(data)
    find_ntlmssp_in_smb2(b"\x00" + len(data).to_bytes(3, "big") + b"\xfeSMB" + data)
