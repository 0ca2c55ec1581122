"""Strict loading of blocklist YAML files.

A blocklist is safety-relevant configuration: a typo that silently disables an indicator means
a missed detection nobody notices.  So the loader is deliberately unforgiving -- unknown keys,
wrong types, duplicates and implausible names are all errors -- and every error names the file
and line of the offending YAML node, which is why the file is walked as a node graph (as
``yaml.compose`` builds it) instead of being turned into plain dicts that have forgotten their
lines.  That machinery is shared with the other configuration files and lives in
:mod:`monitor.config.yamlsource`; this module holds the blocklist schema.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import yaml

from monitor.blocklist.matcher import Matcher
from monitor.blocklist.model import (
    CATEGORIES,
    INDICATOR_KINDS,
    SEVERITY_LEVELS,
    Blocklist,
    Indicator,
    Vendor,
)
from monitor.blocklist.names import MAX_NAME_LENGTH, normalize_name
from monitor.config.yamlsource import MAX_NESTING as MAX_NESTING  # re-exported
from monitor.config.yamlsource import (
    ConfigError,
    FileKind,
    FileParser,
    compose_text,
    parse_text,
    read_text,
)

__all__ = [
    "VENDOR_ID",
    "BlocklistError",
    "check_paths",
    "load_blocklist",
    "load_blocklists",
    "shipped_blocklist_dir",
]

#: Far above any real list (100k indicators is ~4 MB) but stops an accidental multi-GB file.
MAX_FILE_BYTES = 64 * 1024 * 1024

#: The composer's reader; a module attribute so tests can swap in the pure-Python one.
_YAML_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_LIST_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
#: Vendor ids as events and approvals files name them.
VENDOR_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_GLOB_LABEL = re.compile(r"[a-z0-9_*-]{1,63}")

_TOP_KEYS = ("list", "version", "description", "vendors")
_TOP_REQUIRED = ("list", "version", "vendors")
_VENDOR_KEYS = ("id", "name", "category", "severity", "references", "notes", "indicators")
_VENDOR_REQUIRED = ("id", "name", "category", "severity", "references", "indicators")
_INDICATOR_KEYS = (*INDICATOR_KINDS, "severity", "shared", "note")


class BlocklistError(ConfigError):
    """A blocklist problem, located as FILE:LINE so editors and CI logs can jump to it."""


_KIND = FileKind(
    error=BlocklistError,
    document="a blocklist file",
    expected="a blocklist mapping",
    quote_example='wildcard: "*.example.com"',
)


class _FileParser(FileParser):
    """Walks one composed blocklist; the shared strict accessors plus the blocklist schema."""

    error_type = BlocklistError

    def document(self, root: yaml.Node) -> tuple[Blocklist, int]:
        top = self.mapping(root, "the blocklist", _TOP_KEYS, _TOP_REQUIRED)
        name = self.string(top["list"], "list")
        if not _LIST_NAME.fullmatch(name):
            raise self.value_error(
                top["list"], f"list name {name!r} must match [a-z0-9][a-z0-9._-]*"
            )
        version = self.string(top["version"], "version")
        description = self.optional_string(top, "description", "description")
        vendor_nodes = self.sequence(top["vendors"], "vendors")

        vendors: list[Vendor] = []
        indicators: list[Indicator] = []
        vendor_lines: dict[str, int] = {}
        indicator_lines: dict[tuple[str, str], int] = {}
        for vendor_node in vendor_nodes:
            vendor, ind_nodes = self.vendor(vendor_node, vendor_lines)
            vendors.append(vendor)
            for ind_node in ind_nodes:
                ind = self.indicator(ind_node, vendor, name, version, indicator_lines)
                indicators.append(ind)
        blocklist = Blocklist(
            name=name,
            version=version,
            description=description,
            vendors=tuple(vendors),
            indicators=tuple(indicators),
            path=self.file,
        )
        return blocklist, top["list"][1].start_mark.line + 1

    def vendor(self, node: yaml.Node, seen: dict[str, int]) -> tuple[Vendor, list[yaml.Node]]:
        fields = self.mapping(node, "vendor", _VENDOR_KEYS, _VENDOR_REQUIRED)
        vendor_id = self.string(fields["id"], "vendor id")
        if not VENDOR_ID.fullmatch(vendor_id):
            raise self.value_error(
                fields["id"], f"vendor id {vendor_id!r} must match [a-z0-9][a-z0-9-]*"
            )
        id_line = fields["id"][1].start_mark.line + 1
        if vendor_id in seen:
            raise self.value_error(
                fields["id"], f"duplicate vendor id {vendor_id!r} (first on line {seen[vendor_id]})"
            )
        seen[vendor_id] = id_line
        name = self.string(fields["name"], "vendor name")
        category = self.choice(fields["category"], "category", CATEGORIES)
        severity = self.choice(fields["severity"], "severity", SEVERITY_LEVELS)
        references: list[str] = []
        for ref_node in self.sequence(fields["references"], "references"):
            ref = self.string((ref_node, ref_node), "reference")
            try:
                parts = urlsplit(ref)
            except ValueError:  # e.g. an unbalanced "[" in the host part
                parts = urlsplit("")
            if parts.scheme not in ("http", "https") or not parts.netloc or " " in ref:
                raise self.error(ref_node, f"reference {ref!r} is not an http(s) URL")
            references.append(ref)
        vendor = Vendor(
            id=vendor_id,
            name=name,
            category=category,
            severity=severity,
            references=tuple(references),
            notes=self.optional_string(fields, "notes", "notes"),
        )
        return vendor, self.sequence(fields["indicators"], "indicators")

    def indicator(
        self,
        node: yaml.Node,
        vendor: Vendor,
        list_name: str,
        list_version: str,
        seen: dict[tuple[str, str], int],
    ) -> Indicator:
        if isinstance(node, yaml.ScalarNode):
            raise self.error(
                node,
                f"indicator {node.value!r} must say what it is, e.g. '- domain: {node.value}'",
            )
        fields = self.mapping(node, "indicator", _INDICATOR_KEYS, ())
        kinds = [k for k in INDICATOR_KINDS if k in fields]
        if len(kinds) != 1:
            found = f"got {' and '.join(kinds)}" if kinds else "got none"
            raise self.error(
                node, f"indicator needs exactly one of domain/host/wildcard/cidr/ja4 ({found})"
            )
        kind = kinds[0]
        entry = fields[kind]
        raw = self.string(entry, kind)
        if kind in ("domain", "host"):
            value, problem = check_host_name(raw)
        elif kind == "wildcard":
            value, problem = check_wildcard(raw)
        elif kind == "ja4":
            value, problem = check_ja4(raw)
        else:
            value, problem = check_cidr(raw)
        if problem is not None or value is None:
            raise self.value_error(entry, f"invalid {kind} {raw!r}: {problem}")
        line = entry[1].start_mark.line + 1
        first = seen.get((kind, value))
        if first is not None:
            raise self.value_error(
                entry, f"duplicate indicator {kind} {value} (first on line {first})"
            )
        seen[(kind, value)] = line

        severity = vendor.severity
        if "severity" in fields:
            severity = self.choice(fields["severity"], "severity", SEVERITY_LEVELS)
        shared = False
        if "shared" in fields:
            shared = self.boolean(fields["shared"], "shared")
        return Indicator(
            kind=kind,
            value=value,
            vendor=vendor,
            severity=severity,
            shared=shared,
            note=self.optional_string(fields, "note", "note"),
            list_name=list_name,
            list_version=list_version,
            file=self.file,
            line=line,
        )


# -- indicator value checks ---------------------------------------------------------------
# Public so that other tools (e.g. an editor plugin or the CLI) give the same verdicts.


def check_host_name(raw: str) -> tuple[str | None, str | None]:
    """Validate a domain/host indicator; returns (normalised value, None) or (None, problem)."""
    if "://" in raw or "/" in raw:
        return None, "looks like a URL; give only the host name, e.g. 'clearview.ai'"
    if "*" in raw:
        return None, "contains '*'; use 'wildcard:' for patterns"
    if any(ch.isspace() for ch in raw):
        return None, "contains whitespace"
    if ":" in raw:
        if _is_ip(raw):
            return None, "is an IP address; use 'cidr:' for addresses"
        return None, "contains ':'; give the host name without a port"
    value = normalize_name(raw)
    if value is None:
        return None, (
            "not a valid host name (empty label, label over 63 characters, name over "
            f"{MAX_NAME_LENGTH} characters, or characters IDNA cannot encode)"
        )
    if _is_ip(value):
        return None, "is an IP address; use 'cidr:' for addresses"
    labels = value.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            return None, (
                f"label {label!r} must be letters, digits, '-' and '_' and must not start or "
                "end with '-'"
            )
    if len(labels) < 2:
        return None, "a single label would cover a whole top-level domain; give at least two"
    if labels[-1].isdigit():
        return None, "the top-level label must not be numeric"
    return value, None


def check_wildcard(raw: str) -> tuple[str | None, str | None]:
    """Validate a wildcard; '*' is allowed in the leftmost label only (see README)."""
    if "*" not in raw:
        return None, "has no '*'; use 'host:' or 'domain:' for exact names"
    if any(ch.isspace() for ch in raw):
        return None, "contains whitespace"
    first, dot, rest = raw.partition(".")
    if not dot or not rest or rest == ".":
        return None, "needs a fixed suffix after the '*' label, e.g. '*.example.com'"
    if "*" in rest:
        return None, "'*' is only allowed in the leftmost label"
    first = first.lower()
    if not first.isascii() or not _GLOB_LABEL.fullmatch(first):
        return None, "the wildcard label may only contain letters, digits, '-', '_' and '*'"
    suffix, problem = check_host_name(rest)
    if problem is not None or suffix is None:
        return None, f"suffix {rest!r}: {problem}"
    value = f"{first}.{suffix}"
    if len(value) > MAX_NAME_LENGTH:
        return None, f"longer than {MAX_NAME_LENGTH} characters"
    return value, None


_JA4 = re.compile(
    r"[tqd](?:13|12|11|10|s3|s2|d1|d2|d3|00)[di]\d{2}\d{2}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}"
)


def check_ja4(raw: str) -> tuple[str | None, str | None]:
    """A JA4 fingerprint (FoxIO spec): ``t13d1516h2_8daaf6152771_e5627efa2ab1``."""
    value = raw.strip().lower()
    if not _JA4.fullmatch(value):
        return None, "is not a JA4 fingerprint like t13d1516h2_8daaf6152771_e5627efa2ab1"
    return value, None


def check_cidr(raw: str) -> tuple[str | None, str | None]:
    """Validate a CIDR; a bare address is accepted as a single-host network."""
    try:
        network = ipaddress.ip_network(raw.strip(), strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(raw.strip(), strict=False)
        except ValueError:
            return None, f"not an IPv4 or IPv6 network ({exc})"
        return None, f"host bits are set; did you mean {loose}?"
    if network.prefixlen == 0:
        return None, "a /0 network would match every address"
    return str(network), None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# -- files ---------------------------------------------------------------------------------


def _load(path: str | os.PathLike[str]) -> tuple[Blocklist, int]:
    """Load one file; also returns the line of its ``list:`` value for cross-file errors."""
    file = os.fspath(path)
    text = read_text(file, error=BlocklistError, max_bytes=MAX_FILE_BYTES)
    root = parse_text(text, file, kind=_KIND, yaml_loader=_YAML_LOADER)
    return _FileParser(file).document(root)


def _compose(text: str, file: str) -> yaml.Node | None:
    """The shared bounded composer with this module's reader and wording (tests compare it
    with ``yaml.compose``)."""
    return compose_text(text, file, kind=_KIND, yaml_loader=_YAML_LOADER)


def load_blocklist(path: str | os.PathLike[str]) -> Blocklist:
    """Load and validate one blocklist file; raises BlocklistError on the first problem."""
    return _load(path)[0]


def _expand(path: str | os.PathLike[str]) -> list[str]:
    file = os.fspath(path)
    p = Path(file)
    if p.is_dir():
        found = sorted(
            os.path.join(file, child.name)
            for child in p.iterdir()
            if child.suffix in (".yaml", ".yml")
            and not child.name.startswith(".")
            and child.is_file()
        )
        if not found:
            raise BlocklistError(file, None, "no *.yaml or *.yml blocklists in this directory")
        return found
    if not p.exists():
        raise BlocklistError(file, None, "no such file or directory")
    return [file]


def _unique_files(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Expand directories; a file reached twice (dir and file both given) is loaded once."""
    files: list[str] = []
    seen: set[Path] = set()
    for path in paths:
        for file in _expand(path):
            resolved = Path(file).resolve()
            if resolved not in seen:
                seen.add(resolved)
                files.append(file)
    return files


def load_blocklists(paths: Iterable[str | os.PathLike[str]]) -> Matcher:
    """Load files and directories (their *.yaml/*.yml, sorted by name) into one Matcher.

    Order matters only for overlaps: the first list to define an indicator wins, and the
    clash lands in ``Matcher.warnings``.  Two lists with the same name are an error, because
    events identify a list by name and version.
    """
    files = _unique_files(paths)
    if not files:
        raise BlocklistError("<blocklists>", None, "no blocklist files given")
    loaded: list[Blocklist] = []
    names: dict[str, str] = {}
    for file in files:
        blocklist, name_line = _load(file)
        if blocklist.name in names:
            raise BlocklistError(
                file,
                name_line,
                f"list name {blocklist.name!r} is already used by {names[blocklist.name]}",
            )
        names[blocklist.name] = file
        loaded.append(blocklist)
    return Matcher(loaded)


def shipped_blocklist_dir() -> Path:
    """Where the lists shipped with the package live.

    Installed: package data of ``monitor.shipped_blocklists``.  Running from a checkout (or an
    editable install made before that mapping existed): the repository's ``blocklists/``.
    """
    candidates: list[Path] = []
    try:
        root = importlib.resources.files("monitor.shipped_blocklists")
        if isinstance(root, Path):
            candidates.append(root)
    except (ImportError, TypeError, ValueError):
        pass
    try:
        spec = importlib.util.find_spec("monitor.shipped_blocklists")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(loc) for loc in spec.submodule_search_locations)
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.y*ml")):
            return candidate
    return Path(__file__).resolve().parents[2] / "blocklists"


def check_paths(paths: list[str], out: TextIO) -> int:
    """Validate blocklist files for ``egress-monitor blocklist check``; returns the exit code.

    Keeps going after a bad file so one run reports every broken file.  With no paths it
    checks the shipped lists.  Cross-list overlaps are printed as warnings and do not fail.
    """
    if not paths:
        paths = [str(shipped_blocklist_dir())]
    status = 0
    loaded: list[tuple[Blocklist, int]] = []
    seen: set[Path] = set()
    for path in paths:
        try:
            files = _expand(path)
        except BlocklistError as exc:
            print(exc, file=out)
            status = 1
            continue
        for file in files:
            resolved = Path(file).resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            try:
                blocklist, name_line = _load(file)
            except BlocklistError as exc:
                print(exc, file=out)
                status = 1
                continue
            print(
                f"OK {file}: list {blocklist.name} version {blocklist.version}, "
                f"{len(blocklist.vendors)} vendors, {len(blocklist.indicators)} indicators",
                file=out,
            )
            loaded.append((blocklist, name_line))
    names: dict[str, str] = {}
    unique: list[Blocklist] = []
    for blocklist, name_line in loaded:
        if blocklist.name in names:
            print(
                BlocklistError(
                    blocklist.path,
                    name_line,
                    f"list name {blocklist.name!r} is already used by {names[blocklist.name]}",
                ),
                file=out,
            )
            status = 1
            continue
        names[blocklist.name] = blocklist.path
        unique.append(blocklist)
    if unique:
        for warning in Matcher(unique).warnings:
            print(warning, file=out)
    return status
