"""Listen time: interval union arithmetic and the voice-state tracker, on a fake clock."""

from __future__ import annotations

import math

import pytest

from bot.core.listening import ListenInterval, ListenTracker, listened_seconds, union_seconds

G, G2 = 1, 2  # guild ids
A, B, C = 101, 102, 103  # member ids


def iv(track: int, member: int, start: float, end: float) -> ListenInterval:
    return ListenInterval(track, member, start, end)


# --- union_seconds ---------------------------------------------------------------------


def test_union_disjoint_intervals_add_up() -> None:
    # [0, 10] + [20, 25] = 10 + 5
    assert union_seconds([(0, 10), (20, 25)], 60) == 15.0


def test_union_overlapping_intervals_count_once() -> None:
    # [0, 10] u [5, 15] u [14, 20] = [0, 20] -> 20; unsorted input on purpose
    assert union_seconds([(14, 20), (0, 10), (5, 15)], 60) == 20.0


def test_union_touching_and_nested_intervals() -> None:
    # [0, 10] u [10, 12] = [0, 12]; [2, 3] inside it adds nothing -> 12
    assert union_seconds([(0, 10), (10, 12), (2, 3)], 60) == 12.0


def test_union_replayed_duplicates_change_nothing() -> None:
    once = [(3.0, 8.5), (10.0, 11.0)]  # 5.5 + 1 = 6.5
    assert union_seconds(once, 30) == 6.5
    assert union_seconds(once * 3, 30) == 6.5


def test_union_clips_to_track_window() -> None:
    # track plays [1000, 1030]; [990, 1005] -> [1000, 1005] = 5, [1025, 1100] -> [1025, 1030] = 5,
    # [900, 950] and [1030, 1040] lie outside -> 0; total 10
    spans = [(990, 1005), (1025, 1100), (900, 950), (1030, 1040)]
    assert union_seconds(spans, 30, track_start=1000) == 10.0


def test_union_never_exceeds_duration() -> None:
    assert union_seconds([(-5, 100), (3, 4)], 20) == 20.0


def test_union_ignores_empty_reversed_and_nan_intervals() -> None:
    # only [2, 4] counts: [5, 5] empty, [9, 7] reversed, NaNs
    spans = [(5, 5), (9, 7), (math.nan, 3), (1, math.nan), (2, 4)]
    assert union_seconds(spans, 10) == 2.0
    assert union_seconds([], 10) == 0.0
    assert union_seconds([(0, 5)], 0) == 0.0


def test_listened_seconds_groups_by_member_for_one_track() -> None:
    # track 7 plays [100, 120]. A: [100, 110] u [105, 112] = 12; B: [118, 130] -> [118, 120] = 2.
    # Track 8's interval for A is ignored.
    ivs = [iv(7, A, 100, 110), iv(7, A, 105, 112), iv(7, B, 118, 130), iv(8, A, 100, 120)]
    assert listened_seconds(ivs, 7, track_start=100, duration_s=20) == {A: 12.0, B: 2.0}
    assert listened_seconds(ivs, 9, track_start=100, duration_s=20) == {}


def test_interval_seconds() -> None:
    assert iv(1, A, 10.0, 12.5).seconds == 2.5
    assert iv(1, A, 12.0, 10.0).seconds == 0.0


# --- ListenTracker -----------------------------------------------------------------------


def test_present_at_start_listen_until_track_end() -> None:
    t = ListenTracker()
    assert t.track_started(G, 7, 30.0, at=100.0, listeners_present=[A, B]) == []
    play = t.current(G)
    assert play is not None
    assert (play.track_id, play.start, play.end, play.present_at_start) == (
        7,
        100.0,
        130.0,
        frozenset({A, B}),
    )
    # the track reports its end late (130.4): intervals stop at 130, the track's end
    assert t.track_ended(G, at=130.4) == [iv(7, A, 100, 130), iv(7, B, 100, 130)]
    assert t.current(G) is None
    assert t.listening(G) == {A, B}  # still in the channel for the next track


def test_join_before_start_counts_as_present() -> None:
    t = ListenTracker()
    # A joins while nothing plays: no interval, but A is known to be listening
    assert t.member_update(G, A, True, at=50.0) == []
    assert t.listening(G) == {A}
    t.track_started(G, 7, 20.0, at=60.0, listeners_present=t.listening(G))
    assert t.current(G).present_at_start == {A}
    assert t.track_ended(G, at=80.0) == [iv(7, A, 60, 80)]


def test_deafen_and_undeafen_split_the_interval() -> None:
    t = ListenTracker()
    t.track_started(G, 7, 60.0, at=0.0, listeners_present=[A])
    assert t.member_update(G, A, False, at=10.0) == [iv(7, A, 0, 10)]  # deafened
    assert t.member_update(G, A, True, at=25.0) == []  # undeafened
    assert t.track_ended(G, at=60.0) == [iv(7, A, 25, 60)]
    # 10 + 35 = 45 listened of 60
    ivs = [iv(7, A, 0, 10), iv(7, A, 25, 60)]
    assert listened_seconds(ivs, 7, 0.0, 60.0) == {A: 45.0}


def test_repeated_events_are_idempotent() -> None:
    t = ListenTracker()
    t.track_started(G, 7, 60.0, at=0.0, listeners_present=[A])
    assert t.member_update(G, A, True, at=5.0) == []  # already listening: keeps start 0
    assert t.member_update(G, A, False, at=20.0) == [iv(7, A, 0, 20)]
    assert t.member_update(G, A, False, at=21.0) == []  # already closed
    assert t.track_ended(G, at=60.0) == []


def test_move_away_and_back() -> None:
    t = ListenTracker()
    t.track_started(G, 7, 100.0, at=1000.0, listeners_present=[A, B])
    # A moves to another channel at +30, comes back at +50; B stays
    assert t.member_update(G, A, False, at=1030.0) == [iv(7, A, 1000, 1030)]
    assert t.listening(G) == {B}
    assert t.member_update(G, A, True, at=1050.0) == []
    assert t.track_ended(G, at=1100.0) == [iv(7, A, 1050, 1100), iv(7, B, 1000, 1100)]
    # A: 30 + 50 = 80 s, still present at start
    assert t.current(G) is None


def test_leaving_closes_only_that_member() -> None:
    t = ListenTracker()
    t.track_started(G, 7, 40.0, at=0.0, listeners_present=[A, B])
    assert t.member_update(G, B, False, at=12.5) == [iv(7, B, 0, 12.5)]
    assert t.track_ended(G, at=40.0) == [iv(7, A, 0, 40)]


def test_member_joining_mid_track_is_not_present_at_start() -> None:
    t = ListenTracker()
    t.track_started(G, 7, 30.0, at=0.0, listeners_present=[A])
    t.member_update(G, C, True, at=18.0)
    assert t.current(G).present_at_start == {A}
    assert t.track_ended(G, at=30.0) == [iv(7, A, 0, 30), iv(7, C, 18, 30)]


def test_event_stamped_before_track_start_counts_from_start() -> None:
    t = ListenTracker()
    t.track_started(G, 7, 30.0, at=100.0, listeners_present=[A])
    # B's join was delivered late, stamped 98: B listened from 100, the track's start
    t.member_update(G, B, True, at=98.0)
    assert t.track_ended(G, at=130.0) == [iv(7, A, 100, 130), iv(7, B, 100, 130)]


def test_track_skipped_early_closes_at_skip_time() -> None:
    t = ListenTracker()
    t.track_started(G, 7, 30.0, at=0.0, listeners_present=[A])
    assert t.track_ended(G, at=9.0) == [iv(7, A, 0, 9)]


def test_next_track_start_closes_previous_track() -> None:
    t = ListenTracker()
    t.track_started(G, 7, 30.0, at=0.0, listeners_present=[A, B])
    # no track_ended for 7; track 8 starts at 31 -> 7's intervals end at its own end, 30
    closed = t.track_started(G, 8, 30.0, at=31.0, listeners_present=[A])
    assert closed == [iv(7, A, 0, 30), iv(7, B, 0, 30)]
    assert t.current(G).track_id == 8
    assert t.current(G).present_at_start == {A}
    assert t.track_ended(G, at=61.0) == [iv(8, A, 31, 61)]


def test_late_end_event_for_an_earlier_track_is_ignored() -> None:
    t = ListenTracker()
    t.track_started(G, 7, 30.0, at=0.0, listeners_present=[A])
    t.track_started(G, 8, 30.0, at=30.0, listeners_present=[A])
    assert t.track_ended(G, at=30.5, track_id=7) == []
    assert t.current(G).track_id == 8
    assert t.track_ended(G, at=60.0, track_id=8) == [iv(8, A, 30, 60)]


def test_events_after_track_end_make_no_interval_past_it() -> None:
    t = ListenTracker()
    t.track_started(G, 7, 30.0, at=0.0, listeners_present=[A])
    # A leaves at 45, after the track's end but before track_ended arrived: clipped to 30
    assert t.member_update(G, A, False, at=45.0) == [iv(7, A, 0, 30)]
    # B joins at 50, after the end: nothing to listen to
    assert t.member_update(G, B, True, at=50.0) == []
    assert t.track_ended(G, at=51.0) == []


def test_bot_leaving_closes_all_in_that_guild_only() -> None:
    t = ListenTracker()
    t.track_started(G, 7, 60.0, at=0.0, listeners_present=[A, B])
    t.track_started(G2, 9, 60.0, at=5.0, listeners_present=[C])
    assert t.bot_left(G, at=20.0) == [iv(7, A, 0, 20), iv(7, B, 0, 20)]
    assert t.current(G) is None
    assert t.listening(G) == frozenset()
    assert t.member_update(G, A, False, at=21.0) == []  # A's later leave event: nothing open
    assert t.current(G2).track_id == 9
    assert t.track_ended(G2, at=65.0) == [iv(9, C, 5, 65)]


def test_close_all_on_restart() -> None:
    t = ListenTracker()
    t.track_started(G, 7, 60.0, at=0.0, listeners_present=[B, A])
    t.track_started(G2, 9, 60.0, at=5.0, listeners_present=[C])
    t.member_update(G, A, False, at=10.0)
    assert t.close_all(at=30.0) == [iv(7, B, 0, 30), iv(9, C, 5, 30)]
    assert t.current(G) is None and t.current(G2) is None
    assert t.close_all(at=31.0) == []


def test_no_track_means_no_intervals() -> None:
    t = ListenTracker()
    assert t.member_update(G, A, True, at=1.0) == []
    assert t.member_update(G, A, False, at=9.0) == []
    assert t.track_ended(G, at=10.0) == []
    assert t.bot_left(G2, at=10.0) == []


def test_track_duration_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ListenTracker().track_started(G, 7, 0.0, at=0.0, listeners_present=[])


def test_tracker_output_feeds_union() -> None:
    # end-to-end: A present, deafens 10..20, a replayed "listening" event at 25 changes nothing;
    # intervals [0, 10] and [20, 40] -> 30 s of 40; C joins at 35 -> 5 s
    t = ListenTracker()
    closed = t.track_started(G, 7, 40.0, at=0.0, listeners_present=[A])
    closed += t.member_update(G, A, False, at=10.0)
    closed += t.member_update(G, A, True, at=20.0)
    closed += t.member_update(G, A, True, at=25.0)
    closed += t.member_update(G, C, True, at=35.0)
    closed += t.track_ended(G, at=40.0)
    stored = closed + closed  # persisted twice (a retried write)
    assert listened_seconds(stored, 7, track_start=0.0, duration_s=40.0) == {A: 30.0, C: 5.0}


def test_open_so_far_reports_without_closing() -> None:
    t = ListenTracker()
    assert t.open_so_far(G, at=5.0) == []  # no track
    t.track_started(G, 7, 30.0, at=100.0, listeners_present=[A])
    t.member_update(G, B, True, at=104.0)
    assert t.open_so_far(G, at=110.0) == [iv(7, A, 100, 110), iv(7, B, 104, 110)]
    assert t.open_so_far(G, at=140.0) == [iv(7, A, 100, 130), iv(7, B, 104, 130)]
    # still open: closing later gives the same starts, so the stored rows are extended
    assert t.member_update(G, B, False, at=112.0) == [iv(7, B, 104, 112)]
    assert t.track_ended(G, at=120.0) == [iv(7, A, 100, 120)]
    assert t.open_so_far(G, at=121.0) == []
