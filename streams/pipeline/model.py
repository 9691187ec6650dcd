"""The model a worker scores with, swapped as one object between micro-batches.

A promotion (``streams.modelcontrol``) loads and verifies a version off the event loop,
then `ModelSlot.activate` builds an `ActiveModel` and replaces the slot's reference in
one assignment. The score agent reads the reference once per micro-batch, so a batch is
scored, explained and labelled with one version from start to end, and alerts carry it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from models.explain import MissingBaselineError, ReasonExplainer
from models.registry import LoadedModel
from models.scoring import BatchScorer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActiveModel:
    """A verified model ready for the hot path.

    Attributes:
        version: Its registry version (alerts and scores carry it).
        scorer: One ``predict_proba`` per micro-batch, threads pinned.
        explainer: Alert reasons, or None when alerts list none.
        threshold: Alert when score >= threshold.
    """

    version: str
    scorer: BatchScorer
    explainer: ReasonExplainer | None
    threshold: float


class ModelSlot:
    """Holds the active model; the score agent waits here until there is one.

    Args:
        feature_names: The running feature spec, which every model must match.
        reasons: Reasons per alert (0: none, and no explainer is built).
        on_swap: Called after each activation with the new version and the one it
            replaced (None for the slot's first model): metrics count swaps only.
    """

    def __init__(
        self,
        feature_names: Sequence[str],
        *,
        reasons: int = 3,
        on_swap: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.feature_names = tuple(feature_names)
        self.reasons = reasons
        self.active: ActiveModel | None = None
        self._ready = asyncio.Event()
        self._on_swap = on_swap

    def activate(self, model: LoadedModel) -> None:
        """Build the scorer (and explainer) of a loaded model and make it the active one.

        Raises:
            models.registry.FeatureMismatchError: The model expects other features.
        """
        scorer = BatchScorer(model, self.feature_names)
        explainer = None
        if self.reasons:
            try:
                explainer = ReasonExplainer.for_model(model, top_k=self.reasons)
            except MissingBaselineError as exc:
                # Score anyway: an alert without reasons beats no alert.
                logger.warning("alerts will list no reasons: %s", exc)
        previous = self.active
        self.active = ActiveModel(scorer.version, scorer, explainer, scorer.threshold)
        self._ready.set()
        logger.info(
            "scoring with model %s (threshold %.4f)%s",
            scorer.version,
            scorer.threshold,
            f", replacing {previous.version}" if previous else "",
        )
        if self._on_swap is not None:
            self._on_swap(scorer.version, previous.version if previous else None)

    async def wait(self) -> ActiveModel:
        """The active model, waiting for the first activation if there is none yet."""
        if self.active is None:
            logger.warning(
                "no model promoted yet: transactions wait in Kafka until one is "
                "(fraudstream train, then fraudstream model promote VERSION)"
            )
            await self._ready.wait()
        assert self.active is not None
        return self.active
