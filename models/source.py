"""A training dataset file: its rows and its fingerprint.

The rows are read by `features.dataset.DatasetReader`, the reader replay uses too, so a
file is held to the same rules (formats, types, row checks) whether it trains a model or
is replayed through the workers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from features.dataset import DatasetError, DatasetReader

_CHUNK = 1 << 20


@dataclass(frozen=True)
class DatasetFile:
    """A dataset read from disk.

    Attributes:
        path: Where it was read from.
        sha256: Hex SHA-256 of the file's bytes: which file a model was trained on.
        transactions: Its rows: the fields of `features.dataset.FIELDS` the file has,
            typed as in `features.dataset.TRANSACTION_COLUMNS`.
    """

    path: Path
    sha256: str
    transactions: pl.DataFrame


def read_dataset(path: Path) -> DatasetFile:
    """Read a Parquet or CSV dataset, every row checked, and hash its bytes.

    Raises:
        DatasetError: The file cannot be read as transactions (`features.dataset`).
    """
    transactions = DatasetReader(path).read()
    try:
        digest = _sha256(path)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    return DatasetFile(path, digest, transactions)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
