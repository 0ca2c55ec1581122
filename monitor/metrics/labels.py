"""Label values that can never carry a person, a host name or an address.

Metrics leave the sensor with far less care than events (dashboards, long retention, remote
write to shared Prometheus servers), so they must be free of personal data by construction. The
exporter's labels only ever take values from closed sets or from identifiers the operator wrote
in configuration (interface, sink, blocklist names). Those identifiers still pass a guard here:
a daemon bug that keys a dict by a client address, a user or a workstation name must show up as
``redacted`` on a dashboard, not as a new time series per person (which would also be a
cardinality explosion). Values that are merely malformed become ``invalid``.
"""

from __future__ import annotations

import re

REDACTED = "redacted"
INVALID = "invalid"
OTHER = "other"

SEVERITIES = frozenset({"low", "medium", "high", "critical"})

#: How the attribution stage ended for one detection: the evidence source that named the
#: client (as in the event's ``attribution.source``), or why none did. A closed set, so that an
#: upstream bug can never turn a user name into a label; anything else is counted as "other".
#: Extend it here when the attribution stage grows a new outcome.
ATTRIBUTION_OUTCOMES = frozenset(
    {
        "dhcp",
        "kerberos",
        "ntlm",
        "inventory",
        "lease-file",
        "unattributed",  # no evidence for the client at all
        "stale",  # evidence older than the configured maximum age
        "conflict",  # sources disagree; the event carries no identity
        "disabled",  # attribution switched off in the configuration
        "error",
    }
)

#: Why an alert's evidence file was not written (see monitor.alerts.evidence.EvidenceStats).
EVIDENCE_FAILURE_REASONS = frozenset(
    {
        "rate-limited",  # max_files_per_minute reached
        "too-large",  # one file would exceed the directory's byte cap
        "write-error",  # the file system refused (full disk, permissions)
        "no-packets",  # no packet of the alert's flows was held (e.g. started before the sensor)
    }
)

_MAX_LEN = 64
_ALLOWED = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]*")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9-]*")  # vendor ids, protocols: no dots, no colons
_LIST_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")  # as the blocklist loader accepts
# Versions start with a digit (dates, semver): "alice@PD" or "bob@pd.example.org" never pass.
_VERSION = re.compile(r"[vV]?[0-9][A-Za-z0-9._+-]*")

# Conservative on purpose: a false positive costs a "redacted" label, a false negative a leak.
_IPV4ISH = re.compile(r"(?<![0-9])[0-9]{1,3}(?:[.\-_][0-9]{1,3}){3}(?![0-9])")
_COLONISH = re.compile(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,}")  # IPv6, MAC
_DASHED_MAC = re.compile(r"[0-9A-Fa-f]{2}(?:[-.][0-9A-Fa-f]{2}){5}")
_HOSTNAMEISH = re.compile(r"\.[A-Za-z][A-Za-z0-9-]*")  # "ws01.pd.example", not "eth1.100"


def _addressish(value: str) -> bool:
    return bool(
        _IPV4ISH.search(value)
        or _COLONISH.search(value)
        or _DASHED_MAC.search(value)
        or "\\" in value  # DOMAIN\user
    )


def looks_personal(value: str) -> bool:
    """True for anything shaped like an address, an account or a host name."""
    return _addressish(value) or "@" in value or bool(_HOSTNAMEISH.search(value))


def _free_form(value: str) -> str:
    if "\\" in value or looks_personal(value):
        return REDACTED
    if len(value) > _MAX_LEN or not _ALLOWED.fullmatch(value):
        return INVALID
    return value


def interface_label(name: str) -> str:
    """A capture interface name from the configuration (eth1, ens1f0, bond0.100)."""
    return _free_form(name)


def sink_label(name: str) -> str:
    """A sink's configured name (``file``, ``siem``); never its URL or address."""
    return _free_form(name)


def token_label(value: str) -> str:
    """Vendor ids and protocol names: lower-case tokens as the blocklist schema defines them."""
    if looks_personal(value):
        return REDACTED
    if len(value) > _MAX_LEN or not _TOKEN.fullmatch(value):
        return INVALID
    return value


def severity_label(value: str) -> str:
    return value if value in SEVERITIES else OTHER


def outcome_label(value: str) -> str:
    return value if value in ATTRIBUTION_OUTCOMES else OTHER


def evidence_reason_label(value: str) -> str:
    return value if value in EVIDENCE_FAILURE_REASONS else OTHER


def list_label(value: str) -> str:
    """``name@version`` of a blocklist, as in the event's ``match.list``."""
    name, sep, version = value.partition("@")
    if not sep:
        return REDACTED if looks_personal(value) else INVALID
    if (
        len(value) > 2 * _MAX_LEN
        or not _LIST_NAME.fullmatch(name)
        or not _VERSION.fullmatch(version)
        or _addressish(value)
        or _HOSTNAMEISH.search(value)
    ):
        # It has an "@" and is not a list@version: treat it as an account.
        return REDACTED
    return value
