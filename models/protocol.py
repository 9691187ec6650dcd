"""The handbook's assessment protocol: a train week, a 7-day delay, a test week.

Fraud labels arrive late: a transaction's label is known for sure only once it is older
than the delay (7 days here, as in the simulator's reports and the terminal features).
A model trained on the week that ends today can therefore first be trusted on labels of
transactions a delay later, so the protocol leaves the delay out and assesses on the week
after it (Le Borgne et al., handbook, chapter 5 "Validation strategies"):

    [ train: train_days ][ delay: delay_days ][ test: test_days ]

Cards already known as compromised are removed from the test set: on test day ``d``, the
customers with a fraud on a day in ``[train start, d - delay)`` are known (their frauds
are older than the delay) and would already be blocked, so their transactions that day
are dropped. This is the handbook's ``get_train_test_set`` rule, day by day: the known set
grows through the test week as delay-period frauds age past the delay.

Prequential folds, for model selection, slide the whole protocol back by a test period
per fold. Validation folds end before the assessed train week starts, so choosing a model
on them never looks at test data: the first validation fold's test week is the assessed
train week (start ``- (delay + test)``), as in the handbook's chapter 5.

Days are UTC calendar days of ``tx_time``. Frames are those of `features.offline`: the
dataset's columns with the features appended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

import polars as pl

from features import dataset

#: Name of the UTC calendar day column the protocol adds to the frames it returns.
DAY: Final = "day"


class ProtocolError(ValueError):
    """The dataset cannot be split as asked (too short, or lacking labels)."""


@dataclass(frozen=True, slots=True)
class Protocol:
    """Lengths of the protocol's periods, in days.

    Attributes:
        train_days: Days of transactions the model learns from.
        delay_days: Days left out between train and test, while labels are unknown.
        test_days: Days of transactions the model is assessed on.
    """

    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7

    def __post_init__(self) -> None:
        for name in ("train_days", "test_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.delay_days < 0:
            raise ValueError(f"delay_days must not be negative, got {self.delay_days}")

    @property
    def span_days(self) -> int:
        """Days from the first train day to the last test day, both included."""
        return self.train_days + self.delay_days + self.test_days

    def test_start(self, train_start: date) -> date:
        """The first test day of a split whose training starts on ``train_start``."""
        return train_start + timedelta(days=self.train_days + self.delay_days)

    def validation_start(self, train_start: date) -> date:
        """Train start of the first validation fold: its test period ends before training.

        Its test period is ``[train_start - delay, ...)`` minus the delay again, that is it
        starts ``delay + test`` days before ``train_start``; with the defaults its test week
        is exactly the assessed train week.
        """
        return train_start - timedelta(days=self.delay_days + self.test_days)


@dataclass(frozen=True, slots=True)
class Split:
    """One train/test split of the protocol.

    Attributes:
        train_start: First train day.
        test_start: First test day.
        protocol: The period lengths.
        train: Transactions of the train period, with a ``day`` column.
        test: Transactions of the test period, known compromised cards removed, with a
            ``day`` column.
        removed_test_rows: Test transactions dropped as those of known compromised cards.
    """

    train_start: date
    test_start: date
    protocol: Protocol
    train: pl.DataFrame
    test: pl.DataFrame
    removed_test_rows: int

    @property
    def train_end(self) -> date:
        """The last train day."""
        return self.train_start + timedelta(days=self.protocol.train_days - 1)

    @property
    def test_end(self) -> date:
        """The last test day."""
        return self.test_start + timedelta(days=self.protocol.test_days - 1)

    def describe(self) -> str:
        """The split's periods in one line, for reports and metadata."""
        return (
            f"train {self.train_start}..{self.train_end}, test {self.test_start}..{self.test_end}"
        )


#: The handbook's protocol: a train week, a 7-day delay, a test week.
HANDBOOK_PROTOCOL: Final = Protocol()


def with_day(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with its UTC calendar day column added (kept when already there)."""
    if DAY in frame.columns:
        return frame
    return frame.with_columns(pl.col(dataset.TX_TIME).dt.date().alias(DAY))


def dataset_days(frame: pl.DataFrame) -> tuple[date, date]:
    """The first and the last calendar day of a dataset.

    Raises:
        ProtocolError: The dataset is empty.
    """
    if frame.height == 0:
        raise ProtocolError("the dataset has no transactions")
    days = with_day(frame)[DAY]
    first, last = days.min(), days.max()
    assert isinstance(first, date)
    assert isinstance(last, date)
    return first, last


def split(frame: pl.DataFrame, train_start: date, protocol: Protocol = HANDBOOK_PROTOCOL) -> Split:
    """Split a labelled dataset into the protocol's train and test sets.

    Args:
        frame: Transactions with ``tx_time``, ``customer_id`` and ``is_fraud`` (and
            usually the features).
        train_start: First train day.
        protocol: The period lengths.

    Returns:
        The split, known compromised cards removed from the test set.

    Raises:
        ProtocolError: No ``is_fraud`` column, or the dataset does not cover the periods.
    """
    if dataset.IS_FRAUD not in frame.columns:
        raise ProtocolError(f"the dataset has no {dataset.IS_FRAUD!r} labels to learn from")
    frame = with_day(frame)
    first, last = dataset_days(frame)
    test_start = protocol.test_start(train_start)
    test_end = test_start + timedelta(days=protocol.test_days - 1)
    if train_start < first or test_end > last:
        raise ProtocolError(
            f"the split train {train_start}..+{protocol.train_days}d, "
            f"test {test_start}..{test_end} needs days the dataset ({first}..{last}) lacks"
        )
    day = pl.col(DAY)
    train_end_excl = train_start + timedelta(days=protocol.train_days)
    train = frame.filter((day >= train_start) & (day < train_end_excl))
    test = frame.filter((day >= test_start) & (day <= test_end))

    # First day each customer had a fraud since training began; a card is known on test
    # day d when that day is older than d - delay.
    first_fraud = (
        frame.filter(pl.col(dataset.IS_FRAUD) & (day >= train_start) & (day < test_end))
        .group_by(dataset.CUSTOMER_ID)
        .agg(day.min().alias("_first_fraud"))
    )
    known = pl.col("_first_fraud") < day - pl.duration(days=protocol.delay_days)
    kept = (
        test.join(first_fraud, on=dataset.CUSTOMER_ID, how="left", maintain_order="left")
        .filter(~known.fill_null(False))
        .drop("_first_fraud")
    )
    return Split(train_start, test_start, protocol, train, kept, test.height - kept.height)


def prequential_splits(
    frame: pl.DataFrame, train_start: date, folds: int, protocol: Protocol = HANDBOOK_PROTOCOL
) -> list[Split]:
    """Prequential folds: the protocol repeated, each fold one test period further back.

    Args:
        frame: The labelled dataset.
        train_start: Train start of the most recent fold.
        folds: Number of folds.
        protocol: The period lengths.

    Returns:
        The splits, most recent first.

    Raises:
        ProtocolError: A fold needs days the dataset lacks.
    """
    if folds < 1:
        raise ValueError(f"folds must be at least 1, got {folds}")
    frame = with_day(frame)
    return [
        split(frame, train_start - timedelta(days=fold * protocol.test_days), protocol)
        for fold in range(folds)
    ]


def latest_train_start(frame: pl.DataFrame, protocol: Protocol = HANDBOOK_PROTOCOL) -> date:
    """The latest train start whose test period still ends on the dataset's last day.

    Raises:
        ProtocolError: The dataset is empty.
    """
    _, last = dataset_days(frame)
    return last - timedelta(days=protocol.span_days - 1)
