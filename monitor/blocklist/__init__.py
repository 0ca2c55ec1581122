"""Versioned vendor blocklists: loading, validation and name/address matching.

See blocklists/README.md for the file format and the matching rules.
"""

from monitor.blocklist.loader import (
    BlocklistError,
    check_paths,
    load_blocklist,
    load_blocklists,
    shipped_blocklist_dir,
)
from monitor.blocklist.matcher import Matcher
from monitor.blocklist.model import (
    ECS_SEVERITY,
    SEVERITY_LEVELS,
    SEVERITY_NUMBERS,
    Blocklist,
    Indicator,
    Match,
    Vendor,
)
from monitor.blocklist.names import normalize_name

__all__ = [
    "ECS_SEVERITY",
    "SEVERITY_LEVELS",
    "SEVERITY_NUMBERS",
    "Blocklist",
    "BlocklistError",
    "Indicator",
    "Match",
    "Matcher",
    "Vendor",
    "check_paths",
    "load_blocklist",
    "load_blocklists",
    "normalize_name",
    "shipped_blocklist_dir",
]
