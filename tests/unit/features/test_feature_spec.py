"""The spec: the handbook's inputs, the validation that keeps both engines possible, and
that a new feature is a spec change that both engines pick up."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from feature_reference import mismatches
from feature_testdata import generate_transactions
from online_replay import replay_online

from features.aggregations import Amount, Count, DistinctPeers, FraudRisk, MeanAmount
from features.offline import compute_features
from features.spec import (
    CUSTOMER_POLICY,
    DEFAULT_FEATURES,
    EXTRA_FEATURES,
    HANDBOOK_FEATURES,
    TERMINAL_POLICY,
    Entity,
    EntityPolicy,
    Feature,
    FeatureSet,
)

DAY = timedelta(days=1)


def test_the_handbook_inputs_in_the_handbook_order() -> None:
    windows = [
        f"{entity}_{kind}_{days}DAY_WINDOW"
        for entity, kinds in (
            ("CUSTOMER_ID", ("NB_TX", "AVG_AMOUNT")),
            ("TERMINAL_ID", ("NB_TX", "RISK")),
        )
        for days in (1, 7, 30)
        for kind in kinds
    ]
    assert HANDBOOK_FEATURES.names == (
        "TX_AMOUNT",
        "TX_DURING_WEEKEND",
        "TX_DURING_NIGHT",
        *windows,
    )
    assert DEFAULT_FEATURES.names[:15] == HANDBOOK_FEATURES.names
    assert DEFAULT_FEATURES.features[15:] == EXTRA_FEATURES


def test_terminal_features_look_at_the_window_ending_seven_days_ago() -> None:
    for f in HANDBOOK_FEATURES.of(Entity.TERMINAL):
        assert f.delay == timedelta(days=7)
    for f in DEFAULT_FEATURES.of(Entity.CUSTOMER):
        assert f.delay == timedelta(0)
    assert DEFAULT_FEATURES.reach_ms(Entity.TERMINAL) == 37 * 86_400_000
    assert DEFAULT_FEATURES.retention_ms(Entity.CUSTOMER) == 31 * 86_400_000
    assert DEFAULT_FEATURES.retention_ms(Entity.TERMINAL) == 44 * 86_400_000


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Feature("x", Entity.CUSTOMER, Count()), "positive window"),
        (lambda: Feature("x", Entity.CUSTOMER, Amount(), DAY), "WindowAggregation"),
        (lambda: Feature("x", Entity.TRANSACTION, Count(), DAY), "TransactionAttribute"),
        (lambda: Feature("x", Entity.TRANSACTION, Amount(), DAY), "no window"),
        (lambda: Feature("x", Entity.CUSTOMER, Count(), DAY, -DAY), "negative"),
        (lambda: Feature("x", Entity.CUSTOMER, Count(), timedelta(microseconds=1500)), "millisec"),
    ],
)
def test_features_that_an_engine_could_not_compute_are_refused(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(ValueError, match=message):
        make()


def test_feature_sets_refuse_duplicates_missing_policies_and_unbounded_retention() -> None:
    count = Feature("n", Entity.CUSTOMER, Count(), DAY)
    with pytest.raises(ValueError, match="duplicate"):
        FeatureSet((count, count), {Entity.CUSTOMER: CUSTOMER_POLICY})
    with pytest.raises(ValueError, match="no EntityPolicy"):
        FeatureSet((count,), {})
    long = Feature("n", Entity.CUSTOMER, Count(), timedelta(days=60))
    with pytest.raises(ValueError, match="32-bit"):
        FeatureSet((long,), {Entity.CUSTOMER: CUSTOMER_POLICY})


def test_select_keeps_the_order_asked_for() -> None:
    chosen = DEFAULT_FEATURES.select(["TERMINAL_ID_RISK_7DAY_WINDOW", "TX_AMOUNT"])
    assert chosen.names == ("TERMINAL_ID_RISK_7DAY_WINDOW", "TX_AMOUNT")
    assert set(chosen.policies) == {Entity.TERMINAL}
    with pytest.raises(KeyError):
        DEFAULT_FEATURES.select(["NOPE"])


def test_a_new_feature_is_a_spec_change_that_both_engines_compute_alike() -> None:
    """Shapes the default set does not use: a terminal window with no delay between two
    with a delay, a terminal's distinct customers, a customer's frauds, a 14-day mean."""
    policies = {
        Entity.CUSTOMER: EntityPolicy(timedelta(hours=2), max_events=512, max_frauds=64),
        Entity.TERMINAL: TERMINAL_POLICY,
    }
    custom = FeatureSet(
        (
            Feature("T_CUSTOMERS_3D", Entity.TERMINAL, DistinctPeers(), 3 * DAY, DAY),
            Feature("T_NB_TX_2H", Entity.TERMINAL, Count(), timedelta(hours=2)),
            Feature("T_NB_TX_5D_AFTER_1D", Entity.TERMINAL, Count(), 5 * DAY, DAY),
            Feature("C_AVG_14D", Entity.CUSTOMER, MeanAmount(), 14 * DAY),
            Feature("C_RISK_20D_AFTER_3D", Entity.CUSTOMER, FraudRisk(), 20 * DAY, 3 * DAY),
            Feature("AMOUNT", Entity.TRANSACTION, Amount()),
        ),
        policies,
    )
    data = generate_transactions(customers=60, terminals=40, days=60, seed=11)
    offline = compute_features(data, custom)
    online = replay_online(data, custom)
    assert offline.columns[-6:] == list(custom.names)
    assert mismatches(offline, online, custom) == {}
    assert offline["T_CUSTOMERS_3D"].max() > 1  # type: ignore[operator]
    assert offline.filter(pl.col("C_RISK_20D_AFTER_3D") > 0).height > 0
