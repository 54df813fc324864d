"""Fold a linear model's preprocessing into its weights: one weight per column and category.

Imputers, a standard scaler and one-hot encoders in front of a linear model are linear (or a
lookup), so the runtime can score z = intercept + sum of weight * value without building the
feature matrix. Only the shapes `jobs.bundle.export` writes are folded; others are left as steps.
"""

from __future__ import annotations

import numpy as np

from jobs.bundle.steps import (
    Assemble,
    CategoryTerm,
    Impute,
    Index,
    Kind,
    Linear,
    LinearTerms,
    NumericTerm,
    OneHot,
    Scale,
    Step,
)


def fold_linear(steps: list[Step], kinds: dict[str, tuple[Kind, int]]) -> LinearTerms | None:
    """The linear model as per-column terms, when its input is built only from imputed or raw
    numeric columns (optionally standardised) and one-hot encoded categories; else None."""
    model = steps[-1]
    assert isinstance(model, Linear)
    producer = {getattr(s, "target", None): s for s in steps[:-1]}
    final = producer.get(model.source)
    if not isinstance(final, Assemble):
        return None
    numeric: list[NumericTerm] = []
    categorical: list[CategoryTerm] = []
    intercept = model.intercept
    offset = 0
    for block in final.sources:
        width = kinds[block][1]
        w = model.coefficients[offset : offset + width]
        offset += width
        source = producer.get(block)
        if isinstance(source, OneHot):
            index = producer.get(source.source)
            if not isinstance(index, Index) or source.size != len(index.labels):
                return None
            weights = np.zeros(len(index.labels) + 1)
            weights[:width] = w  # codes past the width (the dropped slots) add nothing
            # An unknown value is scored only when both keep it: an encoder that refuses
            # invalid indices fails on the indexer's extra index, as in MLeap.
            keep = index.keep_invalid and source.keep_invalid
            categorical.append(CategoryTerm(index.source, index.labels, weights, keep))
            continue
        mean = std = None
        if isinstance(source, Scale):
            mean, std = source.mean, source.std
            source = producer.get(source.source)
        columns = source.sources if isinstance(source, Assemble) else (block,)
        if isinstance(source, Assemble) and len(columns) != width:
            return None
        for j, column in enumerate(columns):
            weight = float(w[j])
            if std is not None:
                weight = weight / std[j] if std[j] != 0 else 0.0
            if mean is not None:
                intercept -= weight * mean[j]
            impute = producer.get(column)
            if isinstance(impute, Impute):
                numeric.append(
                    NumericTerm(impute.source, weight, impute.surrogate, impute.missing_value)
                )
            elif impute is None and kinds[column][0] == "numeric":
                numeric.append(NumericTerm(column, weight, None, None))
            else:
                return None
    return LinearTerms(tuple(numeric), tuple(categorical), intercept, model.logistic)
