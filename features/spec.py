"""The feature spec: every model input declared once, as data, read by both engines.

A feature is a name, the entity it describes, an aggregation, and for windowed entities a
window and a delay. The offline engine (`features.offline`, polars, whole datasets, for
training) and the online engine (`features.online`, incremental state per entity, for the
agents) both compile the same `FeatureSet`, so a feature cannot exist in one and not in
the other, and the parity test proves they compute the same numbers. Adding a feature is
a line in `DEFAULT_FEATURES` plus, at most, a new aggregation in `features.aggregations`.

Windows, exactly (t is the transaction's time, d the delay, n the window length):

- A window covers event times in ``(t - d - n, t - d]``: open at the old end, closed at
  the new end, at millisecond resolution, with no bucketing anywhere.
- With ``d == 0`` the window holds the current transaction and every transaction of the
  entity that precedes it in the canonical order ``(tx_time, tx_id)``; a transaction with
  the same timestamp and a larger ``tx_id`` is not in it. Online, "precedes" means
  "arrived earlier", so the two agree when transactions with equal timestamps arrive in
  ``tx_id`` order (the replay sends them so; see `features.online` for the rest).
- With ``d > 0`` the window holds every transaction of the entity whose time is in
  ``(t - d - n, t - d]``; the current transaction is never in it.

Times are epoch milliseconds UTC (`int`) in the online engine and
``pl.Datetime("ms", "UTC")`` in datasets (`features.dataset`).

`Feature` shows a window and a delay at work on five transactions, and `FeatureSet` how
features are declared together; the examples run as tests.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

import polars as pl

from features import aggregations, dataset
from features.aggregations import (
    Amount,
    AmountToMean,
    Count,
    DistinctPeers,
    DuringNight,
    DuringWeekend,
    FraudRisk,
    KnownFrauds,
    MeanAmount,
    SecondsSincePrevious,
    TransactionAttribute,
    WindowAggregation,
)

#: Time offsets inside an online state are unsigned 32-bit milliseconds from the state's
#: base, so an entity's retention (longest look-back plus allowed lateness) must stay below
#: 2**32 ms, about 49.7 days. A longer window needs a wider offset type in `features.online`.
MAX_RETENTION_MS: Final = 2**32 - 1


class Entity(enum.Enum):
    """What a feature describes, and so which state the online engine keeps for it."""

    TRANSACTION = "transaction"
    CUSTOMER = "customer"
    TERMINAL = "terminal"

    @property
    def key_column(self) -> str:
        """The dataset column that identifies one entity (the table key online)."""
        return _KEY_COLUMNS[self]

    @property
    def peer_column(self) -> str:
        """The column naming the other side of a transaction: terminal for a customer."""
        return _PEER_COLUMNS[self]


_KEY_COLUMNS: Final = {
    Entity.TRANSACTION: dataset.TX_ID,
    Entity.CUSTOMER: dataset.CUSTOMER_ID,
    Entity.TERMINAL: dataset.TERMINAL_ID,
}
_PEER_COLUMNS: Final = {
    Entity.TRANSACTION: dataset.TX_ID,
    Entity.CUSTOMER: dataset.TERMINAL_ID,
    Entity.TERMINAL: dataset.CUSTOMER_ID,
}


class FeatureType(enum.Enum):
    """The type of a feature's values; online every value is a Python float of that type."""

    FLOAT = "float"
    COUNT = "count"
    FLAG = "flag"

    @property
    def polars_dtype(self) -> pl.DataType:
        """The column type of this feature in an offline frame."""
        return _POLARS_TYPES[self]


_POLARS_TYPES: Final[dict[FeatureType, pl.DataType]] = {
    FeatureType.FLOAT: pl.Float64(),
    FeatureType.COUNT: pl.Int64(),
    FeatureType.FLAG: pl.Int8(),
}


@dataclass(frozen=True, slots=True)
class EntityPolicy:
    """How much history the online engine keeps for one windowed entity, and how late.

    Attributes:
        allowed_lateness: How far behind the entity's newest event time a transaction may
            be and still be applied exactly. Older ones are refused
            (`features.online.EventTooOldError`): their windows would reach history the
            state has already dropped, so their features could not equal the offline ones.
        max_events: Hard bound on the transactions one state holds. Exactness holds while
            an entity stays under it; past it the oldest are dropped and counted in the
            state's ``overflow`` (a metric for the agents). Sized far above real entities.
        max_frauds: Hard bound on the fraud reports one state holds, same rule.
        dedupe: Whether states remember the ids of their transactions within the
            allowed lateness, so that a transaction delivered twice (a producer's retry)
            is counted once and an id reused with other content is refused
            (`features.online.DuplicateTransactionError`). The customer's: its agent
            reads Kafka records as producers wrote them.
    """

    allowed_lateness: timedelta
    max_events: int
    max_frauds: int
    dedupe: bool = False

    @property
    def allowed_lateness_ms(self) -> int:
        """The allowed lateness in milliseconds."""
        return _to_ms(self.allowed_lateness, "allowed_lateness")


@dataclass(frozen=True, slots=True)
class Feature:
    """One model input.

    Attributes:
        name: Column name offline, position name online; unique in a feature set.
        entity: What the feature describes.
        aggregation: How it is computed: a `TransactionAttribute` for transaction
            features, a `WindowAggregation` for customer and terminal features.
        window: Length n of the window ``(t - d - n, t - d]``; None for transaction
            features.
        delay: Delay d of the window; zero means the current transaction is included.
        dtype: The type of the values.
        description: What the feature means, for people (reports, alert reasons).

    Examples:
        A customer's transactions over the last day, and over the day before it (the same
        window, delayed by a day):

        >>> day = timedelta(days=1)
        >>> last_day = Feature("NB_TX_1DAY", Entity.CUSTOMER, Count(), day, timedelta(0))
        >>> day_before = Feature("NB_TX_1DAY_1DAY_AGO", Entity.CUSTOMER, Count(), day, day)
        >>> day_before.window_ms, day_before.delay_ms, day_before.reach_ms
        (86400000, 86400000, 172800000)

        One customer's five transactions, ten hours apart. At time t the first feature
        counts those in ``(t - 24 h, t]``, this one included; the second those in
        ``(t - 48 h, t - 24 h]``:

        >>> from datetime import UTC, datetime
        >>> counts = FeatureSet((last_day, day_before), {Entity.CUSTOMER: CUSTOMER_POLICY})
        >>> hours = [0, 10, 20, 30, 40]
        >>> start = datetime(2018, 4, 1, tzinfo=UTC)
        >>> transactions = pl.DataFrame(
        ...     {
        ...         "tx_id": [f"t{h}" for h in hours],
        ...         "tx_time": [start + timedelta(hours=h) for h in hours],
        ...         "customer_id": "C1",
        ...         "terminal_id": "T1",
        ...         "amount": 10.0,
        ...     }
        ... )
        >>> from features.offline import compute_features
        >>> offline = compute_features(transactions, counts)
        >>> offline["NB_TX_1DAY"].to_list(), offline["NB_TX_1DAY_1DAY_AGO"].to_list()
        ([1.0, 2.0, 3.0, 3.0, 3.0], [0.0, 0.0, 0.0, 1.0, 2.0])

        The online engine, given the same transactions one at a time, gives the same:

        >>> from features.online import OnlineEngine
        >>> engine = OnlineEngine(counts)
        >>> start_ms = int(start.timestamp() * 1000)
        >>> [engine.transaction(start_ms + h * 3_600_000, "C1", "T1", 10.0) for h in hours]
        [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [3.0, 1.0], [3.0, 2.0]]
    """

    name: str
    entity: Entity
    aggregation: TransactionAttribute | WindowAggregation
    window: timedelta | None = None
    delay: timedelta = timedelta(0)
    dtype: FeatureType = FeatureType.FLOAT
    description: str = ""

    def __post_init__(self) -> None:
        windowed = self.entity is not Entity.TRANSACTION
        if windowed != isinstance(self.aggregation, WindowAggregation):
            raise ValueError(
                f"{self.name}: {self.entity.value} features need a "
                f"{'WindowAggregation' if windowed else 'TransactionAttribute'}"
            )
        if windowed and (self.window is None or self.window <= timedelta(0)):
            raise ValueError(f"{self.name}: a windowed feature needs a positive window")
        if not windowed and (self.window is not None or self.delay):
            raise ValueError(f"{self.name}: a transaction feature has no window or delay")
        if self.delay < timedelta(0):
            raise ValueError(f"{self.name}: the delay must not be negative")
        self.window_ms  # noqa: B018 - validates that the window is whole milliseconds
        self.delay_ms  # noqa: B018

    @property
    def window_ms(self) -> int:
        """The window length in milliseconds (0 for transaction features)."""
        return 0 if self.window is None else _to_ms(self.window, f"{self.name}.window")

    @property
    def delay_ms(self) -> int:
        """The delay in milliseconds."""
        return _to_ms(self.delay, f"{self.name}.delay")

    @property
    def reach_ms(self) -> int:
        """How far back from t this feature looks: delay plus window."""
        return self.delay_ms + self.window_ms


@dataclass(frozen=True)
class FeatureSet:
    """An ordered set of features and the history policy of each windowed entity.

    The order is the order of the columns offline and of the vector online, so it is the
    order a model is trained and served with.

    Attributes:
        features: The features, in model order.
        policies: History policy per windowed entity (customer, terminal).

    Examples:
        >>> amount = Feature("TX_AMOUNT", Entity.TRANSACTION, Amount())
        >>> week = Feature(
        ...     "NB_TX_7DAY", Entity.CUSTOMER, Count(), timedelta(days=7), dtype=FeatureType.COUNT
        ... )
        >>> features = FeatureSet((amount, week), {Entity.CUSTOMER: CUSTOMER_POLICY})
        >>> features.names
        ('TX_AMOUNT', 'NB_TX_7DAY')
        >>> features.retention_ms(Entity.CUSTOMER) // 86_400_000  # 7 days + 1 of lateness
        8

        A windowed entity needs its policy, and an aggregation fits its entity:

        >>> FeatureSet((week,))
        Traceback (most recent call last):
        ...
        ValueError: no EntityPolicy for customer features
        >>> Feature("AMOUNT_1DAY", Entity.CUSTOMER, Amount(), timedelta(days=1))
        Traceback (most recent call last):
        ...
        ValueError: AMOUNT_1DAY: customer features need a WindowAggregation
    """

    features: tuple[Feature, ...]
    policies: dict[Entity, EntityPolicy] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {duplicates}")
        for entity in self.windowed_entities:
            if entity not in self.policies:
                raise ValueError(f"no EntityPolicy for {entity.value} features")
            retention = self.retention_ms(entity)
            if retention > MAX_RETENTION_MS:
                raise ValueError(
                    f"{entity.value} retention {retention} ms exceeds the 32-bit offsets of "
                    f"the online state ({MAX_RETENTION_MS} ms)"
                )

    def __iter__(self) -> Iterator[Feature]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names, in model order."""
        return tuple(f.name for f in self.features)

    @property
    def windowed_entities(self) -> tuple[Entity, ...]:
        """The entities with windowed features, in first-appearance order."""
        seen: dict[Entity, None] = {}
        for f in self.features:
            if f.entity is not Entity.TRANSACTION:
                seen[f.entity] = None
        return tuple(seen)

    def of(self, entity: Entity) -> tuple[Feature, ...]:
        """The features of one entity, in model order."""
        return tuple(f for f in self.features if f.entity is entity)

    def reach_ms(self, entity: Entity) -> int:
        """The longest look-back (delay plus window) of the entity's features."""
        return max((f.reach_ms for f in self.of(entity)), default=0)

    def retention_ms(self, entity: Entity) -> int:
        """How much event time an online state of this entity keeps behind its newest event.

        Reach plus allowed lateness: exactly what a transaction that is late by the allowed
        lateness still needs to see.
        """
        return self.reach_ms(entity) + self.policies[entity].allowed_lateness_ms

    def select(self, names: Iterable[str]) -> FeatureSet:
        """A feature set with only the named features, in the order given."""
        by_name = {f.name: f for f in self.features}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise KeyError(f"unknown features: {missing}")
        chosen = tuple(by_name[n] for n in names)
        entities = {f.entity for f in chosen}
        return FeatureSet(chosen, {e: p for e, p in self.policies.items() if e in entities})


def _to_ms(value: timedelta, what: str) -> int:
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if micros % 1000:
        raise ValueError(f"{what} must be a whole number of milliseconds, got {value}")
    return micros // 1000


#: Customers: one day of lateness costs about 3 % more state than none. Per-customer
#: disorder comes from the source (acquirer batches), minutes at most in practice.
#: 4,096 transactions in 31 days is 130 a day, far beyond any card we would score.
CUSTOMER_POLICY: Final = EntityPolicy(
    allowed_lateness=timedelta(days=1), max_events=4096, max_frauds=256, dedupe=True
)

#: Terminals: disorder also comes from merging customer partitions into the terminal
#: agent, and the scorers read terminal states that the terminal agents (other
#: partitions, other workers) may have moved ahead of a scorer catching up. Seven days of
#: lateness keep those reads exact for a scorer up to a week behind, for 16 % more state
#: (44 days kept instead of 38). 65,536 transactions in 44 days is about 1,500 a day (a
#: busy supermarket till).
TERMINAL_POLICY: Final = EntityPolicy(
    allowed_lateness=timedelta(days=7), max_events=65_536, max_frauds=4096
)

_DELAY: Final = timedelta(days=7)  # the handbook's delay period: frauds known after 7 days

#: How old a fraud report must be before a terminal feature counts it: the delay of the
#: known-fraud counts' windows and the risks' `FraudRisk.known_delay` (whose default it
#: is, hence defined in `features.aggregations`). Terminal features then read only reports
#: at least this old, so a worker can wait until the terminal agents have applied them
#: without waiting on the live report stream. Long enough that, live, the terminal agents
#: have applied and committed every such report before a scorer reads the terminal (they
#: run seconds behind, and commit every second), so the worker computes exactly what the
#: offline engine does; short enough to cost nothing measurable: on the handbook split an
#: hour gave the known-fraud counts the same Average Precision as no delay (0.730 and
#: 0.731 for a baseline boosting model), a day cost 0.035. The risks' windows end 7 days
#: back, so it delays only their reports made more than 7 days minus an hour after the
#: transaction.
KNOWN_FRAUD_DELAY: Final = aggregations.KNOWN_FRAUD_DELAY


def _customer_windows() -> list[Feature]:
    out: list[Feature] = []
    for days in (1, 7, 30):
        window = timedelta(days=days)
        out += [
            Feature(
                f"CUSTOMER_ID_NB_TX_{days}DAY_WINDOW",
                Entity.CUSTOMER,
                Count(),
                window,
                dtype=FeatureType.COUNT,
                description=f"customer's transactions in the last {days} days, this one included",
            ),
            Feature(
                f"CUSTOMER_ID_AVG_AMOUNT_{days}DAY_WINDOW",
                Entity.CUSTOMER,
                MeanAmount(),
                window,
                description=f"customer's mean amount over the last {days} days, this one included",
            ),
        ]
    return out


def _terminal_windows() -> list[Feature]:
    out: list[Feature] = []
    for days in (1, 7, 30):
        window = timedelta(days=days)
        out += [
            Feature(
                f"TERMINAL_ID_NB_TX_{days}DAY_WINDOW",
                Entity.TERMINAL,
                Count(),
                window,
                _DELAY,
                FeatureType.COUNT,
                f"terminal's transactions over {days} days ending 7 days ago",
            ),
            Feature(
                f"TERMINAL_ID_RISK_{days}DAY_WINDOW",
                Entity.TERMINAL,
                FraudRisk(KNOWN_FRAUD_DELAY),
                window,
                _DELAY,
                FeatureType.FLOAT,
                f"share of the terminal's transactions over {days} days ending 7 days ago "
                "that had been reported as fraud an hour before the transaction (0 when none)",
            ),
        ]
    return out


#: The handbook's 15 inputs, in the handbook's order.
HANDBOOK_FEATURES: Final = FeatureSet(
    (
        Feature("TX_AMOUNT", Entity.TRANSACTION, Amount(), description="amount"),
        Feature(
            "TX_DURING_WEEKEND",
            Entity.TRANSACTION,
            DuringWeekend(),
            dtype=FeatureType.FLAG,
            description="1 on Saturday or Sunday (UTC)",
        ),
        Feature(
            "TX_DURING_NIGHT",
            Entity.TRANSACTION,
            DuringNight(),
            dtype=FeatureType.FLAG,
            description="1 between 00:00 and 06:59:59.999 (UTC)",
        ),
        *_customer_windows(),
        *_terminal_windows(),
    ),
    {Entity.CUSTOMER: CUSTOMER_POLICY, Entity.TERMINAL: TERMINAL_POLICY},
)

#: Beyond the handbook: does the amount stand out against the customer's own habits, is
#: the card used in a burst, at many terminals at once, and has the terminal had frauds
#: reported lately? The handbook's terminal risk waits 7 days for every fraud to be
#: reported; a terminal compromised since then has a zero risk for a week, while its
#: first reports come in within hours (36 % of the test frauds at compromised terminals
#: had a zero delayed risk). The known-fraud counts use reports as they come.
EXTRA_FEATURES: Final = (
    Feature(
        "CUSTOMER_ID_AMOUNT_TO_AVG_7DAY_WINDOW",
        Entity.CUSTOMER,
        AmountToMean(),
        timedelta(days=7),
        description="amount / customer's mean amount over the last 7 days (1 when no mean)",
    ),
    Feature(
        "CUSTOMER_ID_AMOUNT_TO_AVG_30DAY_WINDOW",
        Entity.CUSTOMER,
        AmountToMean(),
        timedelta(days=30),
        description="amount / customer's mean amount over the last 30 days (1 when no mean)",
    ),
    Feature(
        "CUSTOMER_ID_SECONDS_SINCE_PREV_TX",
        Entity.CUSTOMER,
        SecondsSincePrevious(),
        timedelta(days=30),
        description="seconds since the customer's previous transaction, at most 30 days",
    ),
    Feature(
        "CUSTOMER_ID_NB_TERMINALS_1DAY_WINDOW",
        Entity.CUSTOMER,
        DistinctPeers(),
        timedelta(days=1),
        dtype=FeatureType.COUNT,
        description="distinct terminals the customer used in the last day, this one included",
    ),
    Feature(
        "CUSTOMER_ID_NB_TERMINALS_30DAY_WINDOW",
        Entity.CUSTOMER,
        DistinctPeers(),
        timedelta(days=30),
        dtype=FeatureType.COUNT,
        description="distinct terminals the customer used in 30 days, this one included",
    ),
    *(
        Feature(
            f"TERMINAL_ID_NB_KNOWN_FRAUDS_{days}DAY_WINDOW",
            Entity.TERMINAL,
            KnownFrauds(),
            timedelta(days=days),
            KNOWN_FRAUD_DELAY,
            FeatureType.COUNT,
            f"frauds at the terminal in the {days} days ending an hour ago that had been "
            "reported by then",
        )
        for days in (1, 7, 14, 28)
    ),
)

#: What the engines compute unless told otherwise: the handbook's inputs, then the extras.
DEFAULT_FEATURES: Final = FeatureSet(
    (*HANDBOOK_FEATURES.features, *EXTRA_FEATURES), HANDBOOK_FEATURES.policies
)
