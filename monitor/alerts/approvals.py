"""Sanctioned use: approvals that turn a vendor access from an alert into a recorded, cited use.

Some use of these services may be lawful -- a case, a warrant, a named approver.  Such access
must not page the SOC, but it must not vanish either: it is recorded with the approval's
reference so an auditor can tie every sanctioned search to a case file.  Anything an approval
does not cover (another person, another vendor, before it starts, after it ends) is treated as
unsanctioned, so a mistake in this file errs towards alerting.

Validity is half-open: ``valid_from <= t < valid_until``.  A bare date means midnight at the
start of that day in the file's ``timezone`` (UTC if none), so ``valid_until: 2026-02-01``
covers all of January 31 and nothing of February 1.  Date-times must carry a UTC offset,
because a time without one means different instants on different sensors.

Approvals name people (``users``) and machines (``workstations``), never IP addresses: DHCP
hands an address to someone else tomorrow, so an address-based approval would sanction a
stranger.  An approval for a workstation covers whoever uses it (e.g. a forensic terminal).

The file is read with the line-preserving YAML layer the blocklists use
(:mod:`monitor.config.yamlsource`), so every error reads FILE:LINE just like blocklist errors.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from monitor.blocklist.loader import VENDOR_ID
from monitor.config.yamlsource import (
    ConfigError,
    Entry,
    FileKind,
    FileParser,
    describe,
    parse_text,
    read_text,
)

__all__ = [
    "ALL_VENDORS",
    "Approval",
    "ApprovalLookup",
    "Approvals",
    "ApprovalsError",
    "load_approvals",
    "parse_approvals",
]

#: The ``vendors`` value that covers every vendor.
ALL_VENDORS = "*"

_TOP_KEYS = ("timezone", "groups", "approvals")
_TOP_REQUIRED = ("approvals",)
_APPROVAL_KEYS = (
    "reference",
    "approver",
    "subjects",
    "vendors",
    "valid_from",
    "valid_until",
    "note",
)
_APPROVAL_REQUIRED = ("reference", "approver", "subjects", "vendors", "valid_from", "valid_until")
_SUBJECT_KEYS = ("users", "workstations", "groups")
_MEMBER_KEYS = ("users", "workstations")
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_STR = "tag:yaml.org,2002:str"
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


class ApprovalsError(ConfigError):
    """An approvals-file problem, located as FILE:LINE like blocklist errors."""


_KIND = FileKind(
    error=ApprovalsError,
    document="an approvals file",
    expected="'approvals:'",
    quote_example='vendors: "*"',
)


@dataclass(frozen=True, slots=True)
class Approval:
    """One approval; ``users``/``workstations`` are normalised and include group members."""

    reference: str
    approver: str
    users: frozenset[str]
    workstations: frozenset[str]
    groups: tuple[str, ...]
    #: None covers every vendor (``vendors: "*"``).
    vendors: frozenset[str] | None
    valid_from_us: int
    valid_until_us: int
    note: str | None
    line: int

    def covers_vendor(self, vendor: str) -> bool:
        return self.vendors is None or vendor in self.vendors

    def valid_at(self, ts_us: int) -> bool:
        return self.valid_from_us <= ts_us < self.valid_until_us


@dataclass(frozen=True, slots=True)
class ApprovalLookup:
    """``approval`` sanctions the access; ``related`` would have, at another time."""

    approval: Approval | None
    related: tuple[Approval, ...]


class Approvals:
    """An immutable, indexed set of approvals; reloading builds a new one for the caller to swap.

    Immutability is what makes "keep the last good version" trivial: a failed reload raises
    before anything is replaced.
    """

    __slots__ = ("_by_user", "_by_workstation", "digest", "entries", "path")

    def __init__(self, entries: Iterable[Approval], path: str = "", digest: str = "") -> None:
        self.entries: tuple[Approval, ...] = tuple(entries)
        self.path = path
        #: SHA-256 of the file text, so logs can say exactly which version was in force.
        self.digest = digest
        by_user: dict[str, list[int]] = {}
        by_ws: dict[str, list[int]] = {}
        for i, approval in enumerate(self.entries):
            for user in approval.users:
                by_user.setdefault(user, []).append(i)
            for ws in approval.workstations:
                by_ws.setdefault(ws, []).append(i)
        self._by_user = {k: tuple(v) for k, v in by_user.items()}
        self._by_workstation = {k: tuple(v) for k, v in by_ws.items()}

    @classmethod
    def empty(cls) -> Approvals:
        return cls(())

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(
        self,
        *,
        vendor: str,
        ts_us: int,
        user: str | None = None,
        user_domain: str | None = None,
        workstation: str | None = None,
    ) -> ApprovalLookup:
        """Find the approval (first in file order) covering this access, if any.

        An approval user written ``DOMAIN\\name`` only matches that domain; a bare ``name``
        matches the name in any domain.
        """
        indices: set[int] = set()
        for key in _user_keys(user, user_domain):
            indices.update(self._by_user.get(key, ()))
        if workstation:
            indices.update(self._by_workstation.get(normalize_workstation(workstation), ()))
        if not indices:
            return ApprovalLookup(None, ())
        related: list[Approval] = []
        for i in sorted(indices):
            approval = self.entries[i]
            if not approval.covers_vendor(vendor):
                continue
            if approval.valid_at(ts_us):
                return ApprovalLookup(approval, ())
            related.append(approval)
        return ApprovalLookup(None, tuple(related))


def normalize_user(name: str) -> str:
    """Account names compare case-insensitively, as Windows and Kerberos realms treat them."""
    return name.strip().casefold()


def normalize_workstation(name: str) -> str:
    return name.strip().rstrip(".").casefold()


def _user_keys(user: str | None, domain: str | None) -> list[str]:
    if not user:
        return []
    if "\\" in user:  # the name itself came as DOMAIN\name
        domain, _, user = user.rpartition("\\")
    name = normalize_user(user)
    keys = [name]
    if domain:
        keys.append(f"{normalize_user(domain)}\\{name}")
    return keys


class _ApprovalsParser(FileParser):
    """The shared strict accessors, plus the approvals schema."""

    error_type = ApprovalsError

    def __init__(self, file: str, known_vendors: Collection[str] | None) -> None:
        super().__init__(file)
        self.known_vendors = None if known_vendors is None else frozenset(known_vendors)
        self.zone: ZoneInfo | None = None

    def list_of(self, entry: Entry, what: str) -> list[yaml.Node]:
        """Like ``sequence`` but an explicitly empty list (``[]``) is allowed."""
        _, value = entry
        if isinstance(value, yaml.SequenceNode) and not value.value:
            return []
        return self.sequence(entry, what)

    def names(self, entry: Entry, what: str) -> list[str]:
        out: list[str] = []
        for node in self.sequence(entry, what):
            text = self.string((node, node), what)
            if any(ch.isspace() for ch in text.strip()) or not text.strip():
                raise self.error(node, f"{what} entry {text!r} must be a single name")
            out.append(text)
        return out

    def approvals_document(self, root: yaml.Node) -> tuple[Approval, ...]:
        top = self.mapping(root, "the approvals file", _TOP_KEYS, _TOP_REQUIRED)
        if "timezone" in top:
            tz_name = self.string(top["timezone"], "timezone")
            try:
                self.zone = ZoneInfo(tz_name)
            except (ZoneInfoNotFoundError, ValueError):
                raise self.value_error(top["timezone"], f"unknown time zone {tz_name!r}") from None
        groups = self.groups(top["groups"]) if "groups" in top else {}
        approvals: list[Approval] = []
        seen: dict[str, int] = {}
        for node in self.list_of(top["approvals"], "approvals"):
            approval = self.approval(node, groups, seen)
            approvals.append(approval)
        return tuple(approvals)

    def groups(self, entry: Entry) -> dict[str, tuple[frozenset[str], frozenset[str], int]]:
        _, node = entry
        if not isinstance(node, yaml.MappingNode):
            raise self.value_error(
                entry, f"groups must map group names to members, got {describe(node)}"
            )
        groups: dict[str, tuple[frozenset[str], frozenset[str], int]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag != _STR or not key.value.strip():
                raise self.error(key, "a group name must be a plain name")
            name = key.value
            if name in groups:
                raise self.error(key, f"duplicate group {name!r} (first on line {groups[name][2]})")
            members = self.mapping(value, f"group {name!r}", _MEMBER_KEYS, ())
            if not members:
                raise self.error(value, f"group {name!r} needs users or workstations")
            users = self.names(members["users"], "users") if "users" in members else []
            hosts = (
                self.names(members["workstations"], "workstations")
                if "workstations" in members
                else []
            )
            groups[name] = (
                frozenset(normalize_user(u) for u in users),
                frozenset(normalize_workstation(h) for h in hosts),
                key.start_mark.line + 1,
            )
        return groups

    def approval(
        self,
        node: yaml.Node,
        groups: dict[str, tuple[frozenset[str], frozenset[str], int]],
        seen: dict[str, int],
    ) -> Approval:
        fields = self.mapping(node, "approval", _APPROVAL_KEYS, _APPROVAL_REQUIRED)
        reference = self.string(fields["reference"], "reference").strip()
        line = fields["reference"][1].start_mark.line + 1
        if reference in seen:
            raise self.value_error(
                fields["reference"],
                f"duplicate reference {reference!r} (first on line {seen[reference]})",
            )
        seen[reference] = line
        approver = self.string(fields["approver"], "approver").strip()

        subjects = self.mapping(fields["subjects"][1], "subjects", _SUBJECT_KEYS, ())
        if not subjects:
            raise self.value_error(
                fields["subjects"], "subjects needs at least one of users, workstations, groups"
            )
        users = (
            {normalize_user(u) for u in self.names(subjects["users"], "users")}
            if ("users" in subjects)
            else set()
        )
        hosts = (
            {normalize_workstation(h) for h in self.names(subjects["workstations"], "workstations")}
            if "workstations" in subjects
            else set()
        )
        group_names: list[str] = []
        if "groups" in subjects:
            for gnode in self.sequence(subjects["groups"], "groups"):
                gname = self.string((gnode, gnode), "group")
                if gname not in groups:
                    hint = difflib.get_close_matches(gname, list(groups), n=1)
                    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                    raise self.error(
                        gnode, f"group {gname!r} is not defined under 'groups:'{suggestion}"
                    )
                group_names.append(gname)
                users |= groups[gname][0]
                hosts |= groups[gname][1]

        vendors = self.vendors(fields["vendors"])
        valid_from = self.instant(fields["valid_from"], "valid_from")
        valid_until = self.instant(fields["valid_until"], "valid_until")
        if valid_until <= valid_from:
            raise self.value_error(fields["valid_until"], "valid_until must be after valid_from")
        return Approval(
            reference=reference,
            approver=approver,
            users=frozenset(users),
            workstations=frozenset(hosts),
            groups=tuple(group_names),
            vendors=vendors,
            valid_from_us=valid_from,
            valid_until_us=valid_until,
            note=self.optional_string(fields, "note", "note"),
            line=line,
        )

    def vendors(self, entry: Entry) -> frozenset[str] | None:
        _, value = entry
        if isinstance(value, yaml.ScalarNode) and value.value == ALL_VENDORS:
            return None
        ids: set[str] = set()
        nodes = self.sequence(entry, "vendors")
        for vnode in nodes:
            vid = self.string((vnode, vnode), "vendor")
            if vid == ALL_VENDORS:
                if len(nodes) > 1:
                    raise self.error(vnode, "'*' covers every vendor; list it alone")
                return None
            if not VENDOR_ID.fullmatch(vid):
                raise self.error(vnode, f"vendor id {vid!r} must match [a-z0-9][a-z0-9-]*")
            if self.known_vendors is not None and vid not in self.known_vendors:
                hint = difflib.get_close_matches(vid, sorted(self.known_vendors), n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                raise self.error(vnode, f"vendor {vid!r} is in no loaded blocklist{suggestion}")
            ids.add(vid)
        return frozenset(ids)

    def instant(self, entry: Entry, what: str) -> int:
        """An RFC 3339 date-time with offset, or a date (midnight in the file's zone)."""
        _, value = entry
        if not isinstance(value, yaml.ScalarNode) or value.tag not in (_STR, _TIMESTAMP):
            raise self.value_error(
                entry, f"{what} must be a date or an RFC 3339 time, got {describe(value)}"
            )
        text = value.value.strip()
        try:
            moment = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise self.value_error(
                entry, f"{what} {text!r} is not a date (YYYY-MM-DD) or an RFC 3339 time"
            ) from None
        if _DATE_ONLY.fullmatch(text):
            moment = moment.replace(tzinfo=self.zone or UTC)
        elif moment.tzinfo is None:
            raise self.value_error(
                entry,
                f"{what} {text!r} needs a UTC offset (e.g. 'Z' or '+01:00'), or give just a date",
            )
        try:
            return (moment - _EPOCH) // _ONE_US
        except OverflowError:  # pragma: no cover - only years 1 and 9999 with offsets
            raise self.value_error(entry, f"{what} {text!r} is out of range") from None


def parse_approvals(
    text: str,
    file: str = "<approvals>",
    known_vendors: Collection[str] | None = None,
) -> Approvals:
    """Parse approvals YAML text; raises ApprovalsError (FILE:LINE) on the first problem."""
    root = parse_text(text, file, kind=_KIND)
    entries = _ApprovalsParser(file, known_vendors).approvals_document(root)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Approvals(entries, path=file, digest=digest)


def load_approvals(
    path: str | os.PathLike[str], known_vendors: Collection[str] | None = None
) -> Approvals:
    """Load an approvals file; on any problem raises ApprovalsError and changes nothing.

    Pass the vendor ids of the loaded blocklists as ``known_vendors`` to catch typos in
    ``vendors:`` -- a misspelt vendor would otherwise sanction nothing and alert silently.
    """
    file = os.fspath(path)
    text = read_text(file, error=ApprovalsError)
    return parse_approvals(text, file, known_vendors)
