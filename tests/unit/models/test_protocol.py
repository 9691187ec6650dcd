"""The handbook protocol: periods, known compromised cards, prequential folds."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from features import dataset
from models.protocol import (
    Protocol,
    ProtocolError,
    latest_train_start,
    prequential_splits,
    split,
)

START = date(2018, 7, 1)


def frame(rows: list[tuple[int, str, bool]], days: int = 30) -> pl.DataFrame:
    """Transactions at noon of day offsets from START; a genuine filler every day."""
    filler = [(d, "FILL", False) for d in range(days)]
    records = rows + filler
    return pl.DataFrame(
        {
            dataset.TX_ID: [f"{i:04d}" for i in range(len(records))],
            dataset.TX_TIME: [
                datetime(START.year, START.month, START.day, 12, tzinfo=UTC) + timedelta(days=d)
                for d, _, _ in records
            ],
            dataset.CUSTOMER_ID: [c for _, c, _ in records],
            dataset.IS_FRAUD: [f for _, _, f in records],
        },
        schema_overrides={dataset.TX_TIME: dataset.TIMESTAMP},
    )


def customers_on(test: pl.DataFrame, offset: int) -> set[str]:
    day = START + timedelta(days=offset)
    return set(test.filter(pl.col("day") == day)[dataset.CUSTOMER_ID].to_list())


def test_periods_are_a_train_week_a_delay_and_a_test_week() -> None:
    result = split(frame([]), START)
    assert result.train["day"].unique().sort().to_list() == [
        START + timedelta(days=d) for d in range(7)
    ]
    assert result.test["day"].unique().sort().to_list() == [
        START + timedelta(days=d) for d in range(14, 21)
    ]
    assert result.describe() == "train 2018-07-01..2018-07-07, test 2018-07-15..2018-07-21"


def test_cards_known_compromised_leave_the_test_set_day_by_day() -> None:
    rows = [
        (3, "TRAIN_FRAUD", True),  # fraud in the train week: known on every test day
        *[(d, "TRAIN_FRAUD", False) for d in range(14, 21)],
        (7, "DELAY_FRAUD", True),  # first delay day: known once older than the delay
        *[(d, "DELAY_FRAUD", False) for d in range(14, 21)],
        (15, "TEST_FRAUD", True),  # fraud in the test week: never known during it
        (16, "TEST_FRAUD", False),
        *[(d, "BEFORE", False) for d in range(14, 21)],
    ]
    result = split(frame(rows), START)
    # A fraud on day 7 is known on test day d when 7 < d - 7, i.e. from day 15 on.
    assert "DELAY_FRAUD" in customers_on(result.test, 14)
    assert "DELAY_FRAUD" not in customers_on(result.test, 15)
    for offset in range(14, 21):
        assert "TRAIN_FRAUD" not in customers_on(result.test, offset)
        assert "BEFORE" in customers_on(result.test, offset)
    assert {"TEST_FRAUD"} <= customers_on(result.test, 15) & customers_on(result.test, 16)
    assert result.removed_test_rows == 7 + 6


def test_frauds_before_training_do_not_remove_cards() -> None:
    # The handbook's known set starts with the train period's frauds.
    rows = [(0, "EARLY", True), *[(d, "EARLY", False) for d in range(21, 28)]]
    result = split(frame(rows), START + timedelta(days=7))
    assert "EARLY" in customers_on(result.test, 21)


def test_a_dataset_too_short_is_refused_with_the_days_it_needs() -> None:
    with pytest.raises(ProtocolError, match=r"needs days the dataset \(2018-07-01\.\.2018-07-20\)"):
        split(frame([], days=20), START)
    with pytest.raises(ProtocolError, match="needs days"):
        split(frame([]), START - timedelta(days=1))


def test_a_dataset_without_labels_is_refused() -> None:
    with pytest.raises(ProtocolError, match="no 'is_fraud' labels"):
        split(frame([]).drop(dataset.IS_FRAUD), START)


def test_prequential_folds_step_back_one_test_period_each() -> None:
    folds = prequential_splits(frame([], days=40), START + timedelta(days=14), folds=3)
    assert [f.train_start for f in folds] == [
        START + timedelta(days=14),
        START + timedelta(days=7),
        START,
    ]
    assert [f.test_start - f.train_start for f in folds] == [timedelta(days=14)] * 3


def test_validation_folds_end_before_training_starts() -> None:
    protocol = Protocol()
    train_start = START + timedelta(days=21)
    first = split(frame([], days=40), protocol.validation_start(train_start), protocol)
    assert first.test_end < train_start + timedelta(days=protocol.train_days)
    assert first.test_start == train_start  # its test week is the assessed train week


def test_latest_train_start_ends_the_test_period_on_the_last_day() -> None:
    assert latest_train_start(frame([], days=30)) == START + timedelta(days=30 - 21)


def test_protocol_lengths_are_checked() -> None:
    with pytest.raises(ValueError, match="train_days"):
        Protocol(train_days=0)
    with pytest.raises(ValueError, match="delay_days"):
        Protocol(delay_days=-1)
