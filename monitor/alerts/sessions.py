"""Sessions: one page visit is one use, however many packets and protocols it took.

Opening a face-search page is a DNS query, two or three TLS connections and perhaps a QUIC
flow, all within seconds.  Counting those as five uses would make reports meaningless and
punish browsers that open parallel connections, so events of the same subject and vendor are
grouped until the subject has been idle longer than the gap (packet time, never the wall
clock, so a replay gives the same sessions as the live run did).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["SessionKey", "SessionTracker", "stable_id"]

#: (subject type, subject id, vendor id)
SessionKey = tuple[str, str, str]


def stable_id(namespace: str, key: SessionKey, start_us: int) -> str:
    """Stable across runs and sensors: derived only from who, which vendor and when it began.

    ``namespace`` keeps a session and the alert window that starts with it from sharing an
    id; JSON encoding keeps ("a|b", "c") and ("a", "b|c") apart.
    """
    text = json.dumps([namespace, *key, start_us], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(slots=True)
class _Session:
    id: str
    start_us: int
    last_us: int


class SessionTracker:
    """Bounded map of live sessions; the least recently touched is evicted when full.

    Eviction only ever splits a session in two (the next event starts a new one), so the
    worst a flood can do is inflate a session count -- and ``evicted`` says so.
    """

    __slots__ = ("_live", "evicted", "gap_us", "max_sessions")

    def __init__(self, gap_us: int, max_sessions: int) -> None:
        if gap_us < 0 or max_sessions < 1:
            raise ValueError("gap must be >= 0 and max_sessions >= 1")
        self.gap_us = gap_us
        self.max_sessions = max_sessions
        self.evicted = 0
        self._live: OrderedDict[SessionKey, _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live)

    def touch(self, key: SessionKey, ts_us: int) -> tuple[str, bool]:
        """The session ``ts_us`` belongs to, and whether it starts one.

        An idle gap of exactly ``gap_us`` still continues the session; only a longer one
        starts a new session.  Events slightly out of order (older than the last one) stay
        in the current session rather than forking a new one.
        """
        session = self._live.get(key)
        if session is not None and ts_us - session.last_us <= self.gap_us:
            session.last_us = max(session.last_us, ts_us)
            self._live.move_to_end(key)
            return session.id, False
        if session is not None:
            del self._live[key]
        self.expire(ts_us)
        while len(self._live) >= self.max_sessions:
            self._live.popitem(last=False)
            self.evicted += 1
        new = _Session(stable_id("session", key, ts_us), ts_us, ts_us)
        self._live[key] = new
        return new.id, True

    def expire(self, now_us: int) -> int:
        """Forget sessions idle for longer than the gap; returns how many were dropped.

        Walks from the least recently touched and stops at the first live one, so the cost
        is proportional to what is dropped.
        """
        dropped = 0
        while self._live:
            key, session = next(iter(self._live.items()))
            if now_us - session.last_us <= self.gap_us:
                break
            del self._live[key]
            dropped += 1
        return dropped

    def clear(self) -> None:
        self._live.clear()
