"""The model registry: versioned artifacts on disk, checked before they are trusted.

Layout under the registry directory (``FRAUDSTREAM_MODEL_REGISTRY_DIR``)::

    versions/<version>/model.skops      the estimator, skops format (never a pickle)
    versions/<version>/metadata.json    features in order, threshold, metrics, provenance,
                                        the artifact's sha256, and (optional) each
                                        feature's typical value for the explainer
    current.json                        the promoted version (absent until a promotion)
    promotions.jsonl                    every promotion, oldest first (audit trail)

A version id is ``<UTC time>-<kind>-<first 8 hex of the artifact sha256>``, so ids sort by
creation time and two trainings never collide. A version is written into a hidden
temporary directory and renamed into place, so readers see complete versions only; a
version is never modified after that.

Loading trusts nothing it has not checked, in this order: the artifact's sha256 against
the metadata (a changed or truncated file is refused), the feature list against the
running feature spec (a model fed vectors in another order would score garbage silently),
then skops loads with an explicit list of trusted types: skops' own defaults (builtins,
numpy, scikit-learn estimators) plus the few tree internals listed in `TRUSTED_TYPES`.
Anything else in the file (a function, an unknown class) is refused rather than built.
The metadata itself is not signed: whoever can write the registry directory can replace
a model and its hash together, so protect that directory as you would the workers' code.

The registry records promotions (``current.json``, ``promotions.jsonl``) but does not tell
the workers: they follow the model-control topic. Promote through
`streams.promotion.promote`, the one promotion path, which checks the version, publishes
the event and then records that same event here (`ModelRegistry.record`), so the registry
and the workers agree. `ModelRegistry.promote` is the registry half alone (offline use,
tests); a worker falls back to the registry's history only when the topic's newest
promotion does not load (`streams.modelfallback`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import skops.io

from models.estimators import ModelKind

logger = logging.getLogger(__name__)

ARTIFACT_FILE: Final = "model.skops"
METADATA_FILE: Final = "metadata.json"
CURRENT_FILE: Final = "current.json"
HISTORY_FILE: Final = "promotions.jsonl"
VERSIONS_DIR: Final = "versions"
#: Bumped when the metadata layout changes incompatibly.
METADATA_FORMAT: Final = 1

#: Types beyond skops' defaults that our model kinds contain: the fitted tree structures
#: of random forests and of histogram gradient boosting. Checked against what
#: ``skops.io.get_untrusted_types`` reports for every kind in the tests.
TRUSTED_TYPES: Final = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)

#: The classes a loaded artifact may be: the estimators `models.estimators` builds.
_ESTIMATOR_CLASSES: Final = {
    ModelKind.LOGISTIC_REGRESSION: "sklearn.pipeline.Pipeline",
    ModelKind.RANDOM_FOREST: "sklearn.ensemble._forest.RandomForestClassifier",
    ModelKind.HIST_GRADIENT_BOOSTING: (
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier"
    ),
}

_VERSION_PATTERN: Final = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[a-z]+-[0-9a-f]{8}$")


class RegistryError(Exception):
    """A registry operation cannot be done; the message says why in one line."""


class UnknownVersionError(RegistryError):
    """No such version in the registry."""


class ArtifactIntegrityError(RegistryError):
    """The artifact does not match the sha256 recorded when it was registered."""


class UntrustedArtifactError(RegistryError):
    """The artifact holds types outside the trusted list, or is not a model we build."""


class FeatureMismatchError(RegistryError):
    """The model's feature list differs from the feature spec it would be fed."""


@dataclass(frozen=True)
class ModelMetadata:
    """What the registry knows about one version (``metadata.json``).

    Attributes:
        version: The version id.
        kind: The model family.
        feature_names: The inputs, in the order the model expects them.
        threshold: The alert threshold and how it was chosen (``value``, ``objective``...).
        metrics: Assessment figures (test, validation, alerts at the threshold).
        params: Hyper-parameters.
        training: Provenance: period, rows, seed, data fingerprint and its method.
        libraries: Versions of Python and the libraries the artifact depends on.
        created_at: Registration time, ISO-8601 UTC.
        artifact_sha256: Hex SHA-256 of ``model.skops``.
        format: Metadata layout version.
        feature_baseline: Each feature's typical value (median of the training rows), in
            ``feature_names`` order: what `models.explain` puts in place of a feature to
            measure its contribution. None for versions registered before it existed;
            being optional, adding it did not change ``format``.
    """

    version: str
    kind: ModelKind
    feature_names: tuple[str, ...]
    threshold: dict[str, Any]
    metrics: dict[str, Any]
    params: dict[str, Any]
    training: dict[str, Any]
    libraries: dict[str, str]
    created_at: str
    artifact_sha256: str
    format: int = METADATA_FORMAT
    feature_baseline: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        """Refuse a baseline that does not give one value per feature."""
        if self.feature_baseline is not None and len(self.feature_baseline) != len(
            self.feature_names
        ):
            raise ValueError(
                f"the feature baseline has {len(self.feature_baseline)} values for "
                f"{len(self.feature_names)} features"
            )

    @property
    def threshold_value(self) -> float:
        """The alert threshold: alert when score >= this."""
        return float(self.threshold["value"])

    def to_json(self) -> str:
        """The metadata as indented JSON."""
        data = asdict(self)
        data["kind"] = self.kind.value
        data["feature_names"] = list(self.feature_names)
        if self.feature_baseline is None:
            del data["feature_baseline"]  # absent, as in metadata written before it existed
        else:
            data["feature_baseline"] = list(self.feature_baseline)
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        """Parse ``metadata.json``.

        Raises:
            RegistryError: Malformed or of an unknown format.
        """
        try:
            data = json.loads(text)
            if data.get("format") != METADATA_FORMAT:
                raise RegistryError(f"unknown metadata format {data.get('format')!r}")
            data["kind"] = ModelKind(data["kind"])
            data["feature_names"] = tuple(data["feature_names"])
            if data.get("feature_baseline") is not None:
                data["feature_baseline"] = tuple(float(v) for v in data["feature_baseline"])
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"malformed metadata: {exc}") from None


@dataclass(frozen=True)
class LoadedModel:
    """A verified model and its metadata.

    Attributes:
        estimator: The scikit-learn classifier.
        metadata: Its metadata.
    """

    estimator: Any
    metadata: ModelMetadata


@dataclass(frozen=True)
class Promotion:
    """A promotion: which version became current, when, and what it replaced.

    The payload of a model-control event, and a line of the registry's history.

    Attributes:
        version: The version now current.
        promoted_at: ISO-8601 UTC time of the promotion.
        previous: The version it replaced, if any.
    """

    version: str
    promoted_at: str
    previous: str | None

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Promotion:
        """Parse a promotion record.

        Raises:
            RegistryError: Malformed.
        """
        try:
            data = json.loads(text)
            return cls(data["version"], data["promoted_at"], data.get("previous"))
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"malformed promotion record: {exc}") from None


def library_versions() -> dict[str, str]:
    """Versions that decide whether an artifact loads and scores the same elsewhere."""
    import numpy
    import sklearn

    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
        "numpy": numpy.__version__,
    }


class ModelRegistry:
    """Versioned models in a directory (see the module docstring for the layout)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- writing --------------------------------------------------------------------
    def register(
        self,
        estimator: Any,
        *,
        kind: ModelKind,
        feature_names: Sequence[str],
        threshold: Mapping[str, Any],
        metrics: Mapping[str, Any],
        params: Mapping[str, Any],
        training: Mapping[str, Any],
        created_at: datetime | None = None,
        feature_baseline: Sequence[float] | None = None,
    ) -> ModelMetadata:
        """Save a fitted estimator as a new version.

        Args:
            estimator: A fitted classifier of ``kind``.
            kind: Its family.
            feature_names: Its inputs, in order.
            threshold: The threshold block; must hold a ``value`` in [0, 1].
            metrics: The metrics block.
            params: Its hyper-parameters.
            training: The provenance block.
            created_at: Registration time (now when None).
            feature_baseline: Each feature's typical value, in ``feature_names`` order
                (`models.training.feature_baseline`); without it the version's alerts
                cannot be explained by `models.explain.ReasonExplainer.for_model`.

        Returns:
            The new version's metadata.

        Raises:
            RegistryError: The threshold is missing or out of range, the baseline is not
                one finite value per feature, or the version cannot be written.
        """
        value = threshold.get("value")
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            raise RegistryError(f"the threshold value must be in [0, 1], got {value!r}")
        baseline = _checked_baseline(feature_baseline, feature_names)
        created = (created_at or datetime.now(UTC)).astimezone(UTC)
        versions = self.root / VERSIONS_DIR
        try:
            versions.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=versions))
            try:
                artifact = staging / ARTIFACT_FILE
                skops.io.dump(estimator, artifact)
                digest = _sha256(artifact)
                version = f"{created:%Y%m%dT%H%M%SZ}-{kind.short}-{digest[:8]}"
                metadata = ModelMetadata(
                    version=version,
                    kind=kind,
                    feature_names=tuple(feature_names),
                    threshold=dict(threshold),
                    metrics=dict(metrics),
                    params=dict(params),
                    training=dict(training),
                    libraries=library_versions(),
                    created_at=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
                    artifact_sha256=digest,
                    feature_baseline=baseline,
                )
                (staging / METADATA_FILE).write_text(metadata.to_json(), encoding="utf-8")
                target = versions / version
                if target.exists():
                    raise RegistryError(f"version {version} already exists")
                staging.chmod(0o755)
                os.rename(staging, target)
            except BaseException:
                _remove_tree(staging)
                raise
        except OSError as exc:
            raise RegistryError(f"cannot write to the registry {self.root}: {exc}") from None
        logger.info("registered model version %s", version)
        return metadata

    def promote(self, version: str, feature_names: Sequence[str] | None = None) -> Promotion:
        """Make ``version`` the current one in the registry, after checking it would load.

        The registry half of a promotion only: live workers are not told, and follow the
        model-control topic. `streams.promotion.promote` is the promotion path.

        Args:
            version: The version to promote.
            feature_names: The running feature spec's names; when given, a model with
                other features is refused (workers would refuse to load it).

        Returns:
            The promotion record, also appended to ``promotions.jsonl``.

        Raises:
            UnknownVersionError, ArtifactIntegrityError, UntrustedArtifactError,
            FeatureMismatchError: The version would not load.
        """
        self.load(version, feature_names)
        return self.record(self.next_promotion(version))

    def next_promotion(self, version: str) -> Promotion:
        """The promotion record that would make ``version`` current now (not written).

        Raises:
            RegistryError: ``current.json`` is unreadable.
        """
        previous = self.current()
        return Promotion(
            version=version,
            promoted_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            previous=previous.version if previous else None,
        )

    def record(self, promotion: Promotion) -> Promotion:
        """Write a promotion to ``current.json`` and append it to ``promotions.jsonl``.

        Takes the record as it was published, so the registry holds the very event the
        workers read (same time, same previous version). Checks nothing: the caller
        has loaded the version.

        Returns:
            ``promotion``.

        Raises:
            RegistryError: The registry directory cannot be written.
        """
        line = promotion.to_json() + "\n"
        try:
            _write_atomically(self.root / CURRENT_FILE, line)
            with (self.root / HISTORY_FILE).open("a", encoding="utf-8") as history:
                history.write(line)
        except OSError as exc:
            raise RegistryError(f"cannot write to the registry {self.root}: {exc}") from None
        logger.info(
            "recorded the promotion of model version %s (previous: %s)",
            promotion.version,
            promotion.previous,
        )
        return promotion

    # --- reading --------------------------------------------------------------------
    def current(self) -> Promotion | None:
        """The current promotion, or None before the first one."""
        path = self.root / CURRENT_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from None
        return Promotion.from_json(text)

    def history(self) -> list[Promotion]:
        """Every promotion, oldest first."""
        path = self.root / HISTORY_FILE
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [Promotion.from_json(line) for line in lines if line.strip()]

    def versions(self) -> list[ModelMetadata]:
        """Every version's metadata, oldest first."""
        directory = self.root / VERSIONS_DIR
        if not directory.is_dir():
            return []
        names = sorted(p.name for p in directory.iterdir() if _VERSION_PATTERN.match(p.name))
        return [self.metadata(name) for name in names]

    def metadata(self, version: str) -> ModelMetadata:
        """One version's metadata.

        Raises:
            UnknownVersionError: No such version.
            RegistryError: Its metadata is unreadable.
        """
        path = self._version_dir(version) / METADATA_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UnknownVersionError(f"no model version {version!r} in {self.root}") from None
        except OSError as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from None
        metadata = ModelMetadata.from_json(text)
        if metadata.version != version:
            raise RegistryError(f"{path} describes version {metadata.version!r}, not {version!r}")
        return metadata

    def load(self, version: str, feature_names: Sequence[str] | None = None) -> LoadedModel:
        """Load a version after checking its integrity, features and types.

        Args:
            version: The version to load.
            feature_names: The running feature spec's names, in order; when given, a
                model trained on any other list (or order) is refused.

        Raises:
            UnknownVersionError: No such version.
            ArtifactIntegrityError: The artifact's sha256 differs from the metadata's.
            FeatureMismatchError: The features differ from ``feature_names``.
            UntrustedArtifactError: The artifact holds untrusted types or another class.
        """
        metadata = self.metadata(version)
        if feature_names is not None:
            check_features(metadata, feature_names)
        artifact = self._version_dir(version) / ARTIFACT_FILE
        try:
            content = artifact.read_bytes()
        except OSError as exc:
            raise ArtifactIntegrityError(f"cannot read the artifact of {version}: {exc}") from None
        digest = hashlib.sha256(content).hexdigest()
        if digest != metadata.artifact_sha256:
            raise ArtifactIntegrityError(
                f"the artifact of {version} has sha256 {digest[:12]}..., the registry recorded "
                f"{metadata.artifact_sha256[:12]}...: it was modified after registration"
            )
        # Load from the bytes that were hashed, not the file again: no swap in between.
        untrusted = set(skops.io.get_untrusted_types(data=content)) - set(TRUSTED_TYPES)
        if untrusted:
            raise UntrustedArtifactError(
                f"the artifact of {version} holds untrusted types: {sorted(untrusted)}"
            )
        try:
            estimator = skops.io.loads(content, trusted=list(TRUSTED_TYPES))
        except Exception as exc:  # skops raises many kinds on malformed files
            raise UntrustedArtifactError(
                f"cannot load the artifact of {version}: {type(exc).__name__}: {exc}"
            ) from None
        expected = _ESTIMATOR_CLASSES[metadata.kind]
        actual = f"{type(estimator).__module__}.{type(estimator).__qualname__}"
        if actual != expected:
            raise UntrustedArtifactError(
                f"the artifact of {version} is a {actual}, not a {metadata.kind.value} model"
            )
        return LoadedModel(estimator, metadata)

    def load_current(self, feature_names: Sequence[str] | None = None) -> LoadedModel:
        """Load the current version (what a worker does at start and on promotion).

        Raises:
            RegistryError: Nothing promoted yet, or the version would not load.
        """
        current = self.current()
        if current is None:
            raise RegistryError(f"no model has been promoted in {self.root}")
        return self.load(current.version, feature_names)

    def _version_dir(self, version: str) -> Path:
        if not _VERSION_PATTERN.match(version):
            raise UnknownVersionError(f"{version!r} is not a model version id")
        return self.root / VERSIONS_DIR / version


def check_features(metadata: ModelMetadata, feature_names: Sequence[str]) -> None:
    """Refuse a model whose inputs differ from the features it would be fed.

    Raises:
        FeatureMismatchError: Names or order differ; the message says how.
    """
    model, running = list(metadata.feature_names), list(feature_names)
    if model == running:
        return
    missing = [n for n in model if n not in running]
    extra = [n for n in running if n not in model]
    if missing or extra:
        detail = f"model-only: {missing or 'none'}; spec-only: {extra or 'none'}"
    else:
        first = next(i for i, (a, b) in enumerate(zip(model, running, strict=True)) if a != b)
        detail = f"same names in another order (first difference at position {first})"
    raise FeatureMismatchError(
        f"model {metadata.version} was trained on {len(model)} features that do not match "
        f"the running feature spec's {len(running)}: {detail}"
    )


def _checked_baseline(
    baseline: Sequence[float] | None, feature_names: Sequence[str]
) -> tuple[float, ...] | None:
    """The baseline as a tuple of floats, refused unless one finite value per feature.

    Checked before anything is written: a NaN would not even be valid JSON.
    """
    if baseline is None:
        return None
    values = tuple(float(v) for v in baseline)
    if len(values) != len(feature_names):
        raise RegistryError(
            f"the feature baseline has {len(values)} values for {len(feature_names)} features"
        )
    if not all(math.isfinite(v) for v in values):
        raise RegistryError(f"the feature baseline holds non-finite values: {values}")
    return values


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
