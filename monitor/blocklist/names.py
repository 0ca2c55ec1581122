"""Host-name normalisation shared by the blocklist loader and the matcher.

Indicators and observed names must go through the *same* function, otherwise a list entry
written in Unicode could never match the punycode a client puts on the wire (or the other way
round).  The function runs once per observed name on the hot path, so the common case -- an
ASCII name, usually already lower-case -- avoids every Unicode table lookup.
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_LABEL_LENGTH", "MAX_NAME_LENGTH", "normalize_name"]

#: RFC 1035 limits, in presentation form without the trailing dot.
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63

# UTS #46 treats these as label separators too; a browser given "clearview。ai" queries
# "clearview.ai", so an indicator written that way must land on the same labels.
_DOT_TRANSLATION = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def normalize_name(name: str | bytes) -> str | None:
    """Return the canonical form of a host name, or None if it cannot be one.

    Canonical means: lower-case, one trailing dot removed, non-ASCII labels converted to IDNA
    A-labels ("xn--...").  None (not an exception) for impossible names, because callers feed
    it attacker-controlled bytes and only want to know whether there is anything to match.
    """
    if not isinstance(name, str):
        if not isinstance(name, bytes | bytearray | memoryview):
            return None
        try:
            name = bytes(name).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if name.isascii():
        text = name.lower()
    else:
        converted = _to_ascii(name)
        if converted is None:
            return None
        text = converted
    if text.endswith("."):
        text = text[:-1]
    if not text or len(text) > MAX_NAME_LENGTH or text[0] == "." or text[-1] == "." or ".." in text:
        return None
    # Only names longer than one label could possibly hold an over-long label; the split is
    # skipped for the (short) names seen almost all the time.
    if len(text) > MAX_LABEL_LENGTH and max(map(len, text.split("."))) > MAX_LABEL_LENGTH:
        return None
    return text


def _to_ascii(name: str) -> str | None:
    """Map a Unicode name to A-labels, label by label.

    This approximates UTS #46 non-transitional processing (what browsers do): NFKC folds
    compatibility forms such as full-width letters, lower() does the case mapping, and
    'ß'/'ς' are kept rather than rewritten (IDNA 2008), so the result equals what a modern
    client sends for the names that matter here.  Python's built-in "idna" codec is IDNA 2003
    and would turn "straße" into "strasse", a different DNS name.
    """
    labels = name.translate(_DOT_TRANSLATION).split(".")
    out: list[str] = []
    for label in labels:
        if label.isascii():
            out.append(label.lower())
            continue
        mapped = unicodedata.normalize("NFC", unicodedata.normalize("NFKC", label).lower())
        if not mapped or "." in mapped or mapped.translate(_DOT_TRANSLATION) != mapped:
            # NFKC can manufacture a dot (U+2488 "⒈" -> "1."); treating that as a label
            # boundary would let a look-alike name reach a different domain.
            return None
        if mapped.isascii():
            out.append(mapped)
            continue
        try:
            encoded = "xn--" + mapped.encode("punycode").decode("ascii")
        except (UnicodeError, ValueError):
            return None
        out.append(encoded)
    return ".".join(out)
