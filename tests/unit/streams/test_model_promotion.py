"""The one promotion path, the start-up fallback order, and the model metrics (no broker)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from tiny_models import register_tiny_model

from models.registry import (
    ArtifactIntegrityError,
    LoadedModel,
    ModelRegistry,
    Promotion,
    RegistryError,
)
from streams.kafka import BrokerUnavailableError
from streams.metrics import PipelineMetrics
from streams.modelfallback import Candidate, Fallback, start_candidates
from streams.pipeline.model import ModelSlot
from streams.promotion import PromotionNotRecordedError, promote, promote_async
from streams.settings import Settings

NAMES = ("A", "B")


def register(registry: ModelRegistry, day: int) -> str:
    return register_tiny_model(registry, day, NAMES, rows=20)


def p(version: str) -> Promotion:
    return Promotion(version, "2024-05-01T00:00:00Z", None)


class Publisher:
    """Stands in for the Kafka publishing: records events, or fails like a missing broker."""

    def __init__(self, error: Exception | None = None) -> None:
        self.events: list[Promotion] = []
        self.error = error

    async def __call__(self, settings: Settings, promotion: Promotion) -> None:
        if self.error is not None:
            raise self.error
        self.events.append(promotion)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(model_registry_dir=tmp_path / "registry")


# --- the promotion path -----------------------------------------------------------------
async def test_a_promotion_is_published_then_recorded_as_the_same_event(
    settings: Settings,
) -> None:
    registry = ModelRegistry(settings.model_registry_dir)
    v1, v2 = register(registry, 1), register(registry, 2)
    publisher = Publisher()
    first = await promote_async(settings, v1, feature_names=NAMES, publisher=publisher)
    second = await promote_async(settings, v2, feature_names=NAMES, publisher=publisher)
    assert publisher.events == [first, second]
    assert second.previous == v1
    assert registry.current() == second  # the registry holds what the workers read
    assert registry.history() == [first, second]


async def test_a_version_workers_would_refuse_is_neither_published_nor_recorded(
    settings: Settings,
) -> None:
    registry = ModelRegistry(settings.model_registry_dir)
    version = register(registry, 1)
    artifact = settings.model_registry_dir / "versions" / version / "model.skops"
    artifact.write_bytes(artifact.read_bytes()[:-10])
    publisher = Publisher()
    with pytest.raises(ArtifactIntegrityError):
        await promote_async(settings, version, feature_names=NAMES, publisher=publisher)
    with pytest.raises(RegistryError, match="do not match the running feature spec"):
        await promote_async(settings, register(registry, 2), publisher=publisher)
    assert publisher.events == []
    assert registry.current() is None


async def test_without_a_broker_nothing_is_recorded(settings: Settings) -> None:
    registry = ModelRegistry(settings.model_registry_dir)
    version = register(registry, 1)
    publisher = Publisher(BrokerUnavailableError("no Kafka broker answers at 127.0.0.1:1"))
    with pytest.raises(BrokerUnavailableError):
        await promote_async(settings, version, feature_names=NAMES, publisher=publisher)
    assert registry.current() is None
    assert registry.history() == []


async def test_registry_only_promotion_publishes_nothing(settings: Settings) -> None:
    registry = ModelRegistry(settings.model_registry_dir)
    version = register(registry, 1)
    publisher = Publisher(AssertionError("must not publish"))
    promotion = await promote_async(
        settings, version, feature_names=NAMES, publish=False, publisher=publisher
    )
    assert registry.current() == promotion


async def test_a_published_promotion_the_registry_cannot_record_says_so(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(settings.model_registry_dir)
    version = register(registry, 1)

    def refuse(self: ModelRegistry, promotion: Promotion) -> Promotion:
        raise RegistryError("cannot write to the registry: read-only file system")

    monkeypatch.setattr(ModelRegistry, "record", refuse)
    publisher = Publisher()
    with pytest.raises(PromotionNotRecordedError, match="live workers switch to it"):
        await promote_async(settings, version, feature_names=NAMES, publisher=publisher)
    assert [e.version for e in publisher.events] == [version]


async def test_the_synchronous_call_works_inside_a_running_loop(settings: Settings) -> None:
    # A notebook kernel runs an event loop: asyncio.run would refuse to start another.
    registry = ModelRegistry(settings.model_registry_dir)
    version = register(registry, 1)
    asyncio.get_running_loop()
    promotion = promote(settings, version, feature_names=NAMES, publish=False)
    assert registry.current() == promotion


# --- the start-up fallback order --------------------------------------------------------
def test_start_candidates_are_the_topic_then_the_registry_newest_first_each_once() -> None:
    candidates = start_candidates(
        [p("A"), p("B"), p("A"), p("C")],  # C is newest; A was rolled back to once
        p("D"),
        [p("E"), p("D"), p("B")],
        topic_name="t",
        registry_name="r",
    )
    assert candidates == [
        Candidate("C", "the control topic t"),
        Candidate("A", "the control topic t"),
        Candidate("B", "the control topic t"),
        Candidate("D", "r/current.json"),
        Candidate("E", "r/promotions.jsonl"),
    ]


def test_start_candidates_without_any_promotion_are_none() -> None:
    assert start_candidates([], None, [], topic_name="t", registry_name="r") == []


def test_a_fallback_names_both_versions_and_what_to_do() -> None:
    shown = Fallback("A", "C", "sha256 differs").as_dict()
    assert shown["active_version"] == "A"
    assert shown["refused_version"] == "C"
    assert shown["reason"] == "sha256 differs"
    assert "promote a version that loads" in shown["action"]


# --- metrics ----------------------------------------------------------------------------
def test_the_fallback_gauge_has_one_series_while_falling_back() -> None:
    metrics = PipelineMetrics(CollectorRegistry())

    def series() -> dict[str, float]:
        return {
            s.labels["refused_version"]: s.value
            for family in metrics.model_fallback.collect()
            for s in family.samples
        }

    assert series() == {}
    metrics.set_model_fallback("C")
    assert series() == {"C": 1.0}
    metrics.set_model_fallback("D")
    assert series() == {"D": 1.0}
    metrics.set_model_fallback(None)
    assert series() == {}


def test_the_slot_tells_a_swap_from_the_first_model(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    v1, v2 = register(registry, 1), register(registry, 2)
    calls: list[tuple[str, str | None]] = []
    slot = ModelSlot(NAMES, reasons=0, on_swap=lambda new, old: calls.append((new, old)))
    first: LoadedModel = registry.load(v1, NAMES)
    actives = []
    try:
        for model in (first, registry.load(v2, NAMES)):
            slot.activate(model)
            assert slot.active is not None
            actives.append(slot.active)
    finally:
        for active in reversed(actives):  # undo the scorers' process-wide thread pinning
            active.scorer.close()
    assert calls == [(v1, None), (v2, v1)]
