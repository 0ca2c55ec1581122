"""Session tracking: idle gaps in packet time split sessions; state stays bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from monitor.alerts.sessions import SessionTracker, stable_id

S = 1_000_000
KEY = ("user", "alice", "pimeyes")


def test_an_event_slightly_out_of_order_stays_in_the_current_session() -> None:
    tracker = SessionTracker(gap_us=120 * S, max_sessions=10)
    first, new = tracker.touch(KEY, 1000 * S)
    assert new
    assert tracker.touch(KEY, 1050 * S) == (first, False)
    assert tracker.touch(KEY, 1040 * S) == (first, False)
    # The gap counts from the latest event seen, not from the late one.
    assert tracker.touch(KEY, 1170 * S) == (first, False)


def test_expiry_forgets_only_idle_sessions() -> None:
    tracker = SessionTracker(gap_us=120 * S, max_sessions=10)
    tracker.touch(("user", "a", "v"), 0)
    tracker.touch(("user", "b", "v"), 100 * S)
    assert tracker.expire(150 * S) == 1
    assert len(tracker) == 1


def test_a_full_tracker_evicts_the_least_recently_active_and_counts_it() -> None:
    tracker = SessionTracker(gap_us=120 * S, max_sessions=2)
    a, _ = tracker.touch(("user", "a", "v"), 0)
    tracker.touch(("user", "b", "v"), 1)
    tracker.touch(("user", "a", "v"), 2)  # a is now the most recent
    tracker.touch(("user", "c", "v"), 3)
    assert tracker.evicted == 1
    assert tracker.touch(("user", "a", "v"), 4) == (a, False)


def test_ids_keep_apart_keys_that_would_collide_when_concatenated() -> None:
    assert stable_id("s", ("user", "a|b", "c"), 0) != stable_id("s", ("user", "a", "b|c"), 0)
    assert stable_id("session", KEY, 0) != stable_id("alert", KEY, 0)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**9)), max_size=200))
def test_the_tracker_never_holds_more_than_its_bound(steps: list[tuple[int, int]]) -> None:
    tracker = SessionTracker(gap_us=60 * S, max_sessions=3)
    for who, ts in steps:
        tracker.touch(("user", str(who), "v"), ts)
        assert len(tracker) <= 3
