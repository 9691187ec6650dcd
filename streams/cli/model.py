"""``fraudstream model``: list, show and promote the versions of the model registry.

The registry directory is the settings' ``model_registry_dir`` (``--registry`` or
``FRAUDSTREAM_MODEL_REGISTRY_DIR``). Promotion checks the version as a worker would load
it (artifact sha256, trusted types, features against the running feature spec) and
refuses it otherwise, with one line on stderr and exit status 1. A promotion that passes
is published to the model-control topic, where every live worker picks it up
(`streams.modelcontrol`), then recorded in the registry's ``current.json``
(`streams.promotion`, the one promotion path); ``--no-publish`` records it in the
registry only, for use without a broker.
"""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer

from streams.settings import Settings

cli = typer.Typer(
    help="Inspect and promote model versions in the registry.",
    no_args_is_help=True,
)


@cli.command("list")
def list_versions(ctx: typer.Context) -> None:
    """List every version, oldest first; the current one is marked with '*'."""
    from models.registry import ModelRegistry, RegistryError

    registry = ModelRegistry(_settings(ctx).model_registry_dir)
    try:
        versions = registry.versions()
        current = registry.current()
    except RegistryError as exc:
        _fail("list", str(exc))
    if not versions:
        typer.echo(f"no model versions in {registry.root}")
        return
    typer.echo(
        f"  {'version':<32} {'kind':<24} {'features':>8} {'AUC':>6} {'AP':>6} {'CP@k':>6} "
        f"{'threshold':>10}  train period"
    )
    for metadata in versions:
        test = metadata.metrics.get("test", {})
        marker = "*" if current and current.version == metadata.version else " "
        typer.echo(
            f"{marker} {metadata.version:<32} {metadata.kind.value:<24} "
            f"{len(metadata.feature_names):>8} {_num(test.get('auc_roc'))} "
            f"{_num(test.get('average_precision'))} {_num(test.get('card_precision'))} "
            f"{metadata.threshold_value:>10.4g}  {metadata.training.get('period', '?')}"
        )


@cli.command("show")
def show(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="The version id (see `model list`).")],
) -> None:
    """Print a version's metadata (JSON): features, threshold, metrics, provenance."""
    from models.registry import ModelRegistry, RegistryError

    registry = ModelRegistry(_settings(ctx).model_registry_dir)
    try:
        metadata = registry.metadata(version)
    except RegistryError as exc:
        _fail("show", str(exc))
    typer.echo(metadata.to_json(), nl=False)


@cli.command("promote")
def promote(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="The version id to make current.")],
    no_publish: Annotated[
        bool,
        typer.Option(
            "--no-publish",
            help="Record the promotion in the registry only (no broker needed): live "
            "workers are not told, and load it at start only when the control topic "
            "holds no promotion.",
        ),
    ] = False,
) -> None:
    """Make a version current: check it loads, tell the live workers, record it.

    The one promotion path (`streams.promotion.promote`, also behind ``train --promote``
    and the training notebook): the event goes to the model-control topic first and
    the registry records it after, so an unreachable broker leaves everything as it was.
    """
    from models.registry import RegistryError
    from streams.kafka import BrokerUnavailableError
    from streams.modelcontrol import PublishUnconfirmedError
    from streams.promotion import promote as run_promotion

    settings = _settings(ctx)
    topic = settings.topic_names["model_control"]
    try:
        promotion = run_promotion(settings, version, publish=not no_publish)
    except RegistryError as exc:  # refused (nothing changed), or PromotionNotRecordedError
        _fail("promote", str(exc))
    except PublishUnconfirmedError as exc:
        _fail(
            "promote",
            f"{exc}: the event may have reached the workers; the registry was not changed; "
            "run the command again",
        )
    except BrokerUnavailableError as exc:
        _fail(
            "promote",
            f"{exc}: nothing was changed; --no-publish records the promotion in the registry "
            "only (workers then load it at start, and only when the control topic holds "
            "no promotion)",
        )
    if no_publish:
        typer.echo(
            f"promoted {promotion.version} (previous: {promotion.previous or 'none'}) in the "
            "registry only: live workers are not told; they load it at start only when the "
            "control topic holds no promotion"
        )
        return
    typer.echo(
        f"promoted {promotion.version} (previous: {promotion.previous or 'none'}); "
        f"published to {topic}: live workers switch to it without a restart"
    )


def _settings(ctx: typer.Context) -> Settings:
    """The frozen settings the top-level callback put in the context."""
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


def _num(value: object) -> str:
    return f"{value:>6.3f}" if isinstance(value, int | float) else f"{'-':>6}"


def _fail(command: str, message: str) -> NoReturn:
    """Print one line to stderr and exit 1, without a traceback."""
    typer.echo(f"fraudstream model {command}: {message}", err=True)
    raise typer.Exit(1)
