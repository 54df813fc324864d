"""A booster a user trained (XGBoost JSON/UBJ, LightGBM text) packaged as a bundle over the
contract's features, so it registers and scores like any other bundle.

The booster's inputs are the contract columns its feature names name. A booster saved without
names (XGBoost's default; LightGBM's generated `Column_0`, `Column_1`, ... count as none)
reads the contract's numeric
features in contract order, when there are exactly as many as it has features.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Literal

from jobs.bundle.boosters import BoosterFacts, BoosterKind, booster_facts, write_booster_bundle
from jobs.bundle.format import BundleError
from jobs.bundle_checks import NUMERIC_TYPES
from jobs.registry import RegistryError
from precompute.contracts import Contract

BOOSTER_FORMATS: tuple[BoosterKind, ...] = ("xgboost", "lightgbm")
ModelFormat = Literal["bundle", "xgboost", "lightgbm"]


def detect_format(source: Path) -> ModelFormat:
    """What `source` is: "bundle" for a Bundle.ML zip or folder, else a booster told by the
    file's start (a LightGBM text model opens with `tree`, XGBoost's JSON and UBJSON with `{`)."""
    if source.is_dir() or zipfile.is_zipfile(source):
        return "bundle"
    try:
        with source.open("rb") as stream:
            head = stream.read(64).lstrip()
    except OSError as exc:
        raise RegistryError(f"cannot read {source}: {exc}") from exc
    if head.startswith(b"tree"):
        return "lightgbm"
    if head.startswith(b"{"):
        return "xgboost"
    raise RegistryError(
        f"cannot tell what {source} is: not a Bundle.ML zip or folder, an XGBoost JSON/UBJ "
        "model or a LightGBM text model; name its format with --format"
    )


def booster_bundle(
    kind: BoosterKind, content: bytes, contract: Contract, name: str
) -> tuple[bytes | None, list[str]]:
    """The booster written as a zipped bundle (no precompute.json yet) reading its features
    from the contract's columns; or None and every reason it cannot be."""
    try:
        facts = booster_facts(kind, content)
    except BundleError as exc:
        return None, [str(exc)]
    columns, problems = feature_columns(facts, contract)
    if problems:
        return None, problems
    with tempfile.TemporaryDirectory() as scratch:
        path = write_booster_bundle(
            kind, content, list(columns), Path(scratch, "bundle.zip"), name, {}
        )
        return path.read_bytes(), []


def feature_columns(facts: BoosterFacts, contract: Contract) -> tuple[tuple[str, ...], list[str]]:
    """The contract columns the booster's features are, in its feature order, and the reasons
    they cannot be (none when they can)."""
    declared = {c.name: c for c in contract.features}
    numeric = tuple(c.name for c in contract.features if c.type in NUMERIC_TYPES)
    names = facts.feature_names
    if not names:
        if len(numeric) == facts.num_features:
            return numeric, []
        return (), [
            f"the booster's {facts.num_features} features have no names, and contract "
            f"{contract.ref} has {len(numeric)} numeric features ({', '.join(numeric)}): save "
            "the booster with feature names that are contract columns"
        ]
    problems = []
    for feature in names:
        column = declared.get(feature)
        if column is None:
            problems.append(
                f"feature {feature!r} is not a feature of contract {contract.ref} "
                f"(its features: {', '.join(declared)})"
            )
        elif column.type not in NUMERIC_TYPES:
            problems.append(
                f"feature {feature!r} is {column.type} in contract {contract.ref}; a booster "
                "reads numbers"
            )
    return tuple(names), problems
