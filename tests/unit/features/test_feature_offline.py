"""The offline engine on small frames whose features can be checked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from features import dataset
from features.aggregations import FraudRisk
from features.offline import compute_features
from features.spec import (
    DEFAULT_FEATURES,
    HANDBOOK_FEATURES,
    KNOWN_FRAUD_DELAY,
    TERMINAL_POLICY,
    Entity,
    Feature,
    FeatureSet,
)

T0 = datetime(2024, 4, 1, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
MS = timedelta(milliseconds=1)


def frame(rows: list[tuple[str, datetime, str, str, float, bool, datetime | None]]) -> pl.DataFrame:
    columns = [
        dataset.TX_ID,
        dataset.TX_TIME,
        dataset.CUSTOMER_ID,
        dataset.TERMINAL_ID,
        dataset.AMOUNT,
        dataset.IS_FRAUD,
        dataset.REPORTED_AT,
    ]
    out = pl.DataFrame(rows, schema=columns, orient="row")
    return out.with_columns(
        pl.col(dataset.TX_TIME).cast(dataset.TIMESTAMP),
        pl.col(dataset.REPORTED_AT).cast(dataset.TIMESTAMP),
    )


def by_id(features: pl.DataFrame, column: str) -> dict[str, float]:
    return dict(zip(features[dataset.TX_ID], features[column], strict=True))


def test_output_is_the_input_in_canonical_order_with_features_appended() -> None:
    data = frame(
        [
            ("b", T0 + DAY, "C1", "T1", 10.0, False, None),
            ("a", T0 + DAY, "C1", "T1", 20.0, False, None),
            ("c", T0, "C2", "T1", 30.0, False, None),
        ]
    )
    out = compute_features(data)
    assert out[dataset.TX_ID].to_list() == ["c", "a", "b"]
    assert out.columns == [*data.columns, *DEFAULT_FEATURES.names]
    for f in DEFAULT_FEATURES:
        assert out.schema[f.name] == f.dtype.polars_dtype


def test_equal_timestamps_count_in_tx_id_order() -> None:
    data = frame(
        [
            ("b", T0, "C1", "T1", 10.0, False, None),
            ("a", T0, "C1", "T2", 30.0, False, None),
        ]
    )
    out = compute_features(data)
    assert by_id(out, "CUSTOMER_ID_NB_TX_1DAY_WINDOW") == {"a": 1, "b": 2}
    assert by_id(out, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW") == {"a": 30.0, "b": 20.0}
    assert by_id(out, "CUSTOMER_ID_NB_TERMINALS_1DAY_WINDOW") == {"a": 1, "b": 2}
    assert by_id(out, "CUSTOMER_ID_SECONDS_SINCE_PREV_TX") == {"a": 30 * 86_400, "b": 0.0}


def test_customer_windows_are_open_at_the_old_end() -> None:
    data = frame(
        [
            ("a", T0, "C1", "T1", 10.0, False, None),
            ("b", T0 + DAY - timedelta(milliseconds=1), "C1", "T1", 20.0, False, None),
            ("c", T0 + DAY, "C1", "T1", 30.0, False, None),
            ("d", T0 + 30 * DAY, "C1", "T1", 40.0, False, None),
        ]
    )
    out = compute_features(data)
    assert by_id(out, "CUSTOMER_ID_NB_TX_1DAY_WINDOW") == {"a": 1, "b": 2, "c": 2, "d": 1}
    assert by_id(out, "CUSTOMER_ID_NB_TX_30DAY_WINDOW") == {"a": 1, "b": 2, "c": 3, "d": 3}
    assert by_id(out, "CUSTOMER_ID_AMOUNT_TO_AVG_30DAY_WINDOW")["d"] == 40.0 / 30.0


def test_terminal_risk_counts_frauds_known_an_hour_before_the_read() -> None:
    data = frame(
        [
            ("f1", T0, "C1", "T1", 10.0, True, T0 + 2 * DAY),
            ("f2", T0 + DAY, "C2", "T1", 10.0, True, T0 + 10 * DAY),  # later than the delay
            ("g1", T0 + DAY, "C3", "T1", 10.0, False, None),
            ("r1", T0 + 8 * DAY, "C4", "T1", 10.0, False, None),
            ("r2", T0 + 10 * DAY, "C5", "T1", 10.0, False, None),  # same ms as f2's report
            ("r3", T0 + 10 * DAY + HOUR - MS, "C6", "T1", 10.0, False, None),
            ("r4", T0 + 10 * DAY + HOUR, "C7", "T1", 10.0, False, None),
            ("other", T0 + 8 * DAY, "C4", "T2", 10.0, False, None),
        ]
    )
    out = compute_features(data)
    count = by_id(out, "TERMINAL_ID_NB_TX_7DAY_WINDOW")
    risk = by_id(out, "TERMINAL_ID_RISK_7DAY_WINDOW")
    # r1 at T0+8d sees (T0-6d, T0+1d]: f1, f2, g1; f2 not yet reported.
    assert count["r1"] == 3
    assert risk["r1"] == pytest.approx(1 / 3)
    # r2 to r4 see the same three; f2, reported at T0+10d, counts from T0+10d+1h on.
    assert [count[r] for r in ("r2", "r3", "r4")] == [3, 3, 3]
    assert risk["r2"] == pytest.approx(1 / 3)
    assert risk["r3"] == pytest.approx(1 / 3)
    assert risk["r4"] == pytest.approx(2 / 3)
    assert count["other"] == 0
    assert risk["other"] == 0.0
    assert by_id(out, "TERMINAL_ID_NB_TX_1DAY_WINDOW")["r1"] == 2  # (T0, T0+1d]


def test_the_risk_counts_frauds_reported_at_least_an_hour_before_the_read() -> None:
    """A fraud counts at t when reported at or before t - 1h, to the millisecond."""
    assert timedelta(hours=1) == KNOWN_FRAUD_DELAY
    data = frame(
        [
            ("on_time", T0, "C1", "T1", 10.0, True, T0 + 7 * DAY - HOUR),
            ("one_ms_late", T0, "C2", "T1", 10.0, True, T0 + 7 * DAY - HOUR + MS),
            ("at_edge", T0 + 7 * DAY, "C3", "T1", 10.0, False, None),
            ("a_ms_later", T0 + 7 * DAY + MS, "C4", "T1", 10.0, False, None),
        ]
    )
    out = compute_features(data)
    for days in (1, 7, 30):
        assert by_id(out, f"TERMINAL_ID_NB_TX_{days}DAY_WINDOW")["at_edge"] == 2
        risk = by_id(out, f"TERMINAL_ID_RISK_{days}DAY_WINDOW")
        assert risk["at_edge"] == 0.5
        assert risk["a_ms_later"] == 1.0


@pytest.mark.parametrize(
    ("known_delay", "expected"),
    [(timedelta(0), 1.0), (timedelta(hours=1), 0.5), (timedelta(hours=2), 0.0)],
)
def test_the_risk_reads_reports_its_known_delay_old(
    known_delay: timedelta, expected: float
) -> None:
    risk = Feature("RISK", Entity.TERMINAL, FraudRisk(known_delay), DAY, DAY)
    features = FeatureSet((risk,), {Entity.TERMINAL: TERMINAL_POLICY})
    data = frame(
        [
            ("a", T0, "C1", "T1", 10.0, True, T0 + DAY - HOUR),
            ("b", T0, "C2", "T1", 10.0, True, T0 + DAY),
            ("read", T0 + DAY, "C3", "T1", 10.0, False, None),
        ]
    )
    assert by_id(compute_features(data, features), "RISK")["read"] == expected


def test_frauds_without_a_report_time_are_known_after_the_delay_and_labels_are_optional() -> None:
    data = frame(
        [
            ("f", T0, "C1", "T1", 10.0, True, None),
            ("r", T0 + 7 * DAY, "C2", "T1", 10.0, False, None),
        ]
    )
    assert by_id(compute_features(data), "TERMINAL_ID_RISK_1DAY_WINDOW")["r"] == 1.0
    unlabelled = data.drop(dataset.IS_FRAUD, dataset.REPORTED_AT)
    assert by_id(compute_features(unlabelled), "TERMINAL_ID_RISK_1DAY_WINDOW")["r"] == 0.0


def test_weekend_and_night_are_utc_calendar_facts() -> None:
    saturday = datetime(2024, 4, 6, tzinfo=UTC)
    data = frame(
        [
            ("fri", saturday - timedelta(milliseconds=1), "C1", "T1", 1.0, False, None),
            (
                "sat",
                saturday + timedelta(hours=6, minutes=59, seconds=59),
                "C1",
                "T1",
                1.0,
                False,
                None,
            ),
            ("sun", saturday + DAY + timedelta(hours=7), "C1", "T1", 1.0, False, None),
            ("mon", saturday + 2 * DAY, "C1", "T1", 1.0, False, None),
        ]
    )
    out = compute_features(data)
    assert by_id(out, "TX_DURING_WEEKEND") == {"fri": 0, "sat": 1, "sun": 1, "mon": 0}
    assert by_id(out, "TX_DURING_NIGHT") == {"fri": 0, "sat": 1, "sun": 0, "mon": 1}


def test_naive_and_microsecond_times_are_read_as_utc_milliseconds() -> None:
    data = frame([("a", T0, "C1", "T1", 1.0, False, None)])
    naive = data.with_columns(
        pl.col(dataset.TX_TIME).dt.replace_time_zone(None).cast(pl.Datetime("us"))
    )
    out = compute_features(naive)
    assert out.schema[dataset.TX_TIME] == dataset.TIMESTAMP
    assert out[dataset.TX_TIME].to_list() == [T0]


def test_an_empty_dataset_gives_an_empty_frame() -> None:
    out = compute_features(frame([]), HANDBOOK_FEATURES)
    assert out.height == 0
    assert out.columns[-15:] == list(HANDBOOK_FEATURES.names)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(dataset.CUSTOMER_ID), "lacks required columns"),
        (lambda f: f.with_columns(pl.lit(None, pl.String).alias(dataset.TERMINAL_ID)), "nulls"),
        (lambda f: f.with_columns(pl.lit(1).alias(dataset.TX_TIME)), "must be a datetime"),
    ],
)
def test_bad_datasets_are_refused_with_a_reason(change: object, message: str) -> None:
    data = frame(
        [
            ("a", T0, "C1", "T1", 1.0, False, None),
            ("b", T0, "C1", "T1", 1.0, False, None),
        ]
    )
    assert callable(change)
    with pytest.raises(ValueError, match=message):
        compute_features(change(data))


def test_a_transaction_id_seen_twice_keeps_its_first_row_as_the_live_scorer_does() -> None:
    data = frame(
        [
            ("a", T0, "C1", "T1", 1.0, False, None),
            ("a", T0, "C1", "T1", 1.0, False, None),  # delivered twice
            ("b", T0 + timedelta(hours=1), "C1", "T2", 5.0, False, None),
            ("b", T0 + timedelta(hours=2), "C1", "T3", 7.0, False, None),  # id reused
        ]
    )
    out = compute_features(data, HANDBOOK_FEATURES)
    assert out[dataset.TX_ID].to_list() == ["a", "b"]
    assert out["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].to_list() == [1, 2]
    assert out[dataset.AMOUNT].to_list() == [1.0, 5.0]
