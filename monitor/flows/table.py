"""Bounded flow table: a cap on entries and an idle timeout, evictions counted.

A SYN flood or a port scan on a mirror port creates flows faster than they end; the table must
cost a counter then, not memory. Eviction is oldest-first by insertion (a dict keeps insertion
order), and touched entries are not reordered on every packet because that would cost more than
it saves: the idle sweep, run once per ``sweep_interval`` of packet time, removes the stale ones.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class HasLastSeen(Protocol):
    last_seen: int


V = TypeVar("V", bound=HasLastSeen)


@dataclass(slots=True)
class TableStats:
    created: int = 0
    evicted: int = 0  # removed because the table was full
    expired: int = 0  # removed because idle for longer than the timeout


class FlowTable(Generic[V]):
    __slots__ = (
        "entries",
        "idle_timeout_ns",
        "max_entries",
        "next_sweep",
        "stats",
        "sweep_interval_ns",
    )

    def __init__(
        self, max_entries: int, idle_timeout_s: float, sweep_interval_s: float = 5.0
    ) -> None:
        self.entries: dict[Hashable, V] = {}
        self.max_entries = max_entries
        self.idle_timeout_ns = int(idle_timeout_s * 1e9)
        self.sweep_interval_ns = int(sweep_interval_s * 1e9)
        self.next_sweep = 0
        self.stats = TableStats()

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[V]:
        return iter(self.entries.values())

    def get(self, key: Hashable) -> V | None:
        return self.entries.get(key)

    def add(self, key: Hashable, value: V) -> None:
        entries = self.entries
        if len(entries) >= self.max_entries and key not in entries:
            del entries[next(iter(entries))]
            self.stats.evicted += 1
        entries[key] = value
        self.stats.created += 1

    def remove(self, key: Hashable) -> None:
        self.entries.pop(key, None)

    def tick(self, now_ns: int) -> None:
        """Expire idle entries; cheap to call per packet, it only works once per interval."""
        if now_ns < self.next_sweep:
            return
        self.next_sweep = now_ns + self.sweep_interval_ns
        limit = now_ns - self.idle_timeout_ns
        stale = [k for k, v in self.entries.items() if v.last_seen < limit]
        for k in stale:
            del self.entries[k]
        self.stats.expired += len(stale)
