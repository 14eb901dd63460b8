"""Evaluation data for the compression gate: features and true values, from arrays or files.

:class:`EvalSet` holds what :func:`tidal.ml.compress.compress` judges both models by;
:func:`read_features` reads a calibration sample. Files are ``.npz`` (arrays ``X`` and ``y``,
read with ``allow_pickle=False``) or ``.parquet`` (a label column and feature columns; a list
column, such as an image, contributes all its values). Both names are importable from
:mod:`tidal.ml.compress` too.

Example:
    >>> s = EvalSet([[1, 2], [3, 4]], [0, 1])
    >>> s.X.dtype, len(s)
    (dtype('float32'), 2)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.errors import ConfigError
from tidal.ml.handler import feature_matrix

__all__ = ["EvalSet", "read_features"]


@dataclass(frozen=True)
class EvalSet:
    """Features and true values to judge a model by.

    Args:
        X: features, ``(rows, width)`` (made float32 and C-contiguous).
        y: true classes (``accuracy``) or values (``mae``), one per row.

    Example:
        >>> s = EvalSet([[1, 2], [3, 4]], [0, 1])
        >>> s.X.dtype, len(s)
        (dtype('float32'), 2)
    """

    X: Array
    y: Array

    def __init__(self, X: Any, y: Any) -> None:
        feats = np.ascontiguousarray(np.asarray(X), dtype=np.float32)
        if feats.ndim == 1:
            feats = feats.reshape(-1, 1)
        truth = np.asarray(y).reshape(-1)
        if feats.ndim != 2 or len(feats) != len(truth) or not len(truth):
            msg = (
                f"an evaluation set needs a 2-D X and one y per row, got X of shape "
                f"{feats.shape} and {len(truth)} values of y"
            )
            raise ConfigError(msg)
        object.__setattr__(self, "X", feats)
        object.__setattr__(self, "y", truth)

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, label: str = "label", features: Sequence[str] = ()
    ) -> EvalSet:
        """Read an ``.npz`` (arrays ``X`` and ``y``) or ``.parquet`` file.

        Args:
            path: the file.
            label: the Parquet column with the true values.
            features: the Parquet feature columns, in order (default: every other column).
                A list column (an image) contributes all its values.

        Raises:
            ConfigError: for a missing file, an unknown format or missing columns.
        """
        X, y = _read_table(path, label=label, features=features, need_label=True)
        assert y is not None
        return cls(X, y)


def read_features(
    path: str | os.PathLike[str], *, label: str = "label", features: Sequence[str] = ()
) -> Array:
    """The feature matrix of an ``.npz`` (array ``X``) or ``.parquet`` calibration file."""
    return _read_table(path, label=label, features=features, need_label=False)[0]


def _read_table(
    path: str | os.PathLike[str], *, label: str, features: Sequence[str], need_label: bool
) -> tuple[Array, Array | None]:
    p = Path(path)
    if not p.is_file():
        msg = f"evaluation/calibration file {str(p)!r} does not exist"
        raise ConfigError(msg)
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            names = list(data.keys())
            if "X" not in names or (need_label and "y" not in names):
                need = "X and y" if need_label else "X"
                msg = f"{p}: an .npz evaluation file needs arrays {need}; it has {names}"
                raise ConfigError(msg)
            return np.asarray(data["X"]), np.asarray(data["y"]) if "y" in names else None
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        batch = Batch.from_arrow(pq.read_table(p))
        if need_label and label not in batch:
            msg = f"{p}: no label column {label!r}; columns are {batch.names} (use --label)"
            raise ConfigError(msg)
        names = list(features) or [n for n in batch.names if n != label]
        cols = {n: _stack_lists(batch[n]) for n in names if n in batch}
        X = feature_matrix(batch.with_columns(**cols), names)
        return X, batch[label] if label in batch else None
    msg = f"{p}: evaluation and calibration files are .npz (X, y) or .parquet, not {p.suffix!r}"
    raise ConfigError(msg)


def _stack_lists(col: Array) -> Array:
    """A column of equal-length arrays (a Parquet list column) as a 2-D array."""
    if col.dtype == object and len(col) and isinstance(col[0], np.ndarray | list):
        return np.stack([np.asarray(v, dtype=np.float32) for v in col])
    return col
