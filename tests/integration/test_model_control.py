"""Model control against the real broker: publish promotions, followers swap models live.

A follower starting after a promotion that does not load falls back to the newest
promoted version that does (the topic's promotions, then the registry's history), and
swaps to the refused version once it loads again, unless a newer promotion came first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from aiokafka import AIOKafkaProducer
from tiny_models import register_tiny_model
from typer.testing import CliRunner

from features.spec import DEFAULT_FEATURES
from models.registry import LoadedModel, ModelRegistry, Promotion, RegistryError
from streams.cli import cli
from streams.kafka import BrokerUnavailableError, client_options, ensure_topics, product_topics
from streams.modelcontrol import PROMOTION_KEY, ModelFollower, publish_promotion
from streams.modelfallback import Fallback
from streams.settings import Settings

NAMES = DEFAULT_FEATURES.names
WAIT_S = 10.0
UNKNOWN = "20240101T000000Z-lr-00000000"
UNREACHABLE = re.escape("no Kafka broker answers at 127.0.0.1:")


def register(registry: ModelRegistry, day: int, names: tuple[str, ...] = NAMES) -> str:
    """Register a tiny logistic regression on ``names``; distinct per ``day``."""
    return register_tiny_model(registry, day, names)


def corrupt(registry: ModelRegistry, version: str) -> None:
    """Change a registered artifact: its sha256 no longer matches the metadata's."""
    artifact = registry.root / "versions" / version / "model.skops"
    artifact.write_bytes(artifact.read_bytes()[:-16])


def promotion(version: str) -> Promotion:
    return Promotion(version, datetime.now(UTC).isoformat(), None)


class Activations:
    """The ``activate`` callback of a test worker: remembers every model it was given."""

    def __init__(self) -> None:
        self.versions: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, model: LoadedModel) -> None:
        self.versions.append(model.metadata.version)
        self.changed.set()

    async def wait_for(self, version: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while not self.versions or self.versions[-1] != version:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
def control(settings: Settings, tmp_path: Path) -> Settings:
    """Settings with declared topics and an empty registry of their own."""
    asyncio.run(ensure_topics(settings, product_topics(settings)))
    return settings.model_copy(update={"model_registry_dir": tmp_path / "registry"})


class Watched(NamedTuple):
    """A follower and what it reported: models activated, failed loads, fallback states."""

    follower: ModelFollower
    activations: Activations
    failed: list[str]
    states: list[Fallback | None]


def watched(control: Settings, **options: Any) -> Watched:
    """A follower of ``control`` whose activations, failed loads and fallbacks are kept."""
    activations = Activations()
    failed: list[str] = []
    states: list[Fallback | None] = []
    follower = ModelFollower(
        control,
        NAMES,
        activations,
        on_load_failure=lambda version, reason: failed.append(version),
        on_fallback=states.append,
        **options,
    )
    return Watched(follower, activations, failed, states)


@contextlib.asynccontextmanager
async def following(follower: ModelFollower) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``follow`` as a task; check it is still alive, then cancel it cleanly."""
    task = asyncio.create_task(follower.follow())
    try:
        yield task
        assert not task.done(), task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110 - polls a counter that has no event
            await asyncio.sleep(0.05)


async def send_raw(settings: Settings, value: bytes) -> None:
    producer = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic_names["model_control"], value=value, key=PROMOTION_KEY
        )
    finally:
        await producer.stop()


async def test_a_follower_starts_from_the_latest_promotion_and_swaps_on_new_ones(
    control: Settings,
) -> None:
    registry = ModelRegistry(control.model_registry_dir)
    v1, v2 = register(registry, 1), register(registry, 2)
    await publish_promotion(control, promotion(v1))
    activations = Activations()
    first = ModelFollower(control, NAMES, activations)
    model = await first.load_initial()
    assert model is not None
    assert model.metadata.version == v1
    assert activations.versions == [v1]
    assert first.active_version == v1
    assert registry.current() is None  # the event, not current.json, named it

    async with following(first):
        started = time.monotonic()
        await publish_promotion(control, promotion(v2))
        await activations.wait_for(v2)
        assert time.monotonic() - started < 5
    assert activations.versions == [v1, v2]
    assert first.active_version == v2
    assert first.failures == 0

    # A worker starting now takes the last event (v2), then follows only newer ones, as
    # does every other follower (a broadcast): the unknown version published last is the
    # fence that says every event was read.
    later = Activations()
    second = ModelFollower(control, NAMES, later)
    assert (await second.load_initial()) is not None
    async with following(first), following(second):
        await publish_promotion(control, promotion(v1))
        await publish_promotion(control, promotion(UNKNOWN))
        await wait_until(lambda: first.failures == second.failures == 1)
    assert later.versions == [v2, v1]
    assert activations.versions == [v1, v2, v1]


async def test_a_worker_starting_after_a_bad_promotion_falls_back_to_the_last_good_one(
    control: Settings,
) -> None:
    registry = ModelRegistry(control.model_registry_dir)
    v1, v2 = register(registry, 1), register(registry, 2)
    await publish_promotion(control, promotion(v1))
    await publish_promotion(control, promotion(v2))
    await publish_promotion(control, promotion(UNKNOWN))
    corrupt(registry, v2)
    follower, activations, failed, states = watched(control)
    model = await follower.load_initial()
    assert model is not None
    assert model.metadata.version == v1  # the newest promotion that loads
    assert failed == [UNKNOWN, v2]  # each failed load counted
    assert follower.failures == 2
    assert follower.fallback == Fallback(
        v1, UNKNOWN, f"no model version '{UNKNOWN}' in {registry.root}"
    )
    assert states == [follower.fallback]

    async with following(follower):
        await publish_promotion(control, promotion(v2))  # still corrupt: v1 stays
        await wait_until(lambda: len(failed) == 3)
        fallback = follower.fallback
        assert fallback is not None
        assert fallback.refused_version == v2
        assert "modified after registration" in fallback.reason
        await publish_promotion(control, promotion(v1))  # a rollback to the active one
        await wait_until(lambda: follower.fallback is None)
    assert activations.versions == [v1]
    assert states[-1] is None


async def test_a_worker_in_fallback_swaps_to_the_refused_version_once_it_is_repaired(
    control: Settings,
) -> None:
    registry = ModelRegistry(control.model_registry_dir)
    v1, v2 = register(registry, 1), register(registry, 2)
    await publish_promotion(control, promotion(v1))
    await publish_promotion(control, promotion(v2))
    artifact = registry.root / "versions" / v2 / "model.skops"
    intact = artifact.read_bytes()
    corrupt(registry, v2)
    follower, activations, failed, states = watched(control, retry_interval_s=0.2)
    assert (await follower.load_initial()) is not None
    fallback = follower.fallback
    assert fallback is not None
    assert (fallback.active_version, fallback.refused_version) == (v1, v2)

    async with following(follower):
        await wait_until(lambda: len(failed) >= 3)  # retried on the timer, each counted
        assert activations.versions == [v1]
        artifact.write_bytes(intact)  # the operator repairs the registry
        await activations.wait_for(v2)
    assert activations.versions == [v1, v2]
    assert follower.fallback is None
    assert states == [fallback, None]
    assert set(failed) == {v2}


async def test_a_newer_promotion_ends_the_retries_of_a_refused_one(control: Settings) -> None:
    registry = ModelRegistry(control.model_registry_dir)
    v1, v2, v3 = register(registry, 1), register(registry, 2), register(registry, 3)
    await publish_promotion(control, promotion(v1))
    await publish_promotion(control, promotion(v2))
    artifact = registry.root / "versions" / v2 / "model.skops"
    intact = artifact.read_bytes()
    corrupt(registry, v2)
    follower, activations, failed, _ = watched(control, retry_interval_s=0.1)
    await follower.load_initial()
    async with following(follower):
        await publish_promotion(control, promotion(v3))
        await activations.wait_for(v3)
        retried = len(failed)
        artifact.write_bytes(intact)  # too late: v3 is the newest promotion
        await asyncio.sleep(0.5)
    assert activations.versions == [v1, v3]
    assert follower.fallback is None
    assert len(failed) == retried  # no refusal left to retry


async def test_the_registry_history_reaches_behind_a_compacted_topic(control: Settings) -> None:
    registry = ModelRegistry(control.model_registry_dir)
    v1, v2 = register(registry, 1), register(registry, 2)
    registry.promote(v1, NAMES)
    registry.promote(v2, NAMES)
    # The topic kept only the newest promotion, which no longer loads.
    await publish_promotion(control, promotion(UNKNOWN))
    corrupt(registry, v2)
    activations = Activations()
    follower = ModelFollower(control, NAMES, activations)
    model = await follower.load_initial()
    assert model is not None
    assert model.metadata.version == v1
    fallback = follower.fallback
    assert fallback is not None
    assert fallback.refused_version == UNKNOWN


async def test_when_no_promoted_version_loads_the_worker_waits_for_the_next(
    control: Settings,
) -> None:
    registry = ModelRegistry(control.model_registry_dir)
    v1 = register(registry, 1)
    await publish_promotion(control, promotion(UNKNOWN))
    activations = Activations()
    follower = ModelFollower(control, NAMES, activations)
    with pytest.raises(RegistryError, match=f"none of the 1 promoted versions loads.*{UNKNOWN}"):
        await follower.load_initial()
    assert follower.failures == 1
    assert follower.active_version is None
    assert follower.fallback is None  # nothing scores: not a fallback, not ready
    refused = follower.refused
    assert refused is not None
    assert refused.version == UNKNOWN
    async with following(follower):  # the next promotion still reaches the worker
        await publish_promotion(control, promotion(v1))
        await activations.wait_for(v1)
    assert follower.refused is None


async def test_bad_promotions_are_counted_logged_once_and_leave_the_model_active(
    control: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ModelRegistry(control.model_registry_dir)
    v1 = register(registry, 1)
    mismatched = register(registry, 3, names=tuple(reversed(NAMES)))
    caplog.set_level(logging.INFO, logger="streams.modelcontrol")
    await publish_promotion(control, promotion(v1))
    activations = Activations()
    follower = ModelFollower(control, NAMES, activations)
    await follower.load_initial()

    async with following(follower):
        await publish_promotion(control, promotion(v1))  # already active: skipped
        await publish_promotion(control, promotion(UNKNOWN))
        await publish_promotion(control, promotion(mismatched))
        await send_raw(control, b"{not json")
        await send_raw(control, b'{"version": 7, "promoted_at": "x"}')
        await wait_until(lambda: follower.failures == 4)
        await asyncio.sleep(0.3)  # nothing more comes
    assert follower.failures == 4
    assert follower.active_version == v1
    assert activations.versions == [v1]
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "streams.modelcontrol" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 4, warnings
    assert f"no model version '{UNKNOWN}'" in warnings[0]
    assert "do not match the running feature spec" in warnings[1]
    assert "malformed promotion record" in warnings[2]
    assert "malformed promotion record: version 7" in warnings[3]
    assert all(f"model {v1} stays active" in w for w in warnings)
    assert f"model none -> {v1} active" in caplog.text


async def test_without_an_event_the_registry_current_json_is_used(control: Settings) -> None:
    registry = ModelRegistry(control.model_registry_dir)
    v1 = register(registry, 1)
    activations = Activations()
    assert await ModelFollower(control, NAMES, activations).load_initial() is None
    assert activations.versions == []

    registry.promote(v1, NAMES)  # what `model promote --no-publish` records
    follower = ModelFollower(control, NAMES, activations)
    model = await follower.load_initial()
    assert model is not None
    assert model.metadata.version == v1
    assert activations.versions == [v1]


async def test_the_cli_promotion_reaches_a_following_worker(control: Settings) -> None:
    registry = ModelRegistry(control.model_registry_dir)
    v1 = register(registry, 1)
    activations = Activations()
    follower = ModelFollower(control, NAMES, activations)
    assert await follower.load_initial() is None
    async with following(follower):
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["model", "promote", v1], env=cli_env(control)
        )
        assert result.exit_code == 0, result.stdout + result.stderr
        assert f"promoted {v1} (previous: none)" in result.stdout
        assert control.topic_names["model_control"] in result.stdout
        await activations.wait_for(v1)
    current = registry.current()
    assert current is not None
    assert current.version == v1


def test_the_cli_changes_nothing_when_the_broker_is_unreachable(
    control: Settings, free_port: Callable[[], int]
) -> None:
    registry = ModelRegistry(control.model_registry_dir)
    v1, v2 = register(registry, 1), register(registry, 2)
    registry.promote(v1, NAMES)
    before = (control.model_registry_dir / "current.json").read_bytes()
    env = {**cli_env(control), "FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}

    started = time.monotonic()
    result = CliRunner().invoke(cli, ["model", "promote", v2], env=env)
    assert time.monotonic() - started < 10
    assert result.exit_code == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("fraudstream model promote: no Kafka broker answers at")
    assert "nothing was changed" in result.stderr
    assert "--no-publish" in result.stderr
    assert (control.model_registry_dir / "current.json").read_bytes() == before

    result = CliRunner().invoke(cli, ["model", "promote", "--no-publish", v2], env=env)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "registry only" in result.stdout
    current = registry.current()
    assert current is not None
    assert current.version == v2


async def test_publishing_fails_fast_without_a_broker_or_a_topic(
    settings: Settings, free_port: Callable[[], int]
) -> None:
    gone = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match=UNREACHABLE):
        await publish_promotion(gone, promotion(UNKNOWN))
    with pytest.raises(BrokerUnavailableError, match=UNREACHABLE):
        await ModelFollower(gone, NAMES, Activations()).load_initial()
    topic = settings.topic_names["model_control"]
    with pytest.raises(BrokerUnavailableError, match=f"topic {topic} does not exist"):
        await publish_promotion(settings, promotion(UNKNOWN))  # no topic declared
    assert time.monotonic() - started < 10


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        "FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "FRAUDSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "FRAUDSTREAM_MODEL_REGISTRY_DIR": str(settings.model_registry_dir),
        "FRAUDSTREAM_LOG_LEVEL": "warn",
    }
