"""normalize_name: one canonical spelling per DNS name, None for impossible names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.blocklist.names import normalize_name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("clearview.ai", "clearview.ai"),
        ("ClearView.AI", "clearview.ai"),
        ("clearview.ai.", "clearview.ai"),
        (b"API.Clearview.AI.", "api.clearview.ai"),
        (bytearray(b"pimeyes.com"), "pimeyes.com"),
        ("_dmarc.example.com", "_dmarc.example.com"),
        ("localhost", "localhost"),
    ],
)
def test_ascii_names_are_lowercased_and_lose_one_trailing_dot(raw: str | bytes, expected: str):
    assert normalize_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.Example.", "xn--bcher-kva.example"),
        ("bücher.example".encode(), "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        # IDNA 2008 / UTS #46 non-transitional keeps ß, as browsers do (IDNA 2003 gave "strasse").
        ("straße.de", "xn--strae-oqa.de"),
        # Full-width letters and the ideographic full stop fold to their ASCII equivalents.
        ("ＣＬＥＡＲＶＩＥＷ。ai", "clearview.ai"),
        ("clearview．ai", "clearview.ai"),
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ],
)
def test_unicode_names_become_idna_a_labels(raw: str | bytes, expected: str):
    assert normalize_name(raw) == expected


def test_unicode_conversion_agrees_with_the_idna_package_for_ordinary_names():
    idna = pytest.importorskip("idna")
    for name in ["bücher.example", "München.de", "例え.テスト", "faß.de", "ёлка.рф"]:
        assert normalize_name(name) == idna.encode(name, uts46=True).decode("ascii")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        ".",
        "..",
        ".clearview.ai",
        "clearview..ai",
        "clearview.ai..",
        "a" * 64 + ".com",
        ("a" * 62 + ".") * 4 + "com",  # 255 characters
        b"\xff\xfe.example",  # not UTF-8
        "a\u2488clearview.ai",  # NFKC turns U+2488 into "1." -- a smuggled label boundary
        123,
        None,
    ],
)
def test_impossible_names_give_none(raw: object):
    assert normalize_name(raw) is None  # type: ignore[arg-type]


def test_name_of_exactly_253_characters_is_accepted():
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(name) == 253
    assert normalize_name(name) == name
    assert normalize_name(name + ".") == name


@given(st.text(max_size=300))
def test_random_text_never_raises_and_result_is_canonical(raw: str):
    result = normalize_name(raw)
    if result is not None:
        assert result.isascii()
        assert result == result.lower()
        assert 0 < len(result) <= 253
        assert all(0 < len(label) <= 63 for label in result.split("."))
        assert normalize_name(result) == result


@given(st.binary(max_size=300))
def test_random_bytes_never_raise(raw: bytes):
    result = normalize_name(raw)
    assert result is None or normalize_name(result) == result
