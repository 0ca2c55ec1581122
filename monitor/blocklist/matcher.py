"""Name and address lookup against loaded blocklists.

The matcher sits on the per-packet path, so lookups must cost the same for ten indicators or a
hundred thousand: every indicator is filed under one DNS suffix in a single dict, and a lookup
walks the observed name's suffixes (O(labels) dict probes), never the indicators.

Precedence follows specificity.  Each indicator is *anchored* at a suffix: a host and a domain
at their own name, a wildcard at its fixed part ("*.cdn.example.com" and
"face-*.example.com" at "cdn.example.com" and "example.com").  Walking from the longest suffix
to the shortest, the first anchor that matches wins, so a longer anchor always beats a shorter
one; on the same anchor a host beats a wildcard, which beats a domain.  Among wildcards on the
same anchor a label glob beats a whole-label '*' (it constrains more), and among globs the one
with more literal characters wins.  A label glob stands for exactly one label, like a host
name with a pattern in it: "face-*.example.com" matches "face-eu.example.com" but not
"x.face-eu.example.com", whereas "*.example.com" matches any depth.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable

from monitor.blocklist.model import Blocklist, Indicator, Match, Vendor
from monitor.blocklist.names import normalize_name

__all__ = ["Matcher"]

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_GlobTest = Callable[[str], object]


class _Node:
    """Everything anchored at one suffix, so a lookup costs one dict probe per suffix."""

    __slots__ = ("domain", "globs", "host", "star")

    def __init__(self) -> None:
        self.host: Indicator | None = None
        self.domain: Indicator | None = None
        self.star: Indicator | None = None
        self.globs: tuple[tuple[_GlobTest, Indicator], ...] = ()


class _Prefixes:
    """Longest-prefix match over one address family: one dict per prefix length in use.

    At most 33 (IPv4) or 129 (IPv6) probes, independent of how many networks are listed.
    """

    __slots__ = ("bits", "lengths", "tables")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.tables: dict[int, dict[int, Indicator]] = {}
        self.lengths: tuple[int, ...] = ()

    def add(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, ind: Indicator) -> None:
        plen = network.prefixlen
        key = int(network.network_address) >> (self.bits - plen)
        self.tables.setdefault(plen, {})[key] = ind
        self.lengths = tuple(sorted(self.tables, reverse=True))

    def lookup(self, value: int) -> Indicator | None:
        bits = self.bits
        tables = self.tables
        for plen in self.lengths:
            ind = tables[plen].get(value >> (bits - plen))
            if ind is not None:
                return ind
        return None


class Matcher:
    """Immutable-after-construction index over one or more blocklists.

    The same indicator (kind and value) in two lists is kept once: the first list given wins
    and the clash is recorded in ``warnings`` -- not an error, because two independently
    maintained lists legitimately overlap.
    """

    __slots__ = (
        "_index",
        "_tails",
        "_v4",
        "_v6",
        "indicator_count",
        "indicators",
        "ja4",
        "lists",
        "vendors",
        "warnings",
    )

    def __init__(self, lists: Iterable[Blocklist]) -> None:
        self.lists: tuple[Blocklist, ...] = tuple(lists)
        self.warnings: list[str] = []
        self.vendors: dict[str, Vendor] = {}
        self._index: dict[str, _Node] = {}
        self._v4 = _Prefixes(32)
        self._v6 = _Prefixes(128)
        self.ja4: dict[str, Indicator] = {}

        names: dict[str, Blocklist] = {}
        for blocklist in self.lists:
            earlier = names.get(blocklist.name)
            if earlier is not None:
                raise ValueError(
                    f"{blocklist.path}: list name {blocklist.name!r} is already used by "
                    f"{earlier.path}"
                )
            names[blocklist.name] = blocklist

        seen: dict[tuple[str, str], Indicator] = {}
        globs: dict[str, list[tuple[int, int, str, Indicator]]] = {}
        active: list[Indicator] = []
        for blocklist in self.lists:
            for vendor in blocklist.vendors:
                self._add_vendor(vendor, blocklist)
            for ind in blocklist.indicators:
                first = seen.get((ind.kind, ind.value))
                if first is not None:
                    self.warnings.append(
                        f"{ind.file}:{ind.line}: warning: {ind.kind} {ind.value} is already "
                        f"listed in {first.list_name} ({first.file}:{first.line}); the first "
                        "one is used"
                    )
                    continue
                seen[(ind.kind, ind.value)] = ind
                active.append(ind)
                self._add(ind, globs, len(active))
        for suffix, entries in globs.items():
            # More literal characters = more specific; ties keep load order.
            entries.sort(key=lambda e: (-e[0], e[1]))
            self._node(suffix).globs = tuple(
                (re.compile(fnmatch.translate(pattern)).match, ind)
                for _, _, pattern, ind in entries
            )
        # Every anchor ends in its last two labels, so an observed name whose last two labels
        # are no anchor's cannot match anything: one set probe rejects most traffic.  Lists
        # built by hand could anchor a bare label; then the shortcut is simply not used.
        tails: set[str] = set()
        for suffix in self._index:
            last = suffix.rfind(".")
            if last == -1:
                tails = set()
                self._tails: frozenset[str] | None = None
                break
            tails.add(suffix[suffix.rfind(".", 0, last) + 1 :])
        else:
            self._tails = frozenset(tails)
        self.indicators: tuple[Indicator, ...] = tuple(active)
        self.indicator_count: int = len(active)

    def _add_vendor(self, vendor: Vendor, blocklist: Blocklist) -> None:
        known = self.vendors.get(vendor.id)
        if known is None:
            self.vendors[vendor.id] = vendor
        elif known != vendor:
            self.warnings.append(
                f"{blocklist.path}: warning: vendor {vendor.id!r} is defined differently in "
                "an earlier list; vendor lookups report the earlier definition"
            )

    def _node(self, suffix: str) -> _Node:
        node = self._index.get(suffix)
        if node is None:
            node = self._index[suffix] = _Node()
        return node

    def _add(
        self,
        ind: Indicator,
        globs: dict[str, list[tuple[int, int, str, Indicator]]],
        order: int,
    ) -> None:
        kind, value = ind.kind, ind.value
        if kind == "host":
            self._node(value).host = ind
        elif kind == "domain":
            self._node(value).domain = ind
        elif kind == "wildcard":
            first, _, suffix = value.partition(".")
            if first == "*":
                self._node(suffix).star = ind
            else:
                literal = len(first) - first.count("*")
                globs.setdefault(suffix, []).append((literal, order, first, ind))
        elif kind == "cidr":
            network = ipaddress.ip_network(value)
            table = self._v4 if network.version == 4 else self._v6
            table.add(network, ind)
        elif kind == "ja4":
            self.ja4.setdefault(value, ind)
        else:
            raise ValueError(f"unknown indicator kind {kind!r}")

    def match_name(self, name: str | bytes) -> Match | None:
        """Return the most specific indicator covering ``name``, or None.

        Never raises for odd input: names come straight off the wire.
        """
        norm = normalize_name(name)
        if norm is None:
            return None
        tails = self._tails
        if tails is not None:
            last = norm.rfind(".")
            if last == -1 or norm[norm.rfind(".", 0, last) + 1 :] not in tails:
                return None
        index = self._index
        node = index.get(norm)
        if node is not None:
            # Wildcards need at least one label in front of their anchor, so only hosts and
            # domains can be anchored at the full name.
            ind = node.host or node.domain
            if ind is not None:
                return Match(norm, ind)
        start = 0
        dot = norm.find(".")
        while dot != -1:
            node = index.get(norm[dot + 1 :])
            if node is not None:
                if node.globs and start == 0:
                    # A glob stands for exactly one label, so it only applies when that label
                    # is the leftmost one: "face-*.example.com" does not cover subdomains.
                    label = norm[:dot]
                    for test, ind in node.globs:
                        if test(label):
                            return Match(norm, ind)
                ind = node.star or node.domain
                if ind is not None:
                    return Match(norm, ind)
            start = dot + 1
            dot = norm.find(".", start)
        return None

    def match_ja4(self, fingerprint: str) -> Match | None:
        """A client fingerprint listed as a ``ja4`` indicator (exact, one dict lookup)."""
        ind = self.ja4.get(fingerprint)
        return None if ind is None else Match(fingerprint, ind)

    def match_ip(self, ip: str | _IPAddress) -> Match | None:
        """Longest-prefix CIDR match; None for anything that is not an IP address.

        Text is parsed with inet_pton where possible: it is strict (no "1.2.3" or octal
        forms) and an order of magnitude cheaper than building an ipaddress object for a
        lookup that almost always misses.  Scoped IPv6 text ("fe80::1%eth0") and address
        objects take the ipaddress route.
        """
        if isinstance(ip, str) and "%" not in ip:
            try:
                if ":" in ip:
                    value = int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
                    version = 6
                else:
                    value = int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
                    version = 4
            except (OSError, ValueError):
                return None
        else:
            if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
                addr: _IPAddress = ip
            else:
                try:
                    addr = ipaddress.ip_address(ip)
                except (ValueError, TypeError):
                    return None
            value, version = int(addr), addr.version
        if version == 4:
            ind = self._v4.lookup(value)
        else:
            ind = self._v6.lookup(value)
            if ind is None and value >> 32 == 0xFFFF:
                # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
                ind = self._v4.lookup(value & 0xFFFFFFFF)
        if ind is None:
            return None
        text = str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))
        return Match(text, ind)
