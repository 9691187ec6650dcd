"""``fraudstream train``: train, assess and register a model version from a dataset file.

A thin shell over `models.training`: read the dataset (`models.source`), compute its
features offline (`features.offline`), run the handbook protocol, print our figures
beside the handbook's, and register the model (`models.registry`) in the settings'
registry directory. Bad input ends with one line on stderr and exit status 2, never a
traceback; the registry is only written once everything else has succeeded.
"""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from streams.settings import Settings

FEATURE_SETS = ("default", "handbook")


def train(
    ctx: typer.Context,
    data: Annotated[
        Path, typer.Option(help="Labelled dataset: .parquet or .csv (fraudstream generate).")
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="logistic_regression (lr), random_forest (rf) or hist_gradient_boosting (hgb).",
        ),
    ] = "hgb",
    train_start: Annotated[
        str | None,
        typer.Option(
            help="First train day, YYYY-MM-DD. Default: the latest whose test period fits "
            "in the dataset. The handbook's split is 2018-07-25."
        ),
    ] = None,
    train_days: Annotated[int, typer.Option(help="Days of the train period.")] = 7,
    delay_days: Annotated[int, typer.Option(help="Days between train and test.")] = 7,
    test_days: Annotated[int, typer.Option(help="Days of the test period.")] = 7,
    features: Annotated[
        str,
        typer.Option(
            help="default: the running feature spec (what workers compute); "
            "handbook: its 15 features only."
        ),
    ] = "default",
    select: Annotated[
        bool,
        typer.Option(
            "--select/--no-select",
            help="Choose hyper-parameters among the kind's grid on prequential folds.",
        ),
    ] = False,
    folds: Annotated[int, typer.Option(help="Validation folds for --select.")] = 4,
    alert_budget: Annotated[
        float | None,
        typer.Option(help="Threshold objective: at most this many alerts a day (default 100)."),
    ] = None,
    precision_target: Annotated[
        float | None,
        typer.Option(help="Threshold objective: alerts at least this precise, in (0, 1]."),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Use this threshold in [0, 1] as is.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the estimators.")] = 0,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote",
            help="Promote the new version as `fraudstream model promote` does: check it, "
            "publish it to the live workers, record it in the registry.",
        ),
    ] = False,
) -> None:
    """Train a model on a dataset's offline features, assess it, register a version."""
    # Imported here: numpy, polars and scikit-learn would slow down every other command.
    from features.dataset import DatasetError
    from features.offline import compute_features
    from features.spec import DEFAULT_FEATURES, HANDBOOK_FEATURES
    from models.estimators import ModelKind
    from models.handbook import PUBLISHED_BASELINES, PUBLISHED_SELECTED, ComparisonRow
    from models.handbook import comparison_table as table
    from models.protocol import Protocol, ProtocolError, latest_train_start
    from models.registry import ModelRegistry, RegistryError
    from models.source import read_dataset
    from models.threshold import Objective, ThresholdError
    from models.training import ThresholdRequest, TrainingConfig
    from models.training import train as run_training

    settings: Settings = ctx.obj
    try:
        kind = ModelKind.parse(model)
        if features not in FEATURE_SETS:
            raise ValueError(f"unknown feature set {features!r}: use default or handbook")
        feature_set = DEFAULT_FEATURES if features == "default" else HANDBOOK_FEATURES
        protocol = Protocol(train_days, delay_days, test_days)
        request = _threshold_request(alert_budget, precision_target, threshold)
        if folds < 1:
            raise ValueError(f"folds must be at least 1, got {folds}")
        start = _parse_date(train_start) if train_start else None
        source = read_dataset(data)
    except (ValueError, DatasetError) as exc:
        _fail(str(exc))

    started = time.perf_counter()
    try:
        frame = compute_features(source.transactions, feature_set)
        start = start or latest_train_start(frame, protocol)
        config = TrainingConfig(
            kind=kind,
            feature_names=feature_set.names,
            train_start=start,
            protocol=protocol,
            select=select,
            folds=folds,
            seed=seed,
            threshold=ThresholdRequest(Objective(request[0]), request[1]),
        )
        result = run_training(frame, config)
    except (ProtocolError, ThresholdError, ValueError) as exc:
        _fail(str(exc))
    elapsed = time.perf_counter() - started

    assessed = result.split
    how = f", selected among {len(result.selection.candidates)} on {folds} folds"
    typer.echo(
        f"{source.path}: {frame.height:,} transactions; {features} features "
        f"({len(feature_set)}); {kind.value} {json.dumps(result.params)}{how if select else ''}"
    )
    typer.echo(
        f"{assessed.describe()}: {result.train_rows:,} train transactions "
        f"({result.train_frauds} frauds), {assessed.test.height:,} test transactions "
        f"({result.test.frauds} frauds; {assessed.removed_test_rows:,} of known compromised "
        f"cards removed); {elapsed:.1f}s"
    )
    published = (PUBLISHED_SELECTED if select else PUBLISHED_BASELINES).get(kind)
    typer.echo(
        table(
            [ComparisonRow(f"ours: {kind.value}", result.test, published)],
            "test results beside the handbook's (its simulated data, its split):",
        )
    )
    chosen = result.threshold
    alerts = result.test_alerts
    typer.echo(
        f"threshold {chosen.value:.6g} ({chosen.objective.value} {chosen.target:g}, chosen on "
        f"{chosen.chosen_on}): test {alerts['alerts_per_day']:.1f} alerts/day, "
        f"precision {alerts['precision']:.3f}, recall {alerts['recall']:.3f}"
    )

    registry = ModelRegistry(settings.model_registry_dir)
    metrics = result.metrics()
    training_info = result.training_info() | {
        "source": {"path": str(source.path), "sha256": source.sha256}
    }
    try:
        metadata = registry.register(
            result.estimator,
            kind=kind,
            feature_names=feature_set.names,
            threshold=chosen.as_dict(),
            metrics=metrics,
            params=result.params,
            training=training_info,
            feature_baseline=result.feature_baseline,
        )
    except RegistryError as exc:
        typer.echo(f"fraudstream train: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"registered {metadata.version} in {registry.root}")
    if promote:
        _promote(settings, metadata.version)


def _promote(settings: Settings, version: str) -> None:
    """Promote a newly registered version through the one promotion path.

    On failure the version stays registered: one line says why and how to promote it
    later, and the exit status is 1.
    """
    from models.registry import RegistryError
    from streams.kafka import BrokerUnavailableError
    from streams.modelcontrol import PublishUnconfirmedError
    from streams.promotion import promote as run_promotion

    try:
        promotion = run_promotion(settings, version)
    except PublishUnconfirmedError as exc:
        typer.echo(
            f"fraudstream train: registered {version}; {exc}: the event may have reached "
            f"the workers; run `fraudstream model promote {version}`",
            err=True,
        )
        raise typer.Exit(1) from None
    except (RegistryError, BrokerUnavailableError) as exc:
        typer.echo(
            f"fraudstream train: registered {version} but did not promote it: {exc}; "
            f"promote it with `fraudstream model promote {version}`",
            err=True,
        )
        raise typer.Exit(1) from None
    topic = settings.topic_names["model_control"]
    typer.echo(
        f"promoted {promotion.version} (previous: {promotion.previous or 'none'}); "
        f"published to {topic}: live workers switch to it without a restart"
    )


def _threshold_request(
    alert_budget: float | None, precision_target: float | None, threshold: float | None
) -> tuple[str, float]:
    """The one threshold objective asked for, as (objective, target)."""
    given = [
        (name, value)
        for name, value in (
            ("alert_budget", alert_budget),
            ("precision_target", precision_target),
            ("fixed", threshold),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError("give at most one of --alert-budget, --precision-target, --threshold")
    name, value = given[0] if given else ("alert_budget", 100.0)
    if name == "alert_budget" and not value > 0:
        raise ValueError(f"the alert budget must be positive, got {value:g}")
    if name == "precision_target" and not 0 < value <= 1:
        raise ValueError(f"the precision target must be in (0, 1], got {value:g}")
    if name == "fixed" and not 0 <= value <= 1:
        raise ValueError(f"the threshold must be in [0, 1], got {value:g}")
    return name, value


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"train start must be YYYY-MM-DD, got {text!r}") from None


def _fail(message: str) -> NoReturn:
    """Print one line to stderr and exit 2 (bad input), without a traceback."""
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    typer.echo(f"fraudstream train: {first_line}", err=True)
    raise typer.Exit(2)
