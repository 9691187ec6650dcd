"""The online engine's own contract: state bytes, bounds, lateness, reports, expiry."""

from __future__ import annotations

import contextlib
import random
from array import array
from datetime import timedelta

import pytest
from feature_reference import Report, Tx, reference_features
from hypothesis import given, settings
from hypothesis import strategies as st

from features.aggregations import Count, DistinctPeers, FraudRisk
from features.online import (
    ABSOLUTE_FRAUD_TIMES,
    KEEPS_REPORT_TIMES,
    KEEPS_TX_IDS,
    DuplicateTransactionError,
    EntityState,
    EventTooOldError,
    OnlineEngine,
    OnlineFeatures,
    StateLayoutError,
)
from features.spec import (
    CUSTOMER_POLICY,
    DEFAULT_FEATURES,
    HANDBOOK_FEATURES,
    KNOWN_FRAUD_DELAY,
    TERMINAL_POLICY,
    Entity,
    EntityPolicy,
    Feature,
    FeatureSet,
)

DAY = 86_400_000
HOUR = 3_600_000
T0 = 1_711_929_600_000  # 2024-04-01T00:00:00Z, a Monday
NAMES = DEFAULT_FEATURES.names


def feature(vector: list[float], name: str) -> float:
    return vector[NAMES.index(name)]


def customer_count(vector: list[float], days: int) -> float:
    return feature(vector, f"CUSTOMER_ID_NB_TX_{days}DAY_WINDOW")


# --- state bytes --------------------------------------------------------------------------


def test_a_new_state_round_trips_through_30_bytes() -> None:
    state = EntityState()
    data = state.to_bytes()
    assert len(data) == 30
    assert EntityState.from_bytes(data) == state
    assert EntityState.from_bytes(data).watermark_ms is None


def test_state_bytes_are_header_plus_fixed_bytes_per_event() -> None:
    engine = OnlineEngine()
    for k in range(10):
        engine.transaction(T0 + k * HOUR, "C1", f"T{k % 3}", 10.0 + k, f"tx{k}")
    engine.fraud_report("x", T0 + HOUR, "C1", "T1", T0 + 2 * HOUR)
    customer = engine.states[Entity.CUSTOMER]["C1"]
    terminal = engine.states[Entity.TERMINAL]["T1"]
    # customer: time 4 + amount 8 + terminal fingerprint 4, and the ids of the
    # transactions within the day of allowed lateness (8 each, after a 4-byte count);
    # terminal: time 4, report 16 (transaction time and id) + 8 (when it was reported).
    assert len(customer.to_bytes()) == 30 + 10 * 16 + 4 + 10 * 8
    assert len(terminal.to_bytes()) == 30 + 3 * 4 + 1 * (16 + 8)
    for state in (customer, terminal):
        copy = EntityState.from_bytes(state.to_bytes())
        assert copy == state
        assert copy.event_times() == state.event_times()
        assert list(copy.amounts) == list(state.amounts)


def test_corrupt_state_bytes_are_refused() -> None:
    good = EntityState().to_bytes()
    with pytest.raises(ValueError, match="version"):
        EntityState.from_bytes(b"\x09" + good[1:])
    with pytest.raises(ValueError, match="short"):
        EntityState.from_bytes(good[:10])
    with pytest.raises(ValueError, match="header says"):
        EntityState.from_bytes(good + b"\x00")


def test_the_state_bound_is_enforced_and_counted() -> None:
    tiny = FeatureSet(
        HANDBOOK_FEATURES.features,
        {
            Entity.CUSTOMER: EntityPolicy(timedelta(days=1), max_events=5, max_frauds=2),
            Entity.TERMINAL: EntityPolicy(timedelta(days=1), max_events=5, max_frauds=2),
        },
    )
    engine = OnlineEngine(tiny)
    for k in range(12):
        vector = engine.transaction(T0 + k * 1000, "C1", "T1", 1.0)
        engine.fraud_report(f"tx{k}", T0 + k * 1000, "C1", "T1", T0 + k * 1000)
    assert customer_count(vector, 1) == 6  # read before trimming: this one and 5 kept
    customer = engine.states[Entity.CUSTOMER]["C1"]
    terminal = engine.states[Entity.TERMINAL]["T1"]
    assert len(customer) == 5
    assert customer.overflow == 7
    assert len(terminal.fraud_times) == 2
    windows = engine.online.entities
    assert len(customer.to_bytes()) <= windows[Entity.CUSTOMER].max_state_bytes
    assert len(terminal.to_bytes()) <= windows[Entity.TERMINAL].max_state_bytes


def test_a_state_from_a_feature_set_with_other_columns_is_conformed_or_refused() -> None:
    """Adding a feature that needs a column old states never kept must not misalign them."""
    old_terminal = OnlineFeatures().entities[Entity.TERMINAL]  # keeps times and frauds
    state = EntityState()
    for k in range(3):
        old_terminal.record(state, T0 + k * HOUR, 1.0, "C1")
    data = state.to_bytes()
    needs_peers = FeatureSet(
        (Feature("T_CUSTOMERS", Entity.TERMINAL, DistinctPeers(), timedelta(days=1)),),
        {Entity.TERMINAL: TERMINAL_POLICY},
    )
    new_terminal = OnlineFeatures(needs_peers).entities[Entity.TERMINAL]
    with pytest.raises(ValueError, match="another feature set"):
        new_terminal.read_into(EntityState.from_bytes(data), T0 + DAY, 1.0, [0.0])
    loaded = EntityState.from_bytes(data)
    vector = [0.0]
    new_terminal.update_into(loaded, T0 + DAY, 1.0, "C2", vector)
    assert vector == [1.0]  # history without peers forgotten: only this transaction
    assert loaded.overflow == 3
    # Fewer columns needed: dropped without loss.
    customer = OnlineFeatures().entities[Entity.CUSTOMER]
    rich = EntityState()
    customer.record(rich, T0, 5.0, "T1")
    counts_only = FeatureSet(
        (Feature("C_NB", Entity.CUSTOMER, Count(), timedelta(days=1)),),
        {Entity.CUSTOMER: CUSTOMER_POLICY},
    )
    OnlineFeatures(counts_only).entities[Entity.CUSTOMER].update_into(
        rich, T0 + 1, 5.0, "T1", vector
    )
    assert vector == [2.0]
    assert rich.overflow == 0
    assert len(rich.to_bytes()) == 30 + 2 * 4 + 4  # times, and an empty list of ids


def test_an_inconsistent_state_is_not_written() -> None:
    state = EntityState()
    OnlineFeatures().entities[Entity.CUSTOMER].record(state, T0, 5.0, "T1")
    state.amounts.append(1.0)
    with pytest.raises(ValueError, match="inconsistent"):
        state.to_bytes()


def test_the_default_bounds_in_bytes() -> None:
    windows = OnlineFeatures().entities
    assert windows[Entity.CUSTOMER].max_state_bytes == 30 + 4096 * (16 + 8) + 4
    assert windows[Entity.TERMINAL].max_state_bytes == 30 + 65_536 * 4 + 4096 * (16 + 8)


# --- duplicates ---------------------------------------------------------------------------


def test_a_transaction_delivered_twice_is_counted_once() -> None:
    engine = OnlineEngine()
    engine.transaction(T0, "C1", "T1", 10.0, "tx1")
    before = engine.states[Entity.CUSTOMER]["C1"].to_bytes()
    with pytest.raises(DuplicateTransactionError) as raised:
        engine.transaction(T0, "C1", "T1", 10.0, "tx1")
    assert raised.value.identical
    assert engine.states[Entity.CUSTOMER]["C1"].to_bytes() == before
    after = engine.transaction(T0 + HOUR, "C1", "T1", 20.0, "tx2")
    assert customer_count(after, 1) == 2


@pytest.mark.parametrize(
    ("time", "amount", "terminal"),
    [(T0 + 1, 10.0, "T1"), (T0, 10.5, "T1"), (T0, 10.0, "T9")],
    ids=["time", "amount", "terminal"],
)
def test_an_id_reused_with_other_content_is_refused_as_conflicting(
    time: int, amount: float, terminal: str
) -> None:
    engine = OnlineEngine()
    engine.transaction(T0, "C1", "T1", 10.0, "tx1")
    with pytest.raises(DuplicateTransactionError) as raised:
        engine.transaction(time, "C1", terminal, amount, "tx1")
    assert not raised.value.identical
    assert len(engine.states[Entity.CUSTOMER]["C1"]) == 1


def test_ids_are_kept_for_the_allowed_lateness_only_and_survive_the_bytes() -> None:
    windows = OnlineFeatures().entities[Entity.CUSTOMER]
    state = EntityState()
    out = OnlineFeatures().new_vector()
    for k in range(6):  # every 10 hours: the day of lateness holds the last three
        windows.update_into(state, T0 + 10 * k * HOUR, 1.0, "T1", out, f"tx{k}")
    assert len(state.tx_ids) == 3
    copy = EntityState.from_bytes(state.to_bytes())
    assert list(copy.tx_ids) == list(state.tx_ids)
    with pytest.raises(DuplicateTransactionError):
        windows.update_into(copy, T0 + 50 * HOUR, 1.0, "T1", out, "tx5")
    # An out-of-order transaction within the lateness is remembered in its place.
    windows.update_into(copy, T0 + 45 * HOUR, 2.0, "T2", out, "late")
    with pytest.raises(DuplicateTransactionError) as raised:
        windows.update_into(copy, T0 + 45 * HOUR, 2.0, "T2", out, "late")
    assert raised.value.identical
    assert len(copy.tx_ids) <= len(copy.times)


def test_a_state_written_before_ids_were_kept_keeps_its_history() -> None:
    """Upgrading to states with ids must not forget any card's transactions."""
    windows = OnlineFeatures().entities[Entity.CUSTOMER]
    state = EntityState()
    out = OnlineFeatures().new_vector()
    for k in range(3):
        windows.update_into(state, T0 + k * HOUR, 1.0, "T1", out, f"tx{k}")
    old = bytearray(state.to_bytes())
    old[1] &= ~KEEPS_TX_IDS  # the flags byte as an older worker wrote it
    old_state = EntityState.from_bytes(bytes(old[: len(old) - 4 - 3 * 8]))
    assert old_state.tx_ids == array("Q")
    windows.update_into(old_state, T0 + 3 * HOUR, 1.0, "T1", out, "tx3")
    assert old_state.overflow == 0
    assert len(old_state) == 4
    assert customer_count(out, 1) == 4
    assert len(old_state.tx_ids) == 1


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3 * 24),  # hour
            st.sampled_from(["a", "b", "c", "d"]),  # tx id
            st.sampled_from([1.0, 2.0]),
            st.sampled_from(["T1", "T2"]),
        ),
        max_size=30,
    )
)
def test_any_stream_with_repeated_ids_matches_a_reference_that_counts_each_id_once(
    events: list[tuple[int, str, float, str]],
) -> None:
    windows = OnlineFeatures().entities[Entity.CUSTOMER]
    state = EntityState()
    out = OnlineFeatures().new_vector()
    kept: dict[str, tuple[int, float, str]] = {}
    watermark: int | None = None
    for hour, tx_id, amount, terminal in events:
        time = T0 + hour * HOUR
        state = EntityState.from_bytes(state.to_bytes())
        try:
            windows.update_into(state, time, amount, terminal, out, tx_id)
        except EventTooOldError:
            assert watermark is not None
            assert watermark - time > DAY
            continue
        except DuplicateTransactionError as exc:
            identical = exc.identical
            assert identical == (kept[tx_id] == (time, amount, terminal))
            continue
        if tx_id in kept:  # forgotten: only beyond the lateness of the watermark
            assert watermark is not None
            assert kept[tx_id][0] < watermark - DAY
        kept[tx_id] = (time, amount, terminal)
        watermark = time if watermark is None else max(watermark, time)
        assert len(state.tx_ids) <= len(state.times)


# --- windows ------------------------------------------------------------------------------


def test_customer_windows_are_open_at_the_old_end_and_include_the_current_transaction() -> None:
    engine = OnlineEngine()
    engine.transaction(T0, "C1", "T1", 10.0)
    just_inside = engine.transaction(T0 + DAY - 1, "C1", "T1", 20.0)
    on_the_edge = engine.transaction(T0 + DAY, "C1", "T1", 30.0)
    assert customer_count(just_inside, 1) == 2
    assert customer_count(on_the_edge, 1) == 2  # T0 is exactly one day old: out
    assert feature(on_the_edge, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW") == 25.0
    assert customer_count(on_the_edge, 7) == 3


def test_a_transaction_sees_earlier_arrivals_with_the_same_timestamp_only() -> None:
    engine = OnlineEngine()
    first = engine.transaction(T0, "C1", "T1", 10.0)
    second = engine.transaction(T0, "C1", "T2", 30.0)
    assert customer_count(first, 1) == 1
    assert customer_count(second, 1) == 2
    assert feature(second, "CUSTOMER_ID_SECONDS_SINCE_PREV_TX") == 0.0
    assert feature(second, "CUSTOMER_ID_NB_TERMINALS_1DAY_WINDOW") == 2


def test_terminal_windows_end_exactly_seven_days_before_the_transaction() -> None:
    engine = OnlineEngine()
    engine.transaction(T0, "C1", "T1", 10.0)
    engine.fraud_report("f", T0, "C1", "T1", T0)
    before = engine.transaction(T0 + 7 * DAY - 1, "C2", "T1", 10.0)
    at = engine.transaction(T0 + 7 * DAY, "C3", "T1", 10.0)
    last = engine.transaction(T0 + 8 * DAY - 1, "C4", "T1", 10.0)
    gone = engine.transaction(T0 + 8 * DAY, "C5", "T1", 10.0)
    assert feature(before, "TERMINAL_ID_NB_TX_1DAY_WINDOW") == 0
    assert feature(at, "TERMINAL_ID_NB_TX_1DAY_WINDOW") == 1
    assert feature(at, "TERMINAL_ID_RISK_1DAY_WINDOW") == 1.0
    assert feature(last, "TERMINAL_ID_RISK_1DAY_WINDOW") == 1.0
    assert feature(gone, "TERMINAL_ID_NB_TX_1DAY_WINDOW") == 0
    assert feature(gone, "TERMINAL_ID_RISK_1DAY_WINDOW") == 0.0
    assert feature(gone, "TERMINAL_ID_NB_TX_7DAY_WINDOW") == 1


def test_split_agent_calls_equal_the_in_process_engine() -> None:
    """Scorer: customer update + terminal read; terminal agent: record + reports."""
    online = OnlineFeatures()
    customer, terminal = online.entities[Entity.CUSTOMER], online.entities[Entity.TERMINAL]
    engine = OnlineEngine()
    states: dict[str, EntityState] = {}
    rng = random.Random(3)
    t = T0
    for k in range(400):
        t += rng.choice([0, 1, HOUR, 5 * HOUR, DAY])
        c, term, amount = f"C{rng.randrange(3)}", f"T{rng.randrange(2)}", rng.randrange(100) / 4
        if rng.random() < 0.1:
            engine.fraud_report(f"r{k}", t - 3 * DAY, c, term, t)
            terminal.record_fraud(states.setdefault(term, EntityState()), t - 3 * DAY, f"r{k}", t)
        expected = engine.transaction(t, c, term, amount)
        vector = online.new_vector()
        online.transaction_into(t, amount, vector)
        customer.update_into(states.setdefault(c, EntityState()), t, amount, term, vector)
        terminal.read_into(states.setdefault(term, EntityState()), t, amount, vector)
        terminal.record(states[term], t, amount, c)
        assert vector == expected


# --- lateness -----------------------------------------------------------------------------


def test_a_late_transaction_is_placed_in_time_and_sees_only_the_past() -> None:
    engine = OnlineEngine()
    engine.transaction(T0 + 10 * HOUR, "C1", "T1", 10.0)
    engine.transaction(T0 + 12 * HOUR, "C1", "T1", 30.0)
    late = engine.transaction(T0 + 11 * HOUR, "C1", "T1", 20.0)
    assert customer_count(late, 1) == 2  # itself and 10h, not 12h
    assert feature(late, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW") == 15.0
    assert feature(late, "CUSTOMER_ID_SECONDS_SINCE_PREV_TX") == 3600.0
    after = engine.transaction(T0 + 13 * HOUR, "C1", "T1", 40.0)
    in_order = OnlineEngine()
    for hours, amount in ((10, 10.0), (11, 20.0), (12, 30.0), (13, 40.0)):
        expected = in_order.transaction(T0 + hours * HOUR, "C1", "T1", amount)
    assert after == expected
    assert engine.states == in_order.states


def test_a_transaction_later_than_allowed_is_refused_and_changes_nothing() -> None:
    engine = OnlineEngine()
    engine.transaction(T0 + 5 * DAY, "C1", "T1", 10.0)
    engine.transaction(T0 + 6 * DAY, "C2", "T2", 10.0)
    before = {e: {k: s.to_bytes() for k, s in t.items()} for e, t in engine.states.items()}
    allowed = CUSTOMER_POLICY.allowed_lateness_ms
    with pytest.raises(EventTooOldError) as refused:
        engine.transaction(T0 + 5 * DAY - allowed - 1, "C1", "T2", 10.0)
    assert refused.value.entity is Entity.CUSTOMER
    assert refused.value.lateness_ms == allowed + 1
    # Fine for its customer (new), too old for its terminal: refused as a whole.
    terminal_allowed = TERMINAL_POLICY.allowed_lateness_ms
    with pytest.raises(EventTooOldError) as refused:
        engine.transaction(T0 + 6 * DAY - terminal_allowed - 1, "C9", "T2", 10.0)
    assert refused.value.entity is Entity.TERMINAL
    after = {e: {k: s.to_bytes() for k, s in t.items() if len(s)} for e, t in engine.states.items()}
    assert after == before
    exactly_allowed = engine.transaction(T0 + 6 * DAY - allowed, "C2", "T2", 10.0)
    assert customer_count(exactly_allowed, 1) == 1


def test_a_terminal_read_too_far_behind_the_terminal_is_refused() -> None:
    windows = OnlineFeatures().entities[Entity.TERMINAL]
    state = EntityState()
    windows.record(state, T0 + 10 * DAY, 1.0, "C1")
    with pytest.raises(EventTooOldError):
        windows.read_into(state, T0 + 2 * DAY, 1.0, OnlineFeatures().new_vector())


def test_a_terminal_read_too_far_behind_can_be_served_inexactly() -> None:
    online = OnlineFeatures()
    windows = online.entities[Entity.TERMINAL]
    state = EntityState()
    windows.record(state, T0 + 1 * DAY, 1.0, "C1")
    windows.record(state, T0 + 20 * DAY, 1.0, "C1")
    out = online.new_vector()
    windows.read_into(state, T0 + 8 * DAY + DAY // 2, 1.0, out, refuse_late=False)
    count_1day = online.names.index("TERMINAL_ID_NB_TX_1DAY_WINDOW")
    # The window (t - 8d, t - 7d] holds the transaction of day 1: still kept, so counted.
    assert out[count_1day] == 1


# --- fraud reports ------------------------------------------------------------------------


def test_a_report_later_than_the_delay_counts_from_an_hour_after_it_on() -> None:
    engine = OnlineEngine()
    engine.transaction(T0, "C1", "T1", 10.0)
    before = engine.transaction(T0 + 7 * DAY + HOUR, "C2", "T1", 10.0)
    assert engine.fraud_report("tx0", T0, "C1", "T1", T0 + 7 * DAY + HOUR)
    not_yet = engine.transaction(T0 + 7 * DAY + 2 * HOUR - 1, "C3", "T1", 10.0)
    after = engine.transaction(T0 + 7 * DAY + 2 * HOUR, "C3", "T1", 10.0)
    assert feature(before, "TERMINAL_ID_RISK_1DAY_WINDOW") == 0.0
    assert feature(not_yet, "TERMINAL_ID_RISK_1DAY_WINDOW") == 0.0
    assert feature(after, "TERMINAL_ID_RISK_1DAY_WINDOW") == 1.0


def test_the_risk_counts_frauds_reported_at_least_an_hour_before_the_read() -> None:
    """A fraud counts at t when reported at or before t - 1h, to the millisecond."""
    assert timedelta(hours=1) == KNOWN_FRAUD_DELAY
    engine = OnlineEngine()
    engine.transaction(T0, "C1", "T1", 10.0, "on_time")
    engine.transaction(T0, "C2", "T1", 10.0, "one_ms_late")
    # Applied long before the read: only its report time decides.
    assert engine.fraud_report("on_time", T0, "C1", "T1", T0 + 7 * DAY - HOUR)
    assert engine.fraud_report("one_ms_late", T0, "C2", "T1", T0 + 7 * DAY - HOUR + 1)
    at_edge = engine.transaction(T0 + 7 * DAY, "C3", "T1", 10.0)
    a_ms_later = engine.transaction(T0 + 7 * DAY + 1, "C4", "T1", 10.0)
    for days in (1, 7, 30):
        assert feature(at_edge, f"TERMINAL_ID_NB_TX_{days}DAY_WINDOW") == 2
        assert feature(at_edge, f"TERMINAL_ID_RISK_{days}DAY_WINDOW") == 0.5
        assert feature(a_ms_later, f"TERMINAL_ID_RISK_{days}DAY_WINDOW") == 1.0


@pytest.mark.parametrize(
    ("known_delay", "expected"),
    [(timedelta(0), 1.0), (timedelta(hours=1), 0.5), (timedelta(hours=2), 0.0)],
)
def test_the_risk_reads_reports_its_known_delay_old(
    known_delay: timedelta, expected: float
) -> None:
    one_day = timedelta(days=1)
    risk = Feature("RISK", Entity.TERMINAL, FraudRisk(known_delay), one_day, one_day)
    engine = OnlineEngine(FeatureSet((risk,), {Entity.TERMINAL: TERMINAL_POLICY}))
    engine.transaction(T0, "C1", "T1", 10.0)
    engine.transaction(T0, "C2", "T1", 10.0)
    engine.fraud_report("a", T0, "C1", "T1", T0 + DAY - HOUR)
    engine.fraud_report("b", T0, "C2", "T1", T0 + DAY)
    assert engine.transaction(T0 + DAY, "C3", "T1", 10.0) == [expected]


def test_a_risk_known_delay_must_be_whole_milliseconds_and_not_negative() -> None:
    assert FraudRisk().known_delay == KNOWN_FRAUD_DELAY
    assert FraudRisk(timedelta(milliseconds=1)).known_delay_ms == 1
    with pytest.raises(ValueError, match="whole milliseconds"):
        FraudRisk(timedelta(microseconds=1500))
    with pytest.raises(ValueError, match="not negative"):
        FraudRisk(timedelta(milliseconds=-1))


def test_duplicate_and_expired_reports_are_not_counted() -> None:
    engine = OnlineEngine()
    engine.transaction(T0 + 50 * DAY, "C1", "T1", 10.0)
    assert engine.fraud_report("a", T0 + 45 * DAY, "C1", "T1", T0 + 50 * DAY)
    assert not engine.fraud_report("a", T0 + 45 * DAY, "C1", "T1", T0 + 50 * DAY)  # delivered twice
    assert engine.fraud_report("b", T0 + 45 * DAY, "C1", "T1", T0 + 50 * DAY)  # same time, other tx
    # Older than the terminal's retention (44 days): no exact read can need it.
    assert not engine.fraud_report("c", T0 + 2 * DAY, "C1", "T1", T0 + 50 * DAY)
    assert len(engine.states[Entity.TERMINAL]["T1"].fraud_times) == 2


def known(vector: list[float], days: int) -> float:
    return feature(vector, f"TERMINAL_ID_NB_KNOWN_FRAUDS_{days}DAY_WINDOW")


def test_known_frauds_count_reports_at_least_an_hour_old_by_hand() -> None:
    """Fraud f counts at t when tx_f is in (t - 1h - n, t - 1h] and reported by t - 1h."""
    engine = OnlineEngine()
    engine.transaction(T0, "C1", "T1", 10.0)
    engine.transaction(T0 + HOUR, "C2", "T1", 10.0)
    assert engine.fraud_report("a", T0, "C1", "T1", T0 + 2 * HOUR)
    assert engine.fraud_report("b", T0 + HOUR, "C2", "T1", T0 + 3 * HOUR)
    # a is reported at T0 + 2h: at T0 + 3h - 1 ms it is not yet an hour old, at T0 + 3h it is.
    assert known(engine.transaction(T0 + 3 * HOUR - 1, "C3", "T1", 1.0), 1) == 0
    assert known(engine.transaction(T0 + 3 * HOUR, "C3", "T1", 1.0), 1) == 1
    assert known(engine.transaction(T0 + 4 * HOUR, "C3", "T1", 1.0), 1) == 2
    # The 1-day window ends an hour ago: a (at T0) leaves it at T0 + 1 day + 1 hour.
    assert known(engine.transaction(T0 + DAY + HOUR - 1, "C4", "T1", 1.0), 1) == 2
    assert known(engine.transaction(T0 + DAY + HOUR, "C4", "T1", 1.0), 1) == 1
    assert known(engine.transaction(T0 + DAY + HOUR, "C4", "T1", 1.0), 7) == 2
    # Another terminal knows nothing of them.
    assert known(engine.transaction(T0 + 5 * HOUR, "C5", "T2", 1.0), 28) == 0


def test_a_duplicate_report_keeps_the_earliest_report_time_in_any_order() -> None:
    engine = OnlineEngine()
    engine.transaction(T0, "C1", "T1", 10.0)
    assert engine.fraud_report("a", T0, "C1", "T1", T0 + 5 * HOUR)
    assert engine.fraud_report("a", T0, "C1", "T1", T0 + HOUR)  # reported earlier too
    assert not engine.fraud_report("a", T0, "C1", "T1", T0 + 2 * HOUR)  # nothing earlier
    assert known(engine.transaction(T0 + HOUR + HOUR // 2, "C2", "T1", 1.0), 1) == 0
    assert known(engine.transaction(T0 + 3 * HOUR, "C2", "T1", 1.0), 1) == 1


def test_report_times_round_trip_and_stay_aligned_when_trimmed() -> None:
    policies = {
        Entity.CUSTOMER: CUSTOMER_POLICY,
        Entity.TERMINAL: EntityPolicy(timedelta(days=1), max_events=100, max_frauds=3),
    }
    engine = OnlineEngine(FeatureSet(DEFAULT_FEATURES.features, policies))
    for k in range(5):  # reported in the reverse order of their transactions
        assert engine.fraud_report(f"f{k}", T0 + k * HOUR, "C1", "T1", T0 + (20 - k) * HOUR)
    state = engine.states[Entity.TERMINAL]["T1"]
    assert state.overflow == 2
    assert list(state.fraud_reported) == [T0 + 18 * HOUR, T0 + 17 * HOUR, T0 + 16 * HOUR]
    copy = EntityState.from_bytes(state.to_bytes())
    assert copy == state
    assert list(copy.fraud_reported) == list(state.fraud_reported)


def test_a_state_written_without_report_times_restarts_its_history() -> None:
    """A terminal state from a spec without known-fraud counts cannot give them exactly."""
    old = OnlineEngine(HANDBOOK_FEATURES)
    old.transaction(T0, "C1", "T1", 10.0)
    assert old.fraud_report("a", T0, "C1", "T1", T0 + HOUR)
    written = old.states[Entity.TERMINAL]["T1"]
    written.layout &= ~KEEPS_REPORT_TIMES  # as a worker wrote it before report times
    del written.fraud_reported[:]
    stored = EntityState.from_bytes(written.to_bytes())
    assert len(stored.fraud_reported) == 0
    windows = OnlineFeatures().entities[Entity.TERMINAL]
    with pytest.raises(StateLayoutError, match="another feature set"):
        windows.read_into(stored, T0 + DAY, 1.0, OnlineFeatures().new_vector())
    # Read leniently (the scorer's fallback): what the state holds, report times as absent.
    vector = OnlineFeatures().new_vector()
    windows.read_into(stored, T0 + 7 * DAY, 1.0, vector, refuse_late=False)
    assert feature(vector, "TERMINAL_ID_NB_TX_1DAY_WINDOW") == 1
    assert feature(vector, "TERMINAL_ID_RISK_1DAY_WINDOW") == 1.0
    assert known(vector, 28) == 0
    windows.record(stored, T0 + DAY, 1.0, "C2")
    assert stored.overflow == 2  # one transaction and one report forgotten
    assert len(stored.times) == 1
    assert len(stored.fraud_times) == len(stored.fraud_reported) == 0


def test_reports_are_ignored_by_entities_without_risk_features() -> None:
    windows = OnlineFeatures().entities[Entity.CUSTOMER]
    state = EntityState()
    assert not windows.record_fraud(state, T0, "x", T0)
    assert state == EntityState()


# --- expiry and long streams --------------------------------------------------------------


def test_quiet_entities_expire_by_event_time_only() -> None:
    engine = OnlineEngine()
    engine.transaction(T0, "C1", "T1", 10.0)
    assert engine.expire(T0 + 31 * DAY - 1) == 0
    assert engine.expire(T0 + 31 * DAY) == 1  # the customer: 30-day reach + 1 day lateness
    assert engine.expire(T0 + 44 * DAY - 1) == 0
    assert engine.expire(T0 + 44 * DAY) == 1  # the terminal: 37-day reach + 7 days
    assert engine.states == {Entity.CUSTOMER: {}, Entity.TERMINAL: {}}


def test_a_year_of_transactions_keeps_offsets_small_and_values_exact() -> None:
    rng = random.Random(5)
    t = T0
    events: list[Tx | Report] = []
    got: dict[str, list[float]] = {}
    engine = OnlineEngine()
    for k in range(450):
        t += rng.choice([HOUR, 9 * HOUR, DAY, 2 * DAY])
        tx = Tx(f"x{k:04d}", t, "C1", f"T{k % 2}", float(k % 17))
        events.append(tx)
        got[tx.tx_id] = engine.transaction(tx.time_ms, tx.customer_id, tx.terminal_id, tx.amount)
        state = engine.states[Entity.CUSTOMER]["C1"]
        assert state.base_ms <= state.event_times()[0]  # offsets never negative (nor > 2**32)
    assert t - T0 > 365 * DAY
    expected = reference_features(events, DEFAULT_FEATURES)
    for tx_id, vector in got.items():
        assert vector == pytest.approx(expected[tx_id], abs=1e-9, rel=0)


# --- out of order, serialisation and expiry, against the reference -------------------------


@st.composite
def disordered_streams(draw: st.DrawFn) -> tuple[list[Tx | Report], list[int]]:
    """Transactions and reports in an arrival order where nothing is later than allowed."""
    n = draw(st.integers(1, 40))
    gaps = draw(
        st.lists(
            st.sampled_from([0, 1, HOUR, DAY - 1, DAY, 7 * DAY, 30 * DAY]), min_size=n, max_size=n
        )
    )
    events: list[tuple[int, Tx | Report]] = []
    t = T0
    for k, gap in enumerate(gaps):
        t += gap
        tx = Tx(
            f"x{k:02d}",
            t,
            draw(st.sampled_from(["C1", "C2"])),
            draw(st.sampled_from(["T1", "T2"])),
            k / 4,
        )
        jitter = draw(st.sampled_from([0, 1, HOUR, DAY]))  # at most the allowed lateness
        events.append((t + jitter, tx))
        if draw(st.integers(0, 4)) == 0:
            delay = draw(
                st.sampled_from(
                    [0, HOUR - 1, HOUR, DAY, 7 * DAY - HOUR, 7 * DAY - HOUR + 1, 7 * DAY, 9 * DAY]
                )
            )
            events.append(
                (t + delay, Report(tx.tx_id, t, tx.customer_id, tx.terminal_id, t + delay))
            )
    events.sort(key=lambda e: e[0])
    expire_at = draw(st.lists(st.integers(0, len(events) - 1), max_size=5))
    return [e for _, e in events], expire_at


@settings(max_examples=150, deadline=None)
@given(disordered_streams())
def test_out_of_order_streams_with_reloads_and_expiry_equal_the_reference(
    stream: tuple[list[Tx | Report], list[int]],
) -> None:
    events, expire_at = stream
    expected = reference_features(events, DEFAULT_FEATURES)
    engine = OnlineEngine()
    now = T0
    for k, event in enumerate(events):
        if isinstance(event, Tx):
            got = engine.transaction(
                event.time_ms, event.customer_id, event.terminal_id, event.amount
            )
            assert got == pytest.approx(expected[event.tx_id], abs=1e-9, rel=0)
            now = max(now, event.time_ms)
        else:
            engine.fraud_report(
                event.tx_id,
                event.tx_time_ms,
                event.customer_id,
                event.terminal_id,
                event.reported_at_ms,
            )
        # What a table does between events: store bytes, load them back.
        for states in engine.states.values():
            for key, state in states.items():
                states[key] = EntityState.from_bytes(state.to_bytes())
        if k in expire_at:
            engine.expire(now)


def test_terminal_records_accept_anything_inside_the_retention() -> None:
    online = OnlineFeatures()
    windows = online.entities[Entity.TERMINAL]
    state = EntityState()
    windows.record(state, T0 + 50 * DAY, 1.0, "C1")
    windows.record(state, T0 + 20 * DAY, 1.0, "C2")  # 30 days behind: kept, in order
    assert state.event_times() == [T0 + 20 * DAY, T0 + 50 * DAY]
    with pytest.raises(EventTooOldError):
        windows.record(state, T0 + 50 * DAY - windows.retention_ms, 1.0, "C3")
    assert len(state) == 2
    out = online.new_vector()
    windows.read_into(state, T0 + 50 * DAY, 1.0, out)
    assert out[online.names.index("TERMINAL_ID_NB_TX_30DAY_WINDOW")] == 1


# --- reports and transactions in any order ------------------------------------------------


def test_a_report_far_ahead_of_the_terminals_transactions_moves_no_clock() -> None:
    """A backlog's reports consumed before its transactions must not refuse them."""
    windows = OnlineFeatures().entities[Entity.TERMINAL]
    state = EntityState()
    assert windows.record_fraud(state, T0 + 100 * DAY, "f", T0 + 101 * DAY)
    assert state.watermark_ms is None
    for k in range(3):
        windows.record(state, T0 + k * DAY, 1.0, f"C{k}")  # not too late: nothing refused
    assert state.watermark_ms == T0 + 2 * DAY
    assert list(state.fraud_times) == [T0 + 100 * DAY]
    copy = EntityState.from_bytes(state.to_bytes())
    assert copy == state
    assert list(copy.fraud_times) == [T0 + 100 * DAY]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 60 * 24), st.sampled_from([1.0, 2.0])), max_size=12),
    st.lists(
        st.tuples(st.integers(0, 60 * 24), st.integers(0, 10 * 24), st.sampled_from("abcd")),
        max_size=6,
    ),
    st.randoms(use_true_random=False),
)
def test_reports_interleaved_anyhow_with_transactions_give_the_same_state_and_reads(
    transactions: list[tuple[int, float]],
    reports: list[tuple[int, int, str]],
    rng: random.Random,
) -> None:
    """Reports first, last or anywhere: the terminal's state and its reads are the same."""
    windows = OnlineFeatures().entities[Entity.TERMINAL]

    def run(order: list[tuple[str, int]]) -> tuple[bytes, list[float]]:
        state = EntityState()
        for kind, i in order:
            if kind == "tx":
                hour, amount = transactions[i]
                with contextlib.suppress(EventTooOldError):
                    windows.record(state, T0 + hour * HOUR, amount, f"C{i}")
            else:
                hour, delay, tx_id = reports[i]
                time = T0 + hour * HOUR
                windows.record_fraud(state, time, tx_id + str(hour), time + delay * HOUR)
            state = EntityState.from_bytes(state.to_bytes())
        vector = OnlineFeatures().new_vector()
        windows.read_into(state, T0 + 70 * DAY, 1.0, vector, refuse_late=False)
        return state.to_bytes(), vector

    txs = [("tx", i) for i in range(len(transactions))]
    rps = [("report", i) for i in range(len(reports))]
    first = run(rps + txs)
    last = run(txs + rps)
    mixed = list(txs)
    for report in rps:
        mixed.insert(rng.randint(0, len(mixed)), report)
    assert run(mixed) == first == last


def test_a_state_written_with_fraud_times_as_offsets_reads_the_same() -> None:
    windows = OnlineFeatures().entities[Entity.TERMINAL]
    state = EntityState()
    windows.record(state, T0, 1.0, "C1")
    windows.record_fraud(state, T0 - HOUR, "f", T0)
    new = state.to_bytes()
    # The same state as an older worker wrote it: fraud times as 4-byte offsets.
    old = bytearray(new)
    old[1] &= ~ABSOLUTE_FRAUD_TIMES
    at = 30 + 4  # header, one transaction time
    offset = (T0 - HOUR - state.base_ms).to_bytes(4, "little")
    old[at : at + 8] = offset
    old_state = EntityState.from_bytes(bytes(old))  # 4 bytes shorter
    assert list(old_state.fraud_times) == [T0 - HOUR]
    assert old_state.to_bytes() == new
