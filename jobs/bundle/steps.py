"""The array steps a checked bundle lowers to, and the program they make up.

`jobs.bundle.program` builds a `Program` from a bundle; `jobs.bundle.runtime` runs its steps on a
backend. Each step reads and writes named columns; only the model step's output is a score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from jobs.bundle.trees import Forest

Kind = Literal["numeric", "string", "vector"]
Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Impute:
    source: str
    target: str
    surrogate: float
    missing_value: float | None  # besides null and NaN


@dataclass(frozen=True)
class Index:
    source: str
    target: str
    labels: tuple[str, ...]
    keep_invalid: bool  # unknown or null -> len(labels); else the row is an error


@dataclass(frozen=True)
class OneHot:
    source: str
    target: str
    size: int
    width: int
    keep_invalid: bool


@dataclass(frozen=True)
class Assemble:
    sources: tuple[str, ...]
    target: str


@dataclass(frozen=True)
class Scale:
    source: str
    target: str
    mean: np.ndarray | None
    std: np.ndarray | None


@dataclass(frozen=True)
class Linear:
    source: str
    coefficients: np.ndarray
    intercept: float
    logistic: bool


@dataclass(frozen=True)
class MinMax:
    """Spark's MinMaxScaler: (x - minimum) / span * (high - low) + low; 0.5 there for a
    constant feature (span 0), as MLeap does; NaN stays NaN."""

    source: str
    target: str
    minimum: np.ndarray
    span: np.ndarray  # maximum - minimum, per feature
    low: float
    high: float


@dataclass(frozen=True)
class MaxAbs:
    """Spark's MaxAbsScaler: x / max_abs clipped to [-1, 1]; a zero max_abs divides by 1."""

    source: str
    target: str
    max_abs: np.ndarray


@dataclass(frozen=True)
class Binarize:
    """1.0 where the value is above the threshold, else 0.0 (a scalar or each feature)."""

    source: str
    target: str
    threshold: float


@dataclass(frozen=True)
class Bucketize:
    """Spark's Bucketizer: the index of the split interval [s_i, s_i+1) holding the value (the
    last interval also holds its upper split). A value outside the splits is an error."""

    source: str
    target: str
    splits: np.ndarray  # strictly increasing; the ends may be -inf and inf
    keep_invalid: bool  # NaN -> len(splits) - 1; else a NaN row is an error


@dataclass(frozen=True)
class Normalize:
    """Each row divided by its p-norm (rows whose norm is 0 are left as they are)."""

    source: str
    target: str
    p: float


@dataclass(frozen=True)
class Polynomial:
    """Spark's PolynomialExpansion: every monomial of degree 1..d in Spark's output order; each
    term lists the features it multiplies, in the order Spark multiplies them."""

    source: str
    target: str
    terms: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Multinomial:
    """Multinomial logistic regression: softmax(coefficients @ x + intercepts), (n, K)."""

    source: str
    coefficients: np.ndarray  # (K, features)
    intercepts: np.ndarray  # (K,)


@dataclass(frozen=True)
class Trees:
    source: str
    forest: Forest


@dataclass(frozen=True)
class NumericTerm:
    column: str
    weight: float
    surrogate: float | None  # imputed value for null/NaN; None: the column is used as is
    missing_value: float | None


@dataclass(frozen=True)
class CategoryTerm:
    column: str
    labels: tuple[str, ...]
    weights: np.ndarray  # weight per label index, plus 0 for the unknown index len(labels)
    keep_invalid: bool


@dataclass(frozen=True)
class LinearTerms:
    """A linear model with its imputers, scaler and one-hot encoders folded into one weight per
    column (and per category): z = intercept + sum of weight * value, with no feature matrix.
    Scaling folds as w * (x - mean) / std = (w / std) * x - w * mean / std."""

    numeric: tuple[NumericTerm, ...]
    categorical: tuple[CategoryTerm, ...]
    intercept: float
    logistic: bool


Step = (
    Impute
    | Index
    | OneHot
    | Assemble
    | Scale
    | MinMax
    | MaxAbs
    | Binarize
    | Bucketize
    | Normalize
    | Polynomial
    | Linear
    | Multinomial
    | Trees
    | LinearTerms
)


@dataclass(frozen=True)
class Input:
    """A column the bundle reads from the batch."""

    name: str
    kind: Literal["numeric", "string"]
    nulls_allowed: bool  # only an imputer (or a keep-invalid indexer) reads it


@dataclass(frozen=True)
class Program:
    """The checked steps of a bundle. The last step (the model) yields, per row: a regressor's
    prediction, shape (n,); a binary classifier's positive-class probability, shape (n,); a
    multiclass classifier's class probabilities in class-index order, shape (n, num_classes)."""

    inputs: tuple[Input, ...]
    steps: tuple[Step, ...]
    task: Task
    num_classes: int  # 0 for a regressor, 2 for a binary classifier, K for K classes
    model_op: str
    threshold: float  # a classifier's label is the positive class when score > threshold
    num_features: int
