"""A worker in fallback retries its refused newest promotion (no broker).

The follower reads its start history from a stand-in for the control topic; the registry
is real, and the refused version's artifact is damaged, then repaired, on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tiny_models import register_tiny_model

from models.registry import LoadedModel, ModelRegistry, Promotion
from streams.modelcontrol import PROMOTION_KEY, ModelFollower
from streams.modelfallback import Fallback, ReportedReasons
from streams.settings import Settings

NAMES = ("A", "B")
WAIT_S = 5.0


def register(registry: ModelRegistry, day: int) -> str:
    return register_tiny_model(registry, day, NAMES, rows=20)


def promotion(version: str) -> Promotion:
    return Promotion(version, "2024-05-01T00:00:00Z", None)


class Artifact:
    """A registered version's artifact, to damage and repair in place."""

    def __init__(self, registry: ModelRegistry, version: str) -> None:
        self.path = registry.root / "versions" / version / "model.skops"
        self.good = self.path.read_bytes()

    def damage(self, cut: int = 16) -> None:
        self.path.write_bytes(self.good[:-cut])

    def repair(self) -> None:
        self.path.write_bytes(self.good)


class Worker:
    """A follower whose start history is ``topic`` (oldest first), and what it reported."""

    def __init__(
        self,
        settings: Settings,
        topic: Sequence[str],
        monkeypatch: pytest.MonkeyPatch,
        retry_interval_s: float = 60.0,
    ) -> None:
        self.activated: list[str] = []
        self.failed: list[str] = []
        self.states: list[Fallback | None] = []
        self.follower = ModelFollower(
            settings,
            NAMES,
            lambda model: self.activated.append(model.metadata.version),
            on_load_failure=lambda version, reason: self.failed.append(version),
            on_fallback=self.states.append,
            retry_interval_s=retry_interval_s,
        )

        async def history() -> list[Promotion]:
            self.follower._positions = {}
            return [promotion(v) for v in topic]

        monkeypatch.setattr(self.follower, "_read_history", history)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(model_registry_dir=tmp_path / "registry")


@pytest.fixture
def registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(settings.model_registry_dir)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "streams.modelcontrol" and r.levelno == logging.WARNING
    ]


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110 - polls state that has no event
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(task: Any) -> AsyncIterator[asyncio.Task[Any]]:
    started = asyncio.create_task(task)
    try:
        yield started
        assert not started.done(), started
    finally:
        started.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await started


# --- the pure part ----------------------------------------------------------------------
def test_each_reason_of_a_refused_version_is_reported_once() -> None:
    reported = ReportedReasons()
    assert reported.first("v2", "sha256 differs")
    assert not reported.first("v2", "sha256 differs")
    assert reported.first("v2", "cannot read the artifact")
    assert not reported.first("v2", "sha256 differs")  # alternating reasons: still once each
    assert reported.first("v3", "sha256 differs")  # another version starts afresh
    assert reported.first("v2", "sha256 differs")


def test_a_fallback_says_a_repaired_artifact_is_picked_up() -> None:
    action = Fallback("A", "C", "sha256 differs").as_dict()["action"]
    assert "repair C in the registry" in action
    assert "tries it again" in action


def test_the_retry_interval_is_a_setting(settings: Settings) -> None:
    assert settings.model_retry_interval_s == 60.0
    follower = ModelFollower(
        settings.model_copy(update={"model_retry_interval_s": 2.5}), NAMES, lambda m: None
    )
    assert follower.retry_interval_s == 2.5
    assert (
        ModelFollower(settings, NAMES, lambda m: None, retry_interval_s=0.1).retry_interval_s == 0.1
    )


# --- retries ----------------------------------------------------------------------------
async def test_a_repaired_artifact_is_swapped_in_like_a_promotion(
    settings: Settings,
    registry: ModelRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="streams.modelcontrol")
    v1, v2 = register(registry, 1), register(registry, 2)
    artifact = Artifact(registry, v2)
    artifact.damage()
    worker = Worker(settings, [v1, v2], monkeypatch)
    follower = worker.follower
    await follower.load_initial()
    assert worker.activated == [v1]
    assert worker.failed == [v2]
    refused = follower.fallback
    assert refused is not None
    assert refused.refused_version == v2

    assert not await follower.retry_refused()  # still damaged
    assert worker.failed == [v2, v2]
    assert follower.fallback == refused  # unchanged, and reported already at start
    assert warnings_of(caplog) == []

    artifact.repair()
    caplog.clear()
    assert await follower.retry_refused()
    assert worker.activated == [v1, v2]
    assert follower.active_version == v2
    assert follower.fallback is None
    assert follower.refused is None
    assert worker.states == [refused, None]
    assert worker.failed == [v2, v2]
    infos = [r.getMessage() for r in caplog.records if r.name == "streams.modelcontrol"]
    assert infos == [f"model {v1} -> {v2} active ({v2}, the newest promotion, loads now)"]
    assert not await follower.retry_refused()  # nothing is refused any more
    assert worker.activated == [v1, v2]


async def test_failed_retries_are_counted_and_logged_once_per_reason(
    settings: Settings,
    registry: ModelRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    v1, v2 = register(registry, 1), register(registry, 2)
    artifact = Artifact(registry, v2)
    artifact.damage(16)
    worker = Worker(settings, [v1, v2], monkeypatch)
    await worker.follower.load_initial()
    first = worker.follower.fallback
    assert first is not None
    for cut in (16, 16, 32, 32, 16, 32):  # two distinct damages, each seen again
        artifact.damage(cut)
        assert not await worker.follower.retry_refused()
    assert worker.failed == [v2] * 7
    assert worker.follower.failures == 7
    warnings = warnings_of(caplog)
    assert len(warnings) == 1, warnings  # the 16-byte cut was reported at start
    assert f"{v2}, the newest promotion, still does not load" in warnings[0]
    assert f"model {v1} stays active" in warnings[0]
    now = worker.follower.fallback
    assert now is not None
    assert now.reason != first.reason  # /ready shows the latest reason
    assert worker.activated == [v1]


async def test_with_no_model_active_the_newest_promotion_is_retried(
    settings: Settings, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = register(registry, 1)
    artifact = Artifact(registry, v1)
    artifact.damage()
    worker = Worker(settings, [v1], monkeypatch)
    with pytest.raises(Exception, match="none of the 1 promoted versions loads"):
        await worker.follower.load_initial()
    assert not await worker.follower.retry_refused()
    artifact.repair()
    assert await worker.follower.retry_refused()
    assert worker.activated == [v1]
    assert worker.follower.refused is None
    assert worker.states == []  # never a fallback: nothing scored before


class BlockingLoads:
    """Wraps the registry's ``load``: loads of ``version`` wait until released."""

    def __init__(self, registry: ModelRegistry, version: str) -> None:
        self.load = registry.load
        self.version = version
        self.release = threading.Event()
        self.waiting = threading.Event()
        self.calls: list[str] = []

    def __call__(self, version: str, feature_names: Sequence[str] | None = None) -> LoadedModel:
        self.calls.append(version)
        if version == self.version:
            self.waiting.set()
            assert self.release.wait(WAIT_S)
        return self.load(version, feature_names)


def record(version: str, offset: int) -> Any:
    """A control-topic record promoting ``version``."""
    return SimpleNamespace(
        key=PROMOTION_KEY, value=promotion(version).to_json().encode(), offset=offset
    )


async def repaired_after_fallback(
    settings: Settings, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> tuple[Worker, tuple[str, str, str]]:
    """A worker started on v1 because v2, promoted last, was damaged; v2 since repaired.

    v3 is registered and not promoted yet.
    """
    v1, v2, v3 = register(registry, 1), register(registry, 2), register(registry, 3)
    artifact = Artifact(registry, v2)
    artifact.damage()
    worker = Worker(settings, [v1, v2], monkeypatch)
    await worker.follower.load_initial()
    artifact.repair()
    return worker, (v1, v2, v3)


async def test_a_promotion_applied_while_a_retry_loads_supersedes_it(
    settings: Settings, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, (v1, v2, v3) = await repaired_after_fallback(settings, registry, monkeypatch)
    follower = worker.follower
    loads = BlockingLoads(registry, v2)
    monkeypatch.setattr(follower._registry, "load", loads)

    retry = asyncio.create_task(follower.retry_refused())
    await wait_until(loads.waiting.is_set)
    await follower._apply(record(v3, 7))  # the newer promotion loads and swaps first
    assert worker.activated == [v1, v3]
    loads.release.set()
    assert not await retry  # v2 loads, but is no longer the newest: dropped
    assert worker.activated == [v1, v3]
    assert follower.active_version == v3
    assert follower.fallback is None


async def test_a_retry_waits_for_a_promotion_being_loaded(
    settings: Settings, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, (v1, _, v3) = await repaired_after_fallback(settings, registry, monkeypatch)
    follower = worker.follower
    loads = BlockingLoads(registry, v3)
    monkeypatch.setattr(follower._registry, "load", loads)

    applying = asyncio.create_task(follower._apply(record(v3, 7)))
    await wait_until(loads.waiting.is_set)
    assert not await follower.retry_refused()  # v3 decides: v2 is not even loaded
    assert loads.calls == [v3]
    loads.release.set()
    await applying
    assert worker.activated == [v1, v3]
    assert follower.fallback is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_follow_retries_on_a_timer_even_without_a_broker(
    settings: Settings, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    v1, v2 = register(registry, 1), register(registry, 2)
    artifact = Artifact(registry, v2)
    artifact.damage()
    worker = Worker(gone, [v1, v2], monkeypatch, retry_interval_s=0.1)
    await worker.follower.load_initial()
    async with running(worker.follower.follow()):
        await wait_until(lambda: len(worker.failed) >= 3)  # retried on the timer
        before = len(worker.failed)
        await asyncio.sleep(0.3)
        assert len(worker.failed) - before <= 4, worker.failed  # one per interval at most
        artifact.repair()
        await wait_until(lambda: worker.follower.active_version == v2)
    assert worker.activated == [v1, v2]
    assert worker.states[-1] is None


class ProbeFromAnotherThread:
    """What a ``/ready`` probe in another thread reads, started the moment a callback fires.

    The probe reads under the follower's lock, as the worker's handlers do. A callback
    made outside the lock waits until the probe has read (the moment of the callback,
    however slow the machine); one made under the lock gives it 0.2 s before returning:
    a probe that does not wait for the change to finish reads in that time, mid-change.
    """

    def __init__(self, follower: ModelFollower) -> None:
        self.follower = follower
        self.seen: list[tuple[str | None, str | None]] = []  # (active, refused) versions
        self.threads: list[threading.Thread] = []

    def probe(self) -> None:
        done = threading.Event()

        def read() -> None:
            with self.follower.lock:
                fallback = self.follower.fallback
                refused = fallback.refused_version if fallback is not None else None
                self.seen.append((self.follower.active_version, refused))
            done.set()

        thread = threading.Thread(target=read)
        thread.start()
        self.threads.append(thread)
        done.wait(0.2 if self.follower.lock._is_owned() else WAIT_S)  # type: ignore[attr-defined]

    def finished(self) -> list[tuple[str | None, str | None]]:
        for thread in self.threads:
            thread.join(WAIT_S)
        return self.seen


async def test_a_probe_in_another_thread_sees_a_model_and_its_fallback_together(
    settings: Settings, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = register(registry, 1), register(registry, 2)
    artifact = Artifact(registry, v2)
    artifact.damage()
    worker = Worker(settings, [v1, v2], monkeypatch)
    follower = worker.follower
    probes = ProbeFromAnotherThread(follower)
    monkeypatch.setattr(follower, "_activate", lambda model: probes.probe())
    monkeypatch.setattr(follower, "_on_load_failure", lambda version, reason: probes.probe())

    # Each step's probes are let finish before the next step: a probe that waits for the
    # lock may otherwise get it only after the next change (a loaded machine, two tests
    # at a time: the third probe read the fourth change's state).
    await follower.load_initial()  # v2 fails (nothing active yet), v1 starts in fallback
    probes.finished()
    artifact.repair()
    assert await follower.retry_refused()  # v2 swapped in: the fallback ends with it
    probes.finished()
    await follower._apply(record("unknown-version", 7))  # refused: v2 stays, in fallback
    assert probes.finished() == [(None, None), (v1, v2), (v2, None), (v2, "unknown-version")]
