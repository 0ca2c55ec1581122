"""The static asset inventory: which IP, network or MAC is which workstation, whose, in which unit.

Dynamic evidence (DHCP, Kerberos, NTLM) says who held an address at a moment; the inventory
says what the department has written down: servers and printers with fixed addresses, a
subnet per unit, a laptop's MAC with its owner. It is the fallback when nothing on the wire
covers the time of an access, and it names the unit, which the wire never does.

Two formats, the same columns, because inventories are exported from spreadsheets as often
as they are written by hand:

YAML, a list of entries::

    - ip: 10.20.0.4
      hostname: ws04.pd.example
      owner: PD\\alice
      unit: Homicide
      notes: forensic terminal, room 2.14
    - cidr: 10.20.8.0/24
      unit: Patrol
    - mac: 52:54:00:aa:00:07
      hostname: laptop-7.pd.example
      owner: bob@PD.EXAMPLE

CSV, a header naming the columns (any order, any subset with at least one of ``ip``, ``cidr``
and ``mac``), then one entry per row; lines starting with ``#`` are comments::

    ip,cidr,mac,hostname,owner,unit,notes
    10.20.0.4,,,ws04.pd.example,PD\\alice,Homicide,"forensic terminal, room 2.14"

Each entry has exactly one of ``ip`` / ``cidr`` / ``mac`` and at least one of ``hostname``,
``owner`` and ``unit``. ``owner`` is a user name, optionally qualified as ``DOMAIN\\user`` or
``user@REALM`` (split into :attr:`InventoryEntry.owner` and :attr:`InventoryEntry.owner_domain`
so it compares with what Kerberos and NTLM report). A CIDR with host bits set, a duplicate
address, network or MAC, an unknown column or key, and control characters are errors: an
inventory is configuration, and a typo that silently attributes an access to the wrong person
is worse than a refusal to load. Every error is an :class:`InventoryError` naming FILE:LINE.

Lookups (:meth:`Inventory.lookup`): a MAC entry first (it names the device itself), then the
exact IP, then the longest matching CIDR. Loading never changes an :class:`Inventory` in place:
a reload builds a new one or raises, and the caller keeps the old one on error.
"""

from __future__ import annotations

import csv
import difflib
import io
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

import yaml

from monitor.attribution.bindings import normalize_host, normalize_ip, normalize_mac
from monitor.config.yamlsource import (
    ConfigError,
    Entry,
    FileKind,
    FileParser,
    describe,
    line_of,
    parse_text,
    read_text,
)

__all__ = [
    "COLUMNS",
    "MAX_INVENTORY_BYTES",
    "Inventory",
    "InventoryEntry",
    "InventoryError",
    "load_inventory",
    "parse_inventory_csv",
    "parse_inventory_yaml",
]

COLUMNS = ("ip", "cidr", "mac", "hostname", "owner", "unit", "notes")
_SELECTORS = ("ip", "cidr", "mac")
#: Tens of thousands of assets fit in a few MB; this only stops a wrong path.
MAX_INVENTORY_BYTES = 64 * 1024 * 1024
_MAX_TEXT = {"hostname": 255, "owner": 256, "unit": 256, "notes": 4096}
_HOST = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_NULL_TAG = "tag:yaml.org,2002:null"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class InventoryError(ConfigError):
    """An inventory problem, located as FILE:LINE like every configuration error."""


_KIND = FileKind(
    error=InventoryError,
    document="an inventory file",
    expected="a list of entries ('- ip: ...')",
    quote_example='owner: "*admin"',
)


@dataclass(slots=True, frozen=True)
class InventoryEntry:
    """One asset. ``selector`` is ``ip``, ``cidr`` or ``mac`` and ``match`` its normalised
    value (``str(ip_address)``, ``str(ip_network)``, lower-case colon hex)."""

    selector: str
    match: str
    hostname: str | None
    owner: str | None
    owner_domain: str | None
    unit: str | None
    notes: str | None
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


class Inventory:
    """Entries indexed for lookup by MAC, exact IP and longest-prefix CIDR."""

    __slots__ = ("_by_ip", "_by_mac", "_nets", "entries", "path")

    def __init__(self, entries: Iterable[InventoryEntry] = (), *, path: str | None = None) -> None:
        self.entries = tuple(entries)
        self.path = path
        self._by_ip: dict[str, InventoryEntry] = {}
        self._by_mac: dict[str, InventoryEntry] = {}
        # (version, prefix length) -> network address as int -> entry
        nets: dict[tuple[int, int], dict[int, InventoryEntry]] = {}
        for entry in self.entries:
            if entry.selector == "ip":
                self._by_ip.setdefault(entry.match, entry)
            elif entry.selector == "mac":
                self._by_mac.setdefault(entry.match, entry)
            else:
                net = ipaddress.ip_network(entry.match)
                table = nets.setdefault((net.version, net.prefixlen), {})
                table.setdefault(int(net.network_address), entry)
        # Longest prefix first, so the first hit is the most specific.
        self._nets = sorted(nets.items(), key=lambda item: -item[0][1])

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, ip: str | None, mac: str | None = None) -> InventoryEntry | None:
        """The entry for a device: by ``mac`` (normalised), else exact ``ip``, else the longest
        CIDR containing ``ip``. Malformed arguments find nothing rather than raise."""
        if mac is not None:
            try:
                found = self._by_mac.get(normalize_mac(mac))
            except ValueError:
                found = None
            if found is not None:
                return found
        if ip is None:
            return None
        try:
            key = normalize_ip(ip)
        except ValueError:
            return None
        found = self._by_ip.get(key)
        if found is not None or not self._nets:
            return found
        addr = ipaddress.ip_address(key)
        value = int(addr)
        bits = addr.max_prefixlen
        for (version, prefixlen), table in self._nets:
            if version != addr.version:
                continue
            shift = bits - prefixlen
            hit = table.get((value >> shift) << shift)
            if hit is not None:
                return hit
        return None


# --------------------------------------------------------------------------- shared checks


def _split_owner(owner: str) -> tuple[str, str | None]:
    if "\\" in owner:
        domain, _, user = owner.partition("\\")
        return user, domain or None
    if "@" in owner:
        user, _, domain = owner.rpartition("@")
        return user, domain or None
    return owner, None


class _Checker:
    """Turns one row of raw texts into an :class:`InventoryEntry`; shared by both formats."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.seen: dict[tuple[str, str], int] = {}

    def fail(self, line: int, problem: str) -> InventoryError:
        return InventoryError(self.file, line, problem)

    def text(self, name: str, raw: str | None, line: int) -> str | None:
        if raw is None:
            return None
        value = raw.strip()
        if not value:
            return None
        # Notes may span lines (a YAML block, a spreadsheet cell); nothing else may.
        if _CONTROL.search(
            value.replace("\n", " ").replace("\t", " ") if name == "notes" else value
        ):
            raise self.fail(line, f"{name} contains a control character")
        limit = _MAX_TEXT[name]
        if len(value) > limit:
            raise self.fail(line, f"{name} is longer than {limit} characters")
        return value

    def entry(
        self, values: dict[str, str | None], lines: dict[str, int], line: int
    ) -> InventoryEntry:
        chosen = [name for name in _SELECTORS if values.get(name) not in (None, "")]
        if len(chosen) != 1:
            found = " and ".join(chosen) if chosen else "none"
            raise self.fail(line, f"an entry needs exactly one of ip, cidr, mac (found {found})")
        selector = chosen[0]
        raw = (values[selector] or "").strip()
        at = lines.get(selector, line)
        match = self.selector(selector, raw, at)
        previous = self.seen.get((selector, match))
        if previous is not None:
            raise self.fail(at, f"duplicate {selector} {match} (first on line {previous})")
        self.seen[(selector, match)] = at

        hostname_text = self.text("hostname", values.get("hostname"), lines.get("hostname", line))
        hostname = normalize_host(hostname_text)
        if hostname is not None and not all(
            _HOST.fullmatch(label) for label in hostname.split(".")
        ):
            raise self.fail(
                lines.get("hostname", line),
                f"hostname {hostname_text!r} must be letters, digits, '-' and '_' in "
                "dot-separated labels",
            )
        owner_text = self.text("owner", values.get("owner"), lines.get("owner", line))
        owner = owner_domain = None
        if owner_text is not None:
            owner, owner_domain = _split_owner(owner_text)
            if not owner:
                raise self.fail(lines.get("owner", line), f"owner {owner_text!r} has no user name")
        unit = self.text("unit", values.get("unit"), lines.get("unit", line))
        notes = self.text("notes", values.get("notes"), lines.get("notes", line))
        if hostname is None and owner is None and unit is None:
            raise self.fail(line, f"{selector} {match}: give at least one of hostname, owner, unit")
        return InventoryEntry(
            selector=selector,
            match=match,
            hostname=hostname,
            owner=owner,
            owner_domain=owner_domain,
            unit=unit,
            notes=notes,
            file=self.file,
            line=line,
        )

    def selector(self, selector: str, raw: str, line: int) -> str:
        if selector == "mac":
            try:
                return normalize_mac(raw)
            except ValueError:
                raise self.fail(line, f"mac {raw!r} is not a MAC address") from None
        if selector == "ip":
            if "/" in raw:
                raise self.fail(line, f"ip {raw!r} has a prefix length; use cidr: for networks")
            try:
                return normalize_ip(raw)
            except ValueError:
                raise self.fail(line, f"ip {raw!r} is not an IP address") from None
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise self.fail(line, f"cidr {raw!r} is not a network like 10.0.0.0/24") from None
        if "/" not in raw:
            raise self.fail(line, f"cidr {raw!r} has no prefix length; use ip: for one address")
        if int(net.network_address) != int(ipaddress.ip_address(raw.split("/", 1)[0])):
            raise self.fail(line, f"cidr {raw!r} has host bits set; did you mean {net}?")
        return str(net)


# --------------------------------------------------------------------------- YAML


_SCALAR_TAGS = frozenset((_STR_TAG, _INT_TAG, _FLOAT_TAG))


class _YamlParser(FileParser):
    error_type = InventoryError

    def document(self, root: yaml.Node) -> list[InventoryEntry]:
        if not isinstance(root, yaml.SequenceNode):
            raise self.error(root, f"an inventory must be a list of entries, got {describe(root)}")
        checker = _Checker(self.file)
        entries: list[InventoryEntry] = []
        for item in root.value:
            fields = self.mapping(item, "an inventory entry", COLUMNS, ())
            values: dict[str, str | None] = {}
            lines: dict[str, int] = {}
            for name, entry in fields.items():
                values[name] = self.scalar_text(entry, name)
                lines[name] = line_of(entry[1] if entry[1].tag != _NULL_TAG else entry[0])
            entries.append(checker.entry(values, lines, line_of(item)))
        return entries

    def scalar_text(self, entry: Entry, what: str) -> str | None:
        """The text as written. A MAC like ``52:54:00:11:00:01`` is a base-60 number to YAML
        1.1 and a badge-number user name is an integer; both are meant as text, so plain
        numbers are taken verbatim rather than refused."""
        _, value = entry
        if value.tag == _NULL_TAG:
            return None
        if not isinstance(value, yaml.ScalarNode) or value.tag not in _SCALAR_TAGS:
            raise self.value_error(entry, f"{what} must be text, got {describe(value)}")
        return str(value.value)


def parse_inventory_yaml(text: str, file: str = "<inventory>") -> Inventory:
    """An inventory from YAML text; raises :class:`InventoryError` (FILE:LINE) on a problem."""
    root = parse_text(text, file, kind=_KIND)
    return Inventory(_YamlParser(file).document(root), path=file)


# --------------------------------------------------------------------------- CSV


def parse_inventory_csv(text: str, file: str = "<inventory>") -> Inventory:
    """An inventory from CSV text; raises :class:`InventoryError` (FILE:LINE) on a problem."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    checker = _Checker(file)
    columns: list[str] | None = None
    entries: list[InventoryEntry] = []
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # Where the broken record starts (an unclosed quote is only noticed at the end).
            raise InventoryError(file, line, f"CSV error in this record: {exc}") from None
        start, line = line, reader.line_num + 1
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if columns is None:
            columns = _header(row, file, start)
            continue
        if len(row) != len(columns):
            raise InventoryError(file, start, f"{len(row)} values for {len(columns)} columns")
        values = dict(zip(columns, row, strict=True))
        entries.append(checker.entry(dict(values), {}, start))
    if columns is None:
        raise InventoryError(file, 1, "the file is empty; expected a header line naming columns")
    return Inventory(entries, path=file)


def _header(row: list[str], file: str, line: int) -> list[str]:
    names = [cell.strip().lower() for cell in row]
    seen: set[str] = set()
    for name in names:
        if name not in COLUMNS:
            hint = difflib.get_close_matches(name, COLUMNS, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise InventoryError(
                file,
                line,
                f"unknown column {name!r}{suggestion} (allowed: {', '.join(COLUMNS)})",
            )
        if name in seen:
            raise InventoryError(file, line, f"duplicate column {name!r}")
        seen.add(name)
    if not seen.intersection(_SELECTORS):
        raise InventoryError(file, line, "the header names none of the columns ip, cidr, mac")
    return names


# --------------------------------------------------------------------------- files


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    """Load an inventory file, YAML (``.yaml``/``.yml``) or CSV (``.csv``), by its extension.

    Returns a new :class:`Inventory` or raises :class:`InventoryError`; it never changes an
    inventory already in use, so on a failed reload the caller keeps the old one.
    """
    file = os.fspath(path)
    suffix = os.path.splitext(file)[1].lower()
    if suffix not in (".yaml", ".yml", ".csv"):
        raise InventoryError(file, None, "an inventory must be a .yaml, .yml or .csv file")
    text = read_text(file, error=InventoryError, max_bytes=MAX_INVENTORY_BYTES)
    if suffix == ".csv":
        return parse_inventory_csv(text, file)
    return parse_inventory_yaml(text, file)
