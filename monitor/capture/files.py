"""Capture files as a frame source for replay, with or without the BPF prefilter."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from monitor.capture.pcapfile import (
    CaptureFormatError,
    Frame,
    ReaderStats,
    peek_link_type,
    read_frames,
)
from monitor.capture.prefilter import (
    FilterPart,
    PortConfig,
    PrefilterUnavailable,
    build_filter,
    filtered_stream,
)
from monitor.decode.packet import LINKTYPE_ETHERNET

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp")


def expand_capture_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; directories walked recursively for capture files, in sorted order."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in CAPTURE_SUFFIXES)
            )
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return out


@dataclass(slots=True)
class ReplayStats:
    files: int = 0
    frames: int = 0
    bytes: int = 0
    prefiltered_files: int = 0
    unfiltered_files: int = 0
    warnings: list[str] = field(default_factory=list)


def replay_frames(
    paths: list[Path], prefilter: PortConfig | None, stats: ReplayStats
) -> Iterator[Frame]:
    """Frames of every file in turn; with prefilter ports, through tcpdump and its BPF filter.

    When tcpdump is missing or cannot read a file (libpcap refuses a pcapng whose interfaces have
    different link types), that file is read whole in Python instead, with a warning: slower,
    never blind.
    """
    for path in paths:
        stats.files += 1
        rstats = ReaderStats()
        if prefilter is not None:
            yielded = 0
            try:
                with filtered_stream(path, filter_for_file(path, prefilter)) as stream:
                    for frame in read_frames(stream, rstats):
                        yielded += 1
                        yield frame
                stats.prefiltered_files += 1
                account_reader(stats, rstats, path)
                continue
            except (PrefilterUnavailable, CaptureFormatError) as exc:
                account_reader(stats, rstats, path)
                if yielded:
                    stats.prefiltered_files += 1
                    stats.warnings.append(partial_read_warning(path, exc))
                    continue
                stats.warnings.append(f"{path}: prefilter unavailable ({exc}); reading all packets")
                rstats = ReaderStats()
        stats.unfiltered_files += 1
        with open(path, "rb") as f:
            try:
                yield from read_frames(f, rstats)
            except CaptureFormatError as exc:
                stats.warnings.append(f"{path}: {exc}")
        account_reader(stats, rstats, path)


def filter_for_file(path: Path, ports: PortConfig, part: FilterPart = "all") -> str:
    """The prefilter expression for one file: with the VLAN clauses only where libpcap allows
    them, on Ethernet (or an unknown link type: try)."""
    vlan = peek_link_type(str(path)) in (None, LINKTYPE_ETHERNET)
    return build_filter(ports, vlan=vlan, part=part)


def partial_read_warning(path: Path, exc: Exception) -> str:
    """Part of the file went through already (usually the tail is truncated); re-reading it
    would report those packets twice, so the warning says what was lost."""
    return (
        f"{path}: {exc}; packets after that point were not read "
        "(re-run this file with --no-prefilter if the file is not truncated)"
    )


def account_reader(stats: ReplayStats, rstats: ReaderStats, path: Path) -> None:
    """Add one file's reader counts to the replay's, with a warning for a cut-off file."""
    stats.frames += rstats.records
    stats.bytes += rstats.bytes
    if rstats.truncated_tail:
        stats.warnings.append(f"{path}: file ends in the middle of a record (truncated capture)")
