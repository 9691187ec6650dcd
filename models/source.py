"""Reading a transaction dataset file for training: Parquet or CSV, with its fingerprint.

The files are those ``fraudstream generate`` writes (`features.simulator.write_dataset`):
Parquet with the types of `features.dataset`, or CSV with ISO-8601 UTC times. CSV is read
as text and cast column by column, so ids stay strings (``C0042`` or ``0042`` alike) and
times keep their milliseconds whatever polars would have inferred.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from features import dataset

_CHUNK = 1 << 20


class DatasetError(ValueError):
    """A dataset file cannot be read as transactions."""


@dataclass(frozen=True)
class DatasetFile:
    """A dataset read from disk.

    Attributes:
        path: Where it was read from.
        sha256: Hex SHA-256 of the file's bytes: which file a model was trained on.
        transactions: Its rows, with the types of `features.dataset` where named there.
    """

    path: Path
    sha256: str
    transactions: pl.DataFrame


def read_dataset(path: Path) -> DatasetFile:
    """Read a Parquet or CSV dataset and hash its bytes.

    Raises:
        DatasetError: Unknown suffix, unreadable file, or columns of the wrong type.
    """
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise DatasetError(
            f"unknown dataset format {path.suffix!r} for {path}: use .parquet or .csv"
        )
    if not path.is_file():
        raise DatasetError(f"no dataset file at {path}")
    try:
        digest = _sha256(path)
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
        else:
            frame = _typed(pl.read_csv(path, infer_schema=False))
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DatasetError(f"cannot read {path}: {_first_line(exc)}") from None
    missing = [c for c in dataset.REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path} lacks the columns {missing}")
    return DatasetFile(path, digest, frame)


def _typed(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast a CSV read as text to the dataset's types, column by column."""
    casts: list[pl.Expr] = []
    for name, dtype in dataset.TRANSACTION_COLUMNS.items():
        if name not in frame.columns:
            continue
        column = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            casts.append(
                column.str.to_datetime(time_unit="ms", time_zone="UTC", strict=True).alias(name)
            )
        elif isinstance(dtype, pl.Boolean):
            flags = column.str.to_lowercase().replace_strict(
                {"true": True, "false": False}, return_dtype=pl.Boolean
            )
            casts.append(flags.alias(name))
        else:
            casts.append(column.cast(dtype, strict=True))
    return frame.with_columns(casts)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
