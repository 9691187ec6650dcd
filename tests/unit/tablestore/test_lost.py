"""streams.tablestore.lost: telling that Redis went back in time, and where to resume."""

from __future__ import annotations

from faust.types import TP

from streams.tablestore.keys import offset_field
from streams.tablestore.lost import fenced_by_own_claim, plan_resume, sources_of, went_back

SOURCE = "transactions"


def test_a_count_behind_the_remembered_one_means_redis_went_back() -> None:
    assert went_back(remembered=7, found=6)
    assert went_back(remembered=7, found=0)  # restarted empty


def test_an_equal_or_newer_count_is_no_loss() -> None:
    assert not went_back(remembered=7, found=7)
    assert not went_back(remembered=7, found=12)  # another worker flushed since
    assert not went_back(remembered=None, found=0)  # never seen: nothing to compare


def test_fenced_by_an_older_claim_of_this_worker_is_redis_forgetting_the_claim() -> None:
    assert fenced_by_own_claim("abc", "abc:5", b"abc:4")


def test_fenced_by_another_worker_is_a_takeover() -> None:
    assert not fenced_by_own_claim("abc", "abc:5", b"xyz:6")
    assert not fenced_by_own_claim("abc", "abc:5", b"abcd:4")  # a prefix is not the member
    assert not fenced_by_own_claim("abc", "abc:5", b"")


def test_sources_of_the_lost_partitions() -> None:
    known = {TP(SOURCE, 0), TP(SOURCE, 1), TP("fraud-reports", 1)}
    assert sources_of({1}, known) == {TP(SOURCE, 1), TP("fraud-reports", 1)}
    assert sources_of(set(), known) == set()


def test_a_source_whose_offset_redis_kept_resumes_there() -> None:
    tp = TP(SOURCE, 2)
    plan = plan_resume({tp}, {offset_field(SOURCE, 2): b"4100"}, {})
    assert plan.rebuild == {}
    assert plan.refused == {}


def test_a_source_whose_offset_redis_lost_is_rebuilt_from_a_complete_log() -> None:
    tp = TP(SOURCE, 2)
    plan = plan_resume({tp}, {}, {tp: 0})
    assert plan.rebuild == {tp: 0}
    assert plan.refused == {}


def test_a_source_whose_log_lost_events_to_retention_is_refused() -> None:
    tp = TP(SOURCE, 2)
    plan = plan_resume({tp}, {b"owner_generation": b"w:3"}, {tp: 1500})
    assert plan.rebuild == {}
    reason = plan.refused[tp]
    assert "transactions[2]" in reason
    assert "1500" in reason
    assert "\n" not in reason


def test_a_source_whose_earliest_offset_is_unknown_is_refused() -> None:
    tp = TP(SOURCE, 0)
    assert tp in plan_resume({tp}, {}, {}).refused
